//! A real systemd (the host's `/lib/systemd/systemd`) as PID 1 of a container the test makes:
//! new PID, mount and cgroup namespaces, rooted in a test cgroup, so chaosd's shipped units run
//! under the service manager they are written for while the host's own services, `/etc`,
//! `/var` and `/run` stay untouched.
//!
//! - Units come only from a test-owned directory (`SYSTEMD_UNIT_PATH`, no default paths), so
//!   none of the host's units (udev, tmpfiles, sysctl) ever start; stub targets stand in for
//!   `sysinit.target` and the other targets the units' default dependencies name.
//! - `/etc`, `/var` and `/usr/local` are overlays whose writes land in the test's temp dir;
//!   `/run` is a fresh tmpfs; `/usr/local/bin/chaosd` is a link to the binary under test.
//! - A drop-in sends chaosd.service's output to a file the test reads (the shipped unit logs
//!   to the journal, which the container does not run); systemd's own goes to the launcher's.
//!
//! [`SystemdContainer`] kills the whole container (`cgroup.kill`) and removes its cgroup tree
//! and files on drop, also when the test fails.

use std::{
    ffi::CString,
    fs::{self, File, OpenOptions},
    io::Write as _,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
    sys::wait::{WaitStatus, waitpid},
    unistd::{ForkResult, execve, fork},
};

use crate::{TestCgroup, helper_bin, wait_for};

/// What `chaosd-test-helper systemd-container` needs to boot the container.
pub struct Boot<'a> {
    /// The cgroup (host path) that becomes the container's cgroup root.
    pub cgroup: &'a Path,
    /// A test-owned dir for the overlays' upper layers, `pid1` and the log.
    pub dir: &'a Path,
    /// The only unit directory systemd reads.
    pub units: &'a Path,
    /// The chaosd binary the shipped unit's `/usr/local/bin/chaosd` must run.
    pub chaosd: &'a Path,
}

/// Runs in `chaosd-test-helper`: joins the cgroup, unshares, forks PID 1 and waits for it.
/// The child execs systemd and never returns.
pub fn boot(b: &Boot) -> Result<()> {
    fs::write(
        b.cgroup.join("cgroup.procs"),
        std::process::id().to_string(),
    )
    .context("joining the container cgroup")?;
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP | CloneFlags::CLONE_NEWPID)
        .context("unshare")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private")?;
    // SAFETY: this helper is single-threaded here; the child only mounts and execs.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Parent { child } => {
            fs::write(b.dir.join("pid1"), child.as_raw().to_string())?;
            match waitpid(child, None)? {
                WaitStatus::Exited(_, 0) => Ok(()),
                other => bail!("the container's PID 1 ended: {other:?}"),
            }
        }
        ForkResult::Child => {
            if let Err(e) = prepare_root(b).and_then(|()| exec_systemd(b)) {
                eprintln!("container PID 1: {e:#}");
            }
            std::process::exit(1)
        }
    }
}

