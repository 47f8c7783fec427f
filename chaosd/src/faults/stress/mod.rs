//! Stress faults: CPU, memory and disk load made by supervised worker processes, and disk fill.
//!
//! - [`cpu`] (`stress.cpu`): duty-cycled busy loops, one worker per core unless asked.
//! - [`mem`] (`stress.mem`): allocate, touch every page, stay resident.
//! - [`disk`] (`disk.fill`, `disk.io`): fallocate a hidden file / sustained I/O in a directory.
//!
//! # How workers stay bounded
//! Workers are child *processes* of chaosd (`/proc/self/exe __stress-worker ...`, named for
//! `ps` as `chaosd-stress: cpu fault 1f2a343a` with comm `chaosd-stress`), so they can
//! be placed in a cgroup: the target's (they compete for its CPU and count against its memory),
//! or without a target a dedicated `<cgroup2 mount>/chaosd-stress-<daemon pid>/<kind>-<n>` that
//! is killed (`cgroup.kill`) and removed at revert. Each worker ends:
//! - at revert (recover, the registry's deadline timer, shutdown, or `Drop`): SIGKILL and reap;
//! - at the fault's deadline by itself (it gets it as `--until-monotonic-ns`), a second guard;
//! - when chaosd dies for any reason: `PR_SET_PDEATHSIG = SIGKILL`, set before `exec` and
//!   checked against `getppid` to close the race with a parent that died during `fork`.
//!
//! The parent-death signal follows the *thread* that forked, so every worker is forked by one
//! spawner thread that lives as long as the daemon (never a tokio or blocking-pool thread that
//! may exit while the worker should live).
//!
//! No external tools: no stress-ng, dd or fallocate processes; only nix, libc and /proc.

pub mod cpu;
pub mod disk;
pub mod mem;
pub mod worker;

use std::{
    ffi::OsString,
    fs, io,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

pub use crate::config::StressConfig;
use crate::{
    api::ResolvedTarget,
    error::{FaultError, RequestError},
    host::cgroup,
};

/// Human bytes for messages: "256.0 MiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A bare `Refused` fault error: the request is at fault, reported as 400.
pub(crate) fn refused(e: RequestError) -> FaultError {
    FaultError::Refused(e)
}

// ---------------------------------------------------------------------------------------------
// Workers: spawning, cgroups, supervision.

/// CLOCK_MONOTONIC deadline, in ns, of a fault of `duration` starting now.
pub(crate) fn deadline_ns(duration: Duration) -> u64 {
    crate::faults::kernel::monotonic_ns().saturating_add(duration.as_nanos() as u64)
}

/// The comm (`/proc/PID/comm`, 15 bytes at most) every worker sets for itself.
pub const WORKER_COMM: &str = "chaosd-stress";

/// argv\[0\] of a worker of fault `fault_id` doing `what` ("cpu"): what `ps` shows.
pub(crate) fn worker_name(what: &str, fault_id: &str) -> OsString {
    format!("{WORKER_COMM}: {what} fault {fault_id}").into()
}

struct SpawnJob {
    name: OsString,
    args: Vec<OsString>,
    cgroup: PathBuf,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// The one long-lived thread that forks workers, so their parent-death signal fires only when
/// the daemon process dies.
fn spawner() -> &'static mpsc::Sender<SpawnJob> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("chaosd-spawner".into())
            .spawn(move || {
                for job in rx {
                    let _ = job
                        .reply
                        .send(spawn_worker_now(&job.name, &job.args, &job.cgroup));
                }
            })
            .expect("spawning the worker-spawner thread");
        tx
    })
}

