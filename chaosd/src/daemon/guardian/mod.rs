//! The guardian: a small process that ends every fault on time whatever happens to chaosd.
//!
//! The eBPF kinds need no help: their links close with the daemon and the programs ignore
//! every rule once the kernel heartbeat is stale. What the kernel cannot expire (a frozen
//! cgroup, a patched vDSO, stress workers, fill files, sch_fq and TC leases) is journaled
//! before it exists (`crate::engine::journal`), and the guardian reverts it:
//!
//! - **when the daemon dies** (it polls a pidfd of the daemon): it takes the state lock, which
//!   the kernel released with the daemon, reverts everything the journal and the lease
//!   records hold (`crate::daemon::leftovers::clean_as`), records each fault in the history database
//!   and as `faults/<id>.ended` (shown by the next daemon's `chaosctl list --all`), and exits;
//! - **when the daemon lives but has not beaten for a second** (SIGSTOP, a hung runtime: the
//!   runtime's heartbeat task also writes [`beat`]), it ends each such fault that is past its
//!   deadline, claiming its journal entry first (see [`record`]) so the daemon, when it
//!   resumes, lists it as expired and does not revert it again.
//!
//! It is the chaosd binary re-executed as `chaosd __guardian` (no eBPF, no async runtime, a
//! single thread), detached: its own session (setsid), not the daemon's child (it forks once
//! more and the intermediate exits), in its own cgroup `<cgroup2>/chaosd-guardian-<daemon
//! pid>`, so a stop of the daemon's systemd unit (KillMode=) or a `cgroup.kill` of the
//! daemon's cgroup does not take it along. It removes that cgroup when it exits. The daemon
//! holds a pidfd of it and starts a new one if it dies ([`supervise`]).

pub mod supervise;

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use tracing::{info, warn};

use crate::api::FaultInfo;
use crate::engine::handoff::{self as record, Ended, EndedBy, GuardianPid};
use crate::engine::undo;
use crate::faults::kernel::beat_file as beat;
use crate::host::proc;

/// The process name (`/proc/PID/comm`) of a guardian.
pub const COMM: &str = "chaosd-guardian";

/// How often the guardian looks at the heartbeat while the daemon lives and beats.
const POLL: Duration = Duration::from_millis(100);
/// How often it looks while the daemon is idle (no live fault, no beat): its death still
/// wakes the guardian at once; only a stall right after a first inject is seen this late.
const POLL_IDLE: Duration = Duration::from_secs(1);

/// The guardian trusts the daemon as long as the kernel does (`HEARTBEAT_STALE_NS`).
const STALE_NS: u64 = chaosd_common::heartbeat::HEARTBEAT_STALE_NS;

/// `chaosd __guardian`: what the daemon passes to the guardian it starts.
#[derive(clap::Args, Debug)]
pub struct GuardianArgs {
    #[arg(long)]
    pub state_dir: PathBuf,
    #[arg(long)]
    pub daemon_pid: u32,
    /// The daemon's start time (/proc/PID/stat), so a reused pid is never taken for it.
    #[arg(long)]
    pub daemon_start_time: u64,
    /// The audit database, where what the guardian reverts is recorded.
    #[arg(long)]
    pub history_db: PathBuf,
}

/// Leaves the process that the daemon started, so the guardian is nobody's child to reap:
/// forks, and the parent exits at once (the daemon reaps it). Call before any thread exists.
pub fn detach() -> std::io::Result<()> {
    // SAFETY: the process is single-threaded here (called first thing in main); the parent
    // only calls _exit(2).
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { .. } => unsafe { libc::_exit(0) },
        nix::unistd::ForkResult::Child => {}
    }
    // SAFETY: prctl(PR_SET_NAME) with a NUL-terminated name of at most 16 bytes.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"chaosd-guardian".as_ptr(), 0, 0, 0);
    }
    Ok(())
}

