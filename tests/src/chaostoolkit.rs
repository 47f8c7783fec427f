//! The real Chaos Toolkit (`chaostoolkit` from PyPI, pinned) with chaosd's extension
//! (`integrations/chaostoolkit`, installed editable) in a virtualenv under the target dir,
//! made on first use and reused after.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

/// The chaostoolkit release the extension is tested against.
pub const CHAOSTOOLKIT: &str = "chaostoolkit==1.19.0";

static MADE: Mutex<()> = Mutex::new(());

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The virtualenv's directory (`bin/chaos`, `bin/python`), made if missing.
pub fn venv() -> PathBuf {
    let _one_at_a_time = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash> → target/
    let target = exe.ancestors().nth(3).unwrap();
    let dir = target.join("chaostoolkit-venv");
    if dir.join("bin/chaos").exists() {
        return dir;
    }
    let extension = Path::new(env!("CARGO_MANIFEST_DIR")).join("../integrations/chaostoolkit");
    run(Command::new("python3").arg("-m").arg("venv").arg(&dir));
    run(Command::new(dir.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            CHAOSTOOLKIT,
            "-e",
        ])
        .arg(&extension));
    dir
}