fn overlay(dir: &Path, target: &str) -> Result<()> {
    let name = target.trim_start_matches('/').replace('/', "-");
    let (upper, work) = (
        dir.join(format!("{name}.upper")),
        dir.join(format!("{name}.work")),
    );
    fs::create_dir_all(&upper)?;
    fs::create_dir_all(&work)?;
    let opts = format!(
        "lowerdir={target},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .with_context(|| format!("overlay on {target}"))
}

fn prepare_root(b: &Boot) -> Result<()> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        nodev | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .context("proc")?;
    // The host's cgroup mounts (a v1 hierarchy or a v2 one) leave: the container sees only
    // its own cgroup2 root.
    umount2("/sys/fs/cgroup", MntFlags::MNT_DETACH).context("unmounting /sys/fs/cgroup")?;
    mount(
        Some("cgroup2"),
        "/sys/fs/cgroup",
        Some("cgroup2"),
        nodev | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .context("cgroup2 on /sys/fs/cgroup")?;
    mount(
        Some("tmpfs"),
        "/run",
        Some("tmpfs"),
        nodev,
        Some("mode=0755"),
    )
    .context("tmpfs on /run")?;
    for target in ["/etc", "/var", "/usr/local"] {
        overlay(b.dir, target)?;
    }
    fs::create_dir_all("/usr/local/bin")?;
    symlink(b.chaosd, "/usr/local/bin/chaosd").context("linking /usr/local/bin/chaosd")?;
    add_socket_group()
}

/// What `systemd/sysusers.d/chaosd.conf` makes on an install: the socket's group.
fn add_socket_group() -> Result<()> {
    let groups = fs::read_to_string("/etc/group")?;
    if groups.lines().any(|l| l.starts_with("chaosd:")) {
        return Ok(());
    }
    let used: Vec<u32> = groups
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    let gid = (900..1000)
        .find(|g| !used.contains(g))
        .context("no free system gid")?;
    OpenOptions::new()
        .append(true)
        .open("/etc/group")?
        .write_all(format!("chaosd:x:{gid}:\n").as_bytes())?;
    Ok(())
}

fn exec_systemd(b: &Boot) -> Result<()> {
    let c = |s: &str| CString::new(s).unwrap();
    let args = [
        c("/lib/systemd/systemd"),
        c("--unit=chaosd-test.target"),
        c("--log-level=info"),
    ];
    let env = [
        c("container=chaosd-test"),
        c(&format!("SYSTEMD_UNIT_PATH={}", b.units.display())),
        c("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ];
    execve(&args[0], &args, &env).context("exec systemd")?;
    Ok(())
}

/// Stub targets for the default dependencies of services and sockets.
const TARGETS: &[&str] = &[
    "sysinit.target",
    "basic.target",
    "sockets.target",
    "shutdown.target",
    "local-fs.target",
];

/// A running container. `services` are extra `(name, ExecStart)` units the test target starts.
pub struct SystemdContainer {
    cgroup: TestCgroup,
    dir: tempfile::TempDir,
    launcher: Child,
    pid1: u32,
}

impl SystemdContainer {
    /// Boots systemd with `systemd/chaosd.socket` and `systemd/chaosd.service` exactly as
    /// shipped, plus `services` (e.g. targets to put faults on), and waits until the API
    /// socket exists.
    pub fn start(label: &str, chaosd: &Path, services: &[(&str, &str)]) -> SystemdContainer {
        let cgroup = TestCgroup::new(label);
        let dir = tempfile::tempdir().unwrap();
        let units = dir.path().join("units");
        fs::create_dir(&units).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
        for unit in ["chaosd.service", "chaosd.socket"] {
            fs::copy(shipped.join(unit), units.join(unit)).unwrap();
        }
        let drop_in = units.join("chaosd.service.d");
        fs::create_dir(&drop_in).unwrap();
        fs::write(
            drop_in.join("test-log.conf"),
            format!(
                "[Service]\nStandardOutput=append:{}\nStandardError=inherit\n",
                dir.path().join("chaosd.log").display()
            ),
        )
        .unwrap();
        for target in TARGETS {
            fs::write(units.join(target), "[Unit]\nDescription=stub\n").unwrap();
        }
        fs::write(
            units.join("system.slice"),
            "[Unit]\nDescription=System Slice\n",
        )
        .unwrap();
        let mut wants = vec!["chaosd.socket".to_string()];
        for (name, exec) in services {
            fs::write(units.join(name), format!("[Service]\nExecStart={exec}\n")).unwrap();
            wants.push(name.to_string());
        }
        fs::write(
            units.join("chaosd-test.target"),
            format!(
                "[Unit]\nDescription=chaosd test\nWants={}\n",
                wants.join(" ")
            ),
        )
        .unwrap();
        let log = File::create(dir.path().join("launcher.log")).unwrap();
        let launcher = Command::new(helper_bin())
            .arg("systemd-container")
            .arg("--cgroup")
            .arg(cgroup.dir())
            .arg("--dir")
            .arg(dir.path())
            .arg("--units")
            .arg(&units)
            .arg("--chaosd")
            .arg(chaosd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid_file = dir.path().join("pid1");
        let pid1 = wait_for(Duration::from_secs(10), || {
            fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("the container did not start:\n{}", read(&dir)));
        let container = SystemdContainer {
            cgroup,
            dir,
            launcher,
            pid1,
        };
        let socket = container.path("/run/chaosd/chaosd.sock");
        wait_for(Duration::from_secs(30), || socket.exists().then_some(()))
            .unwrap_or_else(|| panic!("systemd made no API socket:\n{}", container.log_text()));
        container
    }

    /// `path` inside the container, reached from the host through PID 1's root.
    pub fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid1))
    }

    /// The host path of the cgroup the container sees as `rel` (e.g. "/system.slice").
    pub fn cgroup_dir(&self, rel: &str) -> PathBuf {
        self.cgroup.dir().join(rel.trim_start_matches('/'))
    }

    /// Host pids of the processes of a unit (`system.slice/<unit>`) whose comm is `comm`.
    pub fn unit_pids(&self, unit: &str, comm: &str) -> Vec<u32> {
        let procs =
            fs::read_to_string(self.cgroup_dir(&format!("system.slice/{unit}/cgroup.procs")))
                .unwrap_or_default();
        procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|pid: &u32| {
                fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
            })
            .collect()
    }

    /// What systemd and chaosd (every start of it, `--cleanup` included) printed.
    pub fn log_text(&self) -> String {
        read(&self.dir)
    }

    /// What chaosd's starts (ExecStart=, ExecStopPost=) printed.
    pub fn chaosd_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("chaosd.log")).unwrap_or_default()
    }
}

fn read(dir: &tempfile::TempDir) -> String {
    let file = |name| fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    format!(
        "--- systemd ---\n{}--- chaosd.service ---\n{}",
        file("launcher.log"),
        file("chaosd.log")
    )
}

impl Drop for SystemdContainer {
    fn drop(&mut self) {
        // Everything, PID 1 and the launcher included, then the cgroup tree (TestCgroup).
        let _ = fs::write(self.cgroup.dir().join("cgroup.kill"), "1");
        let _ = self.launcher.kill();
        let _ = self.launcher.wait();
        let populated = self.cgroup.dir().join("cgroup.events");
        wait_for(Duration::from_secs(10), || {
            fs::read_to_string(&populated)
                .map_or(true, |e| e.contains("populated 0"))
                .then_some(())
        });
    }
}