/// The guardian's life: watch the daemon, enforce deadlines while it is stalled, revert what
/// it left when it dies. Returns the exit code.
pub fn run(args: GuardianArgs) -> i32 {
    let pid = std::process::id();
    let Some(start_time) = proc::start_time(pid) else {
        warn!("the guardian cannot read its own /proc/PID/stat");
        return 1;
    };
    let me = GuardianPid {
        pid,
        start_time,
        daemon_pid: args.daemon_pid,
        daemon_start_time: args.daemon_start_time,
    };
    if let Err(e) = record::write_pid(&args.state_dir, &me) {
        warn!(
            "the guardian cannot write {}: {e}",
            args.state_dir.display()
        );
    }
    match proc::PidFd::open(args.daemon_pid, args.daemon_start_time) {
        Ok(daemon) => {
            info!(
                pid,
                daemon = args.daemon_pid,
                "guardian watching chaosd (reverts what outlives it)"
            );
            watch(&args, &daemon);
        }
        Err(e) => warn!(daemon = args.daemon_pid, "the daemon is already gone ({e})"),
    }
    after_death(&args);
    record::remove_pid(&args.state_dir, &me);
    leave_own_cgroup();
    0
}

/// Returns once the daemon has exited; meanwhile ends the faults of a stalled daemon.
fn watch(args: &GuardianArgs, daemon: &proc::PidFd) {
    let mut torn_seen = HashSet::new();
    let mut stalled = false;
    let mut poll = POLL;
    loop {
        match daemon.wait_exit(poll) {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                warn!("polling the daemon's pidfd: {e}; treating it as gone");
                return;
            }
        }
        let last = beat::last(&args.state_dir);
        poll = if last == Some(beat::IDLE) {
            POLL_IDLE
        } else {
            POLL
        };
        let age = beat_age_ns(last);
        let now_stalled = age.is_some_and(|a| a > STALE_NS);
        if now_stalled != stalled {
            stalled = now_stalled;
            match age {
                Some(a) if stalled => warn!(
                    daemon = args.daemon_pid,
                    "chaosd has not beaten for {} ms: the guardian ends its faults at their deadlines",
                    a / 1_000_000
                ),
                _ => info!(daemon = args.daemon_pid, "chaosd beats again"),
            }
        }
        if stalled {
            enforce_deadlines(args, &mut torn_seen);
        }
    }
}

/// How long ago the daemon's runtime beat `last` (the beat file's); None before its first
/// beat and while it is idle (no live fault: it does not beat, and a stall would leave
/// nothing to end).
fn beat_age_ns(last: Option<u64>) -> Option<u64> {
    let last = last.filter(|&b| b != beat::IDLE)?;
    Some(crate::faults::kernel::monotonic_ns().saturating_sub(last))
}

/// Whether `f`'s deadline (`expires_at`) has passed; an unreadable one counts as passed.
fn past_deadline(f: &FaultInfo) -> bool {
    match humantime::parse_rfc3339_weak(&f.expires_at) {
        Ok(t) => t <= SystemTime::now(),
        Err(_) => true,
    }
}

/// Ends every unclaimed fault of the stalled daemon whose state outlives it and whose
/// deadline has passed.
fn enforce_deadlines(args: &GuardianArgs, torn_seen: &mut HashSet<PathBuf>) {
    let dir = crate::engine::journal::dir(&args.state_dir);
    for (path, f) in crate::engine::journal::read_entries(&dir, torn_seen) {
        if is_claimed(&path) || !undo::outlives_the_daemon(&f.fault) || !past_deadline(&f) {
            continue;
        }
        if !record::claim_for_guardian(&dir, &f.id) {
            continue;
        }
        let outcome = undo::revert(&f, Some(args.daemon_pid));
        let ended = Ended::new(f, EndedBy::GuardianAtDeadline, outcome.found, outcome.done);
        warn!(fault_id = %ended.info.id, kind = ended.info.kind, "{}", ended.summary());
        if let Err(e) = record::write_ended(&dir, &ended) {
            warn!(fault_id = %ended.info.id, "writing the guardian record: {e}");
        }
        let _ = fs::remove_file(record::guardian_claim_path(&dir, &ended.info.id));
        record_history(&args.history_db, std::slice::from_ref(&ended));
    }
}

/// A journal file the daemon or a guardian has claimed (`<id>.ending.json`,
/// `<id>.guardian.json`).
fn is_claimed(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".ending.json") || n.ends_with(".guardian.json"))
}

