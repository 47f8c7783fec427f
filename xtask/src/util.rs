//! Helpers shared by the tasks: running cargo, host tests and the demo.

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Where `cargo install` puts binaries (bpf-linker); added to PATH for every build.
pub fn cargo_bin_dir() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin")
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let mut paths = vec![cargo_bin_dir()];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).expect("PATH entries contain no ':'")
}

pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    cmd.env("PATH", path_with_cargo_bin());
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub fn cargo(args: &[&str]) -> Result<()> {
    run_cmd(
        Command::new("cargo")
            .args(args)
            .current_dir(workspace_root()),
    )
}

/// Unit tests and root-only integration tests on the host kernel (two timed stages).
pub fn host_tests() -> Result<()> {
    stage("host-build", || {
        cargo(&["build", "--workspace", "--exclude", "chaosd-ebpf", "--bins"])
    })?;
    stage("host-tests", || {
        cargo(&["test", "--workspace", "--exclude", "chaosd-ebpf"])
    })
}

/// Env var naming a file that [`stage`] appends its lines to (`.ci/run` sets it).
pub const STAGE_TIMES_ENV: &str = "CHAOSD_STAGE_TIMES";

/// Runs `f` as the named stage and reports its wall time (also when it fails).
pub fn stage<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    let result = f();
    record_stage(name, started.elapsed(), result.is_ok());
    result
}

/// Prints the machine-readable `stage: <name> <seconds>[ failed]` line and appends it to
/// `$CHAOSD_STAGE_TIMES` when that is set. Names have no spaces.
pub fn record_stage(name: &str, elapsed: Duration, ok: bool) {
    let line = format!(
        "stage: {} {:.1}{}",
        name.replace(char::is_whitespace, "-"),
        elapsed.as_secs_f64(),
        if ok { "" } else { " failed" }
    );
    println!("{line}");
    if let Some(path) = std::env::var_os(STAGE_TIMES_ENV) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        if let Ok(mut f) = file {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Stops (SIGTERM, then SIGKILL) the daemon it owns when dropped.
pub struct DaemonChild(pub Child);

impl Drop for DaemonChild {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run_demo() -> Result<()> {
    let bin = workspace_root().join("target/debug");
    let socket = "/run/chaosd/chaosd.sock";
    // The daemon's log goes to a file, so the terminal tells the demo's story only.
    let log_path = workspace_root().join("target/chaosd-demo.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let daemon = Command::new(bin.join("chaosd"))
        .args(["--socket", socket])
        .stdout(log.try_clone().context("duplicating the log file")?)
        .stderr(log)
        .spawn()
        .context("starting chaosd")?;
    let daemon = DaemonChild(daemon);
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let status = Command::new(bin.join("chaosctl"))
            .args(["--socket", socket, "status"])
            .output()
            .context("running chaosctl status")?;
        if status.status.success() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        thread::sleep(Duration::from_millis(100));
    };
    if !ready {
        drop(daemon);
        bail!(
            "chaosd did not answer on {socket} within 20 s; its log: {}",
            log_path.display()
        );
    }
    let chaosctl = || {
        let mut c = Command::new(bin.join("chaosctl"));
        c.args(["--socket", socket]);
        c
    };
    // The quick look at one fault, then a whole experiment from a scenario file: hypothesis,
    // fault schedule, probes, rollback and report.
    let scenario = workspace_root().join("examples/isolation.toml");
    let result = run_cmd(chaosctl().arg("demo"))
        .and_then(|()| run_cmd(chaosctl().arg("run").arg(&scenario)));
    drop(daemon);
    println!("\nthe daemon's log of this demo: {}", log_path.display());
    result
}
