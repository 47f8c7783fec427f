//! A file-operation probe run inside a cgroup (`chaosd-test-helper file-ops`): performs one operation
//! `count` times and reports how many succeeded and which errnos the rest got.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{self, BufRead as _, Write as _},
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use chaosd::api::IoOp;

/// What a probe run saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOpsReport {
    pub ok: u32,
    /// errno name → count.
    pub errors: BTreeMap<String, u32>,
}

impl FileOpsReport {
    pub fn failed(&self) -> u32 {
        self.errors.values().sum()
    }

    pub fn only_error(&self) -> Option<&str> {
        (self.errors.len() == 1).then(|| self.errors.keys().next().unwrap().as_str())
    }

    fn record(&mut self, r: io::Result<()>) {
        match r {
            Ok(()) => self.ok += 1,
            Err(e) => {
                let name = e
                    .raw_os_error()
                    .map(chaosd::api::errno::errno_name)
                    .unwrap_or_else(|| e.to_string());
                *self.errors.entry(name).or_default() += 1;
            }
        }
    }
}

/// Runs `op` `count` times on `path` (a file for open/read/write/truncate, a directory for
/// create/unlink/rename/mkdir/rmdir, whose entries are named `chaosd-probe-<pid>-<i>`).
/// With `hold`, a file is opened first, "ready" printed, and the operations wait for a line on
/// stdin, so they run on a descriptor opened before whatever happened meanwhile.
pub fn run(op: IoOp, path: &Path, count: u32, hold: bool) -> anyhow::Result<FileOpsReport> {
    use anyhow::Context as _;
    let mut report = FileOpsReport::default();
    let held: Option<File> = match op {
        IoOp::Read | IoOp::Write => Some(
            OpenOptions::new()
                .read(true)
                .write(op == IoOp::Write)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        _ => None,
    };
    if hold {
        println!("ready");
        io::stdout().flush()?;
        // Any outcome means "go": under a fault on every read, this read fails too.
        let mut line = String::new();
        let _ = io::stdin().lock().read_line(&mut line);
    }
    let entry =
        |i: u32| -> PathBuf { path.join(format!("chaosd-probe-{}-{i}", std::process::id())) };
    let mut buf = [0u8; 64];
    for i in 0..count {
        let r = match op {
            IoOp::Open => File::open(path).map(drop),
            IoOp::Read => held.as_ref().unwrap().read_at(&mut buf, 0).map(drop),
            IoOp::Write => held.as_ref().unwrap().write_at(b"x", 0).map(drop),
            IoOp::Truncate => match &held {
                // truncate(2) by path: no open that an open fault could fail first.
                None => nix::unistd::truncate(path, 0).map_err(io::Error::from),
                Some(f) => f.set_len(0),
            },
            IoOp::Create => {
                let p = entry(i);
                let r = OpenOptions::new().write(true).create_new(true).open(&p);
                if r.is_ok() {
                    std::fs::remove_file(&p).ok();
                }
                r.map(drop)
            }
            IoOp::Unlink => {
                let p = entry(i);
                File::create(&p).with_context(|| format!("creating {}", p.display()))?;
                std::fs::remove_file(&p)
            }
            IoOp::Rename => {
                let p = entry(i);
                let to = p.with_extension("renamed");
                File::create(&p).with_context(|| format!("creating {}", p.display()))?;
                let r = std::fs::rename(&p, &to);
                std::fs::remove_file(&to).ok();
                std::fs::remove_file(&p).ok();
                r
            }
            IoOp::Mkdir => {
                let p = entry(i);
                let r = std::fs::create_dir(&p);
                std::fs::remove_dir(&p).ok();
                r
            }
            IoOp::Rmdir => {
                let p = entry(i);
                std::fs::create_dir(&p).with_context(|| format!("mkdir {}", p.display()))?;
                std::fs::remove_dir(&p)
            }
        };
        report.record(r);
    }
    Ok(report)
}