/// The daemon is gone: revert what it left, under the state lock.
fn after_death(args: &GuardianArgs) {
    let started = std::time::Instant::now();
    match crate::daemon::leftovers::clean_as(&args.state_dir, EndedBy::GuardianAfterCrash) {
        Ok((lock, _journal, cleaned)) => {
            if cleaned.is_empty() {
                info!("chaosd is gone and left nothing to revert; the guardian exits");
            } else {
                warn!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "chaosd died; the guardian reverted what it left:\n{cleaned}"
                );
            }
            record_history(&args.history_db, &cleaned.faults);
            drop(lock);
        }
        // A new daemon or `chaosd --cleanup` holds the state dir: it reverts instead.
        Err(e) => info!("chaosd is gone; not reverting: {e:#}"),
    }
}

/// Records each ended fault in the audit database (best effort: the log has it too).
pub fn record_history(db: &Path, ended: &[Ended]) {
    if ended.is_empty() {
        return;
    }
    let history = match crate::daemon::audit::History::open(db) {
        Ok(h) => h,
        Err(e) => {
            warn!("recording the guardian's reverts in the history: {e:#}");
            return;
        }
    };
    for e in ended {
        if let Err(err) = history.record(&history_entry(e)) {
            warn!(fault_id = %e.info.id, "recording a revert in the history: {err}");
        }
    }
}

fn history_entry(e: &Ended) -> crate::api::history::HistoryEntry {
    let comm = fs::read_to_string("/proc/self/comm").ok();
    crate::api::history::HistoryEntry {
        id: 0,
        at: e.info.ended_at.clone().unwrap_or_default(),
        uid: nix::unistd::getuid().as_raw(),
        pid: Some(std::process::id() as i32),
        comm: comm.map(|c| c.trim().to_string()),
        method: "REVERT".into(),
        path: format!("/v1/faults/{}", e.info.id),
        request: serde_json::to_string(&e.info.fault).ok(),
        status: 200,
        outcome: e.summary(),
        peer: None,
    }
}

/// The name of the cgroup a guardian of daemon `pid` runs in, under the cgroup2 mount.
pub fn cgroup_name(daemon_pid: u32) -> String {
    format!("chaosd-guardian-{daemon_pid}")
}

/// Moves this process back to the cgroup2 root and removes its own `chaosd-guardian-*`
/// cgroup, so an exited guardian leaves no cgroup behind.
fn leave_own_cgroup() {
    let Ok(mount) = crate::host::cgroup::cgroup2_mount() else {
        return;
    };
    let Ok(own) = fs::read_to_string("/proc/self/cgroup") else {
        return;
    };
    let Some(rel) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
        return;
    };
    let rel = rel.trim().trim_start_matches('/');
    if !rel.starts_with("chaosd-guardian-") || rel.contains('/') {
        return;
    }
    if fs::write(mount.join("cgroup.procs"), "0").is_ok() {
        let _ = fs::remove_dir(mount.join(rel));
    }
}

/// Removes `chaosd-guardian-<pid>` cgroups of dead daemons that nothing runs in any more (a
/// guardian killed before it could remove its own); returns how many.
pub fn remove_stale_cgroups(mount: &Path) -> usize {
    let Ok(entries) = fs::read_dir(mount) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("chaosd-guardian-"))
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .filter(|e| crate::faults::stress::cgroup_procs(&e.path()).is_empty())
        .filter(|e| fs::remove_dir(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(expires_at: String) -> FaultInfo {
        serde_json::from_value(serde_json::json!({
            "id": "ab12", "kind": "process.pause", "fault": {"kind": "process.pause", "params": {}},
            "targets": [], "state": "active", "duration_ms": 1000, "created_at": "",
            "expires_at": expires_at, "counters": {"seen": 0, "affected": 0}
        }))
        .unwrap()
    }

    #[test]
    fn deadlines_are_read_as_the_registry_writes_them() {
        let rfc = |t| humantime::format_rfc3339_millis(t).to_string();
        let now = SystemTime::now();
        assert!(!past_deadline(&at(rfc(now + Duration::from_secs(3)))));
        assert!(past_deadline(&at(rfc(now - Duration::from_millis(1)))));
        assert!(past_deadline(&at("garbage".into())));
    }
}