fn spawn_worker_now(name: &OsString, args: &[OsString], cgroup: &Path) -> io::Result<Child> {
    let mut cmd = Command::new("/proc/self/exe");
    std::os::unix::process::CommandExt::arg0(&mut cmd, name);
    cmd.arg("__stress-worker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let parent = nix::unistd::getpid().as_raw();
    // SAFETY: between fork and exec the closure calls only prctl(2) and getppid(2), both
    // async-signal-safe, and builds an io::Error from a raw errno (no allocation).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before PR_SET_PDEATHSIG took effect.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    crate::host::cgroup::spawn_in_cgroup(&mut cmd, cgroup)
}

/// Starts one worker named `name` (argv\[0\]) in the cgroup directory `cgroup`.
fn spawn_worker(name: OsString, args: Vec<OsString>, cgroup: &Path) -> io::Result<Child> {
    let (reply, rx) = mpsc::channel();
    spawner()
        .send(SpawnJob {
            name,
            args,
            cgroup: cgroup.to_path_buf(),
            reply,
        })
        .map_err(|_| io::Error::other("the worker-spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the worker-spawner thread is gone"))?
}

/// A cgroup chaosd made for a fault without targets: killed and removed at revert.
pub(crate) struct OwnedCgroup {
    dir: PathBuf,
    parent: PathBuf,
}

static OWNED_SEQ: AtomicU64 = AtomicU64::new(0);

impl OwnedCgroup {
    /// Creates `<mount>/chaosd-stress-<pid>/<label>-<n>`.
    fn create(label: &str) -> Result<OwnedCgroup, FaultError> {
        let mount =
            cgroup::cgroup2_mount().map_err(|e| FaultError::kernel("finding cgroup2", e))?;
        let parent = mount.join(format!("chaosd-stress-{}", std::process::id()));
        if !parent.exists() {
            remove_stale_stress_cgroups(&mount);
        }
        match fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(FaultError::kernel("creating the stress cgroup", e)),
        }
        let n = OWNED_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("{label}-{n}"));
        if let Err(e) = fs::create_dir(&dir) {
            let _ = fs::remove_dir(&parent);
            return Err(FaultError::kernel("creating the stress cgroup", e));
        }
        Ok(OwnedCgroup { dir, parent })
    }

    /// Kills everything in it and removes it (and the per-daemon parent once empty).
    fn remove(&self) -> Result<(), FaultError> {
        kill_cgroup(&self.dir);
        let mut last = None;
        for _ in 0..200 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
            kill_cgroup(&self.dir);
            std::thread::sleep(Duration::from_millis(5));
        }
        // Fails while another fault's cgroup lives there; the last one removes it.
        let _ = fs::remove_dir(&self.parent);
        match last {
            None => Ok(()),
            Some(e) => Err(FaultError::kernel("removing the stress cgroup", e)),
        }
    }
}

