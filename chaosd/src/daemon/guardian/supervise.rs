//! The daemon's side: start a guardian, hold a pidfd of it, start a new one when it dies.

use std::{
    io,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use thiserror::Error;
use tokio::io::{Interest, unix::AsyncFd};
use tracing::{error, info, warn};

use crate::{
    engine::handoff::{self as record, GuardianPid},
    host::proc,
};

#[derive(Debug, Error)]
pub enum GuardianError {
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the guardian did not report in within {0:?}")]
    NoReport(Duration),
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> GuardianError {
    move |source| GuardianError::Io { op, source }
}

/// How long a new guardian may take to write `guardian.json` (generous: TCG guests are slow).
const REPORT_LIMIT: Duration = Duration::from_secs(20);
/// A guardian that dies sooner than this after its start is restarted only after this.
const RESTART_GAP: Duration = Duration::from_secs(1);

/// The daemon's `--log-format`: its guardian writes to the same stderr, so it logs in the same
/// format (a JSON log stream must stay JSON). Set once by `main`; text when unset.
static LOG_FORMAT: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Records the daemon's log format for the guardians it starts.
pub fn inherit_log_format(format: &'static str) {
    let _ = LOG_FORMAT.set(format);
}

/// What a guardian needs to know, and where it is started from.
#[derive(Clone, Debug)]
pub struct Supervisor {
    pub state_dir: PathBuf,
    pub history_db: PathBuf,
}

impl Supervisor {
    /// Starts a guardian of this process and waits until it reports in; blocking.
    pub fn start(&self) -> Result<GuardianPid, GuardianError> {
        let me = std::process::id();
        let started = proc::start_time(me).ok_or_else(|| GuardianError::Io {
            op: "reading this process's start time",
            source: io::Error::from_raw_os_error(libc::ESRCH),
        })?;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("--log-format")
            .arg(LOG_FORMAT.get().copied().unwrap_or("text"))
            .arg("__guardian")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--daemon-pid")
            .arg(me.to_string())
            .arg("--daemon-start-time")
            .arg(started.to_string())
            .arg("--history-db")
            .arg(&self.history_db)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: setsid(2) only, between fork and exec: async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut intermediate = match own_cgroup(me) {
            Some(dir) => crate::host::cgroup::spawn_in_cgroup(&mut cmd, &dir),
            None => cmd.spawn(),
        }
        .map_err(io_err("starting the guardian"))?;
        // It forks the guardian and exits at once.
        intermediate
            .wait()
            .map_err(io_err("waiting for the guardian's launcher"))?;
        wait_report(&self.state_dir, me, started)
    }

    /// Watches `guardian` for as long as the daemon runs; when it dies, logs it and starts a
    /// new one.
    pub async fn supervise(self, mut guardian: GuardianPid) {
        loop {
            let since = Instant::now();
            if let Err(e) = wait_exit(&guardian).await {
                warn!(guardian = guardian.pid, "cannot watch the guardian: {e}");
                return;
            }
            warn!(
                guardian = guardian.pid,
                "the guardian died; starting a new one"
            );
            tokio::time::sleep(RESTART_GAP.saturating_sub(since.elapsed())).await;
            guardian = loop {
                let me = self.clone();
                match tokio::task::spawn_blocking(move || me.start()).await {
                    Ok(Ok(g)) => break g,
                    Ok(Err(e)) => error!("starting a new guardian: {e}"),
                    Err(e) => error!("starting a new guardian: {e}"),
                }
                tokio::time::sleep(RESTART_GAP).await;
            };
            info!(guardian = guardian.pid, "new guardian started");
        }
    }
}

/// `<cgroup2>/chaosd-guardian-<daemon pid>`, created; None (and a warning) if it cannot be:
/// the guardian then shares the daemon's cgroup.
fn own_cgroup(daemon: u32) -> Option<PathBuf> {
    let mount = crate::host::cgroup::cgroup2_mount().ok()?;
    let dir = mount.join(super::cgroup_name(daemon));
    match std::fs::create_dir(&dir) {
        Ok(()) => Some(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Some(dir),
        Err(e) => {
            warn!(
                "creating the guardian's cgroup {}: {e}; it shares chaosd's",
                dir.display()
            );
            None
        }
    }
}

/// Waits for the new guardian's `guardian.json` naming this daemon.
fn wait_report(state_dir: &Path, me: u32, started: u64) -> Result<GuardianPid, GuardianError> {
    let deadline = Instant::now() + REPORT_LIMIT;
    while Instant::now() < deadline {
        if let Some(g) = record::read_pid(state_dir)
            && g.daemon_pid == me
            && g.daemon_start_time == started
            && g.guardian_alive()
        {
            return Ok(g);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(GuardianError::NoReport(REPORT_LIMIT))
}

/// Returns once `guardian` has exited (its pidfd turns readable).
async fn wait_exit(guardian: &GuardianPid) -> io::Result<()> {
    let pidfd = match proc::PidFd::open(guardian.pid, guardian.start_time) {
        Ok(fd) => fd,
        // Already gone.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(e) => return Err(e),
    };
    // SAFETY: the AsyncFd owns the pidfd, which stays open and unchanged while registered.
    let fd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }?;
    let _ready = fd.readable().await?;
    Ok(())
}
