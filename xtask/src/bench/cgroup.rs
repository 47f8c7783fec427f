//! cgroup v2 directories the bench makes: one parent per run, children for targets and
//! "other" cgroups that carry rules. Everything is killed and removed on drop.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

/// The cgroup2 mount point, from /proc/self/mountinfo (hybrid hosts mount it elsewhere).
pub fn cgroup2_mount() -> Result<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    info.lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .context("no cgroup2 filesystem is mounted")
}

/// `<cgroup2>/chaosd-bench-<pid>` and the children made under it.
pub struct BenchCgroups {
    mount: PathBuf,
    parent: PathBuf,
    children: Vec<PathBuf>,
}

impl BenchCgroups {
    pub fn new() -> Result<BenchCgroups> {
        let mount = cgroup2_mount()?;
        remove_stale(&mount);
        let parent = mount.join(format!("chaosd-bench-{}", std::process::id()));
        fs::create_dir(&parent).with_context(|| format!("creating {}", parent.display()))?;
        Ok(BenchCgroups {
            mount,
            parent,
            children: Vec::new(),
        })
    }

    /// Makes a child cgroup; returns its path relative to the cgroup2 mount (how the API
    /// names targets).
    pub fn child(&mut self, name: &str) -> Result<String> {
        let dir = self.parent.join(name);
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.children.push(dir.clone());
        Ok(self.rel(&dir))
    }

    pub fn dir_of(&self, rel: &str) -> PathBuf {
        self.mount.join(rel.trim_start_matches('/'))
    }

    fn rel(&self, dir: &Path) -> String {
        format!(
            "/{}",
            dir.strip_prefix(&self.mount)
                .expect("children live under the mount")
                .display()
        )
    }

    /// CPU time (µs) the child's processes have used, from its `cpu.stat` `usage_usec`: the
    /// cgroup core keeps it on every cgroup2 directory, with or without the cpu controller.
    pub fn cpu_usage_usec(&self, rel: &str) -> Result<u64> {
        let path = self.dir_of(rel).join("cpu.stat");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
            .with_context(|| format!("{} has no usage_usec", path.display()))
    }

    /// The child's `memory.current` (bytes), `None` where the memory controller is not
    /// enabled for it (the dev host's cgroup2 has none).
    pub fn memory_current(&self, rel: &str) -> Option<u64> {
        fs::read_to_string(self.dir_of(rel).join("memory.current"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Kills whatever runs in the child and waits (bounded) until it is empty.
    pub fn empty_child(&self, rel: &str) {
        empty(&self.dir_of(rel));
    }

    /// Processes in a child (for CPU accounting).
    pub fn pids(&self, rel: &str) -> Vec<u32> {
        fs::read_to_string(self.dir_of(rel).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

/// Makes `cmd`'s child join the cgroup2 directory `dir` before it execs, so the program and
/// everything it forks run there from their first instruction.
pub fn join_before_exec(cmd: &mut std::process::Command, dir: &Path) -> Result<()> {
    use std::os::unix::{ffi::OsStrExt as _, process::CommandExt as _};
    let procs = std::ffi::CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())?;
    // SAFETY: between fork and exec only open(2), write(2) and close(2), which are
    // async-signal-safe; `procs` is moved into the closure and outlives them.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if written != 1 {
                return Err(err);
            }
            Ok(())
        });
    }
    Ok(())
}

/// Removes what a bench that was killed (SIGINT/SIGKILL skip drops) left: the
/// `chaosd-bench-<pid>` trees whose pid is gone.
fn remove_stale(mount: &Path) {
    let Ok(entries) = fs::read_dir(mount) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("chaosd-bench-") else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        let dir = entry.path();
        let children = fs::read_dir(&dir).into_iter().flatten().flatten();
        for child in children.filter(|c| c.path().is_dir()) {
            empty(&child.path());
            let _ = fs::remove_dir(child.path());
        }
        empty(&dir);
        match fs::remove_dir(&dir) {
            Ok(()) => eprintln!("bench: removed {} left by an earlier run", dir.display()),
            Err(e) => eprintln!("bench: could not remove {}: {e}", dir.display()),
        }
    }
}

/// Kills whatever still runs in `dir` and waits (bounded) until it is empty.
fn empty(dir: &Path) {
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() {
            return;
        }
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for BenchCgroups {
    fn drop(&mut self) {
        for dir in self.children.iter().rev().chain([&self.parent]) {
            empty(dir);
            if let Err(e) = fs::remove_dir(dir) {
                eprintln!("bench: could not remove {}: {e}", dir.display());
            }
        }
    }
}