/// SIGKILLs every process in `dir` and below: `cgroup.kill` (5.14+), else each pid.
pub(crate) fn kill_cgroup(dir: &Path) {
    if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for pid in cgroup_procs(dir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Pids in `dir`'s `cgroup.procs` (not its children).
pub(crate) fn cgroup_procs(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Removes `chaosd-stress-<pid>` cgroups of daemons that are gone (their workers died with
/// them through the parent-death signal; the empty directories stay behind); returns how
/// many it removed. A start runs it (see `leftovers`), and so does the first owned cgroup.
pub fn remove_stale_stress_cgroups(mount: &Path) -> usize {
    let Ok(entries) = fs::read_dir(mount) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("chaosd-stress-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let parent = e.path();
        if let Ok(children) = fs::read_dir(&parent) {
            for c in children.flatten() {
                if c.file_type().is_ok_and(|t| t.is_dir()) {
                    kill_cgroup(&c.path());
                    let _ = fs::remove_dir(c.path());
                }
            }
        }
        if fs::remove_dir(&parent).is_ok() {
            tracing::info!(cgroup = %parent.display(), "removed a dead chaosd's stress cgroup");
            removed += 1;
        }
    }
    removed
}

/// Where a fault's workers run: each target's cgroup, or one cgroup of chaosd's own.
pub(crate) enum Placement {
    Targets(Vec<PathBuf>),
    Owned(OwnedCgroup),
}

impl Placement {
    pub(crate) fn for_targets(
        targets: &[ResolvedTarget],
        label: &str,
    ) -> Result<Placement, FaultError> {
        if targets.is_empty() {
            return Ok(Placement::Owned(OwnedCgroup::create(label)?));
        }
        let mount =
            cgroup::cgroup2_mount().map_err(|e| FaultError::kernel("finding cgroup2", e))?;
        let dirs = targets
            .iter()
            .map(|t| cgroup::Cgroup::open(&mount, &t.cgroup).map(|c| c.dir))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refused(RequestError::Target(e)))?;
        // A worker joins its cgroup before exec: in a frozen one, spawning would wait forever
        // with the registry locked.
        for (dir, t) in dirs.iter().zip(targets) {
            if let Some(frozen) = crate::faults::process::pause::frozen_ancestor(&mount, dir) {
                let rel = frozen.strip_prefix(&mount).unwrap_or(&frozen);
                return Err(refused(RequestError::FrozenTarget {
                    cgroup: t.cgroup.clone(),
                    frozen: format!("/{}", rel.display()),
                }));
            }
        }
        Ok(Placement::Targets(dirs))
    }

    pub(crate) fn dirs(&self) -> Vec<PathBuf> {
        match self {
            Placement::Targets(d) => d.clone(),
            Placement::Owned(o) => vec![o.dir.clone()],
        }
    }
}

/// Supervised worker processes of one fault. Reverting kills and reaps them (and removes an
/// owned cgroup); dropping does the same.
pub(crate) struct Workers {
    children: Vec<Child>,
    placement: Placement,
    done: bool,
}

impl Workers {
    /// Starts `per_cgroup` workers named `name` ([`worker_name`]) with `args` in each cgroup
    /// of `placement`; on any error the ones already started are killed and the owned cgroup
    /// removed.
    pub(crate) fn start(
        placement: Placement,
        per_cgroup: u32,
        name: &OsString,
        args: &[OsString],
    ) -> Result<Workers, FaultError> {
        let mut w = Workers {
            children: Vec::new(),
            placement,
            done: false,
        };
        for dir in w.placement.dirs() {
            for _ in 0..per_cgroup {
                match spawn_worker(name.clone(), args.to_vec(), &dir) {
                    Ok(c) => w.children.push(c),
                    Err(e) => {
                        let _ = w.stop();
                        return Err(FaultError::kernel("starting a stress worker", e));
                    }
                }
            }
        }
        Ok(w)
    }

    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.children.len()
    }

    /// Kills and reaps every worker; removes the owned cgroup. Idempotent.
    pub(crate) fn stop(&mut self) -> Result<(), FaultError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        match &self.placement {
            Placement::Owned(o) => o.remove(),
            Placement::Targets(_) => Ok(()),
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!("stopping stress workers on drop: {e}");
        }
    }
}

/// utime + stime of a process in ms, from /proc/PID/stat (works for zombies too).
pub(crate) fn proc_cpu_ms(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // After "pid (comm) ": state is field 0; utime and stime are fields 11 and 12.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Some((utime + stime) * 1000 / hz.max(1))
}

/// Resident bytes of a process, from /proc/PID/statm.
pub(crate) fn proc_rss_bytes(pid: u32) -> Option<u64> {
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

pub(crate) fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64
}

/// MemTotal from /proc/meminfo, in bytes.
pub(crate) fn mem_total() -> Option<u64> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::units::parse_size;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("2Gi").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1500);
        assert_eq!(parse_size(" 10 MB ").unwrap(), 10_000_000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5XB").is_err());
    }

    #[test]
    fn floor_is_the_larger_of_share_and_bytes() {
        let c = StressConfig::default();
        assert_eq!(c.floor_bytes(100 << 30), 5 << 30);
        assert_eq!(c.floor_bytes(4 << 30), 1 << 30);
        let toml = "disk_floor = \"1MiB\"\ndisk_floor_percent = 0\n";
        let c: StressConfig = toml::from_str(toml).unwrap();
        assert_eq!(c.floor_bytes(64 << 20), 1 << 20);
    }

    #[test]
    fn proc_readers_read_this_process() {
        let me = std::process::id();
        assert!(proc_cpu_ms(me).is_some());
        assert!(proc_rss_bytes(me).unwrap() > 0);
        assert!(mem_total().unwrap() > 0);
    }
}
