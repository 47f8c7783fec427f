//! What the guardian leaves in the state dir: who it is (`guardian.json`), which journal
//! entries it has claimed (`faults/<id>.guardian.json`) and what it did about each
//! (`faults/<id>.ended`).
//!
//! # Exactly once
//! A journaled fault is reverted by whoever renames its journal file first:
//! - the daemon, as it ends a fault: `<id>.json` → `<id>.ending.json` ([`claim_for_daemon`]);
//! - the guardian, enforcing a deadline of a stalled daemon: `<id>.json` →
//!   `<id>.guardian.json`; it writes `<id>.ended` and removes its claim once reverted.
//!
//! rename(2) is atomic, so the loser sees the file gone. Both claimed names still end in
//! `.json`: if the claimer dies before it has reverted, the next cleanup (which holds the
//! state lock, so it is alone) finds and reverts them. After the daemon died nobody claims:
//! the cleanup takes the state lock first (`crate::daemon::leftovers`).

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::api::FaultInfo;

/// `state_dir/guardian.json`: the current guardian and the daemon it guards.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuardianPid {
    pub pid: u32,
    pub start_time: u64,
    pub daemon_pid: u32,
    pub daemon_start_time: u64,
}

impl GuardianPid {
    pub fn guardian_alive(&self) -> bool {
        crate::host::proc::is_alive(self.pid, self.start_time)
    }

    pub fn daemon_alive(&self) -> bool {
        crate::host::proc::is_alive(self.daemon_pid, self.daemon_start_time)
    }
}

fn pid_path(state_dir: &Path) -> PathBuf {
    state_dir.join("guardian.json")
}

/// Writes `path` whole or not at all (temp file, fsync, rename), as the journal does.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

pub fn write_pid(state_dir: &Path, me: &GuardianPid) -> io::Result<()> {
    write_atomic(&pid_path(state_dir), &serde_json::to_vec(me)?)
}

pub fn read_pid(state_dir: &Path) -> Option<GuardianPid> {
    serde_json::from_slice(&fs::read(pid_path(state_dir)).ok()?).ok()
}

/// Removes `guardian.json` if it still names `me` (a newer guardian may have replaced it).
pub fn remove_pid(state_dir: &Path, me: &GuardianPid) {
    if read_pid(state_dir).as_ref() == Some(me) {
        let _ = fs::remove_file(pid_path(state_dir));
    }
}

/// Whether a guardian outlives its daemon in `state_dir`: it is reverting that daemon's
/// faults under the state lock and releases it within seconds.
pub fn guardian_reverting(state_dir: &Path) -> bool {
    read_pid(state_dir).is_some_and(|g| g.guardian_alive() && !g.daemon_alive())
}

/// Who ended a fault the daemon could not end itself.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// The guardian, when the daemon died.
    GuardianAfterCrash,
    /// The guardian, at the deadline, while the daemon was alive but not beating.
    GuardianAtDeadline,
    /// The next daemon, at its start.
    NextStart,
    /// `chaosd --cleanup` (systemd's ExecStopPost=).
    Cleanup,
}

impl std::fmt::Display for EndedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndedBy::GuardianAfterCrash => "the guardian, after chaosd died",
            EndedBy::GuardianAtDeadline => "the guardian, at the deadline (chaosd was stalled)",
            EndedBy::NextStart => "the next chaosd, at its start",
            EndedBy::Cleanup => "chaosd --cleanup",
        })
    }
}

/// `faults/<id>.ended`: a fault that something other than its daemon ended, with what was
/// found on the host and what was done, for `chaosctl list --all` of the next daemon.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Ended {
    /// As journaled, with `state`, `ended_at` and `outcome` filled in.
    pub info: FaultInfo,
    pub by: EndedBy,
    pub found: String,
    pub done: String,
}

impl Ended {
    pub fn new(mut info: FaultInfo, by: EndedBy, found: String, done: String) -> Ended {
        info.state = match by {
            EndedBy::GuardianAtDeadline => crate::api::FaultState::Expired,
            _ => crate::api::FaultState::Stopped,
        };
        info.ended_at =
            Some(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string());
        info.outcome = Some(format!("ended by {by}: found {found}; {done}"));
        Ended {
            info,
            by,
            found,
            done,
        }
    }

    /// One line for logs and `--cleanup`'s report.
    pub fn summary(&self) -> String {
        let targets: Vec<&str> = self
            .info
            .targets
            .iter()
            .map(|t| t.cgroup.as_str())
            .collect();
        let on = match (&self.info.fault, targets.is_empty()) {
            (crate::api::FaultSpec::DiskFill(p), true) => p.path.clone(),
            _ => targets.join(", "),
        };
        format!(
            "fault {} ({}) on {on}: reverted by {}: found {}; {}",
            self.info.id, self.info.kind, self.by, self.found, self.done
        )
    }
}

fn ended_path(journal_dir: &Path, id: &str) -> PathBuf {
    journal_dir.join(format!("{id}.ended"))
}

pub(crate) fn guardian_claim_path(journal_dir: &Path, id: &str) -> PathBuf {
    journal_dir.join(format!("{id}.guardian.json"))
}

pub(crate) fn daemon_claim_path(journal_dir: &Path, id: &str) -> PathBuf {
    journal_dir.join(format!("{id}.ending.json"))
}

pub fn write_ended(journal_dir: &Path, e: &Ended) -> io::Result<()> {
    write_atomic(
        &ended_path(journal_dir, &e.info.id),
        &serde_json::to_vec_pretty(e)?,
    )
}

/// Reads and removes every `.ended` record (a torn one is logged and removed).
pub fn take_ended(journal_dir: &Path) -> Vec<Ended> {
    let Ok(entries) = fs::read_dir(journal_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "ended") {
            continue;
        }
        match fs::read(&path).map(|b| serde_json::from_slice::<Ended>(&b)) {
            Ok(Ok(rec)) => out.push(rec),
            Ok(Err(err)) => tracing::warn!(
                record = %path.display(),
                "a guardian record is torn or unreadable ({err}); dropping it (its fault was reverted)"
            ),
            Err(err) => {
                tracing::warn!(record = %path.display(), "reading a guardian record: {err}")
            }
        }
        let _ = fs::remove_file(&path);
    }
    out.sort_by(|a, b| a.info.created_at.cmp(&b.info.created_at));
    out
}

/// What the daemon learns when it comes to end a fault.
pub enum Claim {
    /// It holds the fault's journal entry now: it reverts.
    Ours,
    /// The guardian ended it meanwhile (the daemon was stalled): only release its handles.
    Ended(Box<Ended>),
}

/// How long the daemon waits for a guardian that claimed a fault to finish reverting it.
const GUARDIAN_FINISH: Duration = Duration::from_secs(5);

/// The daemon's claim on fault `id` before it reverts it (see the module docs). Blocking: a
/// guardian in the middle of reverting is waited for.
pub fn claim_for_daemon(journal_dir: &Path, id: &str) -> Claim {
    let entry = journal_dir.join(format!("{id}.json"));
    match fs::rename(&entry, daemon_claim_path(journal_dir, id)) {
        Ok(()) => return Claim::Ours,
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(fault_id = id, "claiming the journal entry: {e}");
            return Claim::Ours;
        }
        Err(_) => {}
    }
    let started = Instant::now();
    loop {
        if let Ok(bytes) = fs::read(ended_path(journal_dir, id))
            && let Ok(rec) = serde_json::from_slice::<Ended>(&bytes)
        {
            let _ = fs::remove_file(ended_path(journal_dir, id));
            return Claim::Ended(Box::new(rec));
        }
        let claimed = guardian_claim_path(journal_dir, id).exists();
        if !claimed || started.elapsed() > GUARDIAN_FINISH {
            // No journal entry and no guardian at work: nothing stops the revert.
            return Claim::Ours;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The guardian's claim on a journal entry of a stalled daemon; true if it won.
pub fn claim_for_guardian(journal_dir: &Path, id: &str) -> bool {
    let entry = journal_dir.join(format!("{id}.json"));
    fs::rename(entry, guardian_claim_path(journal_dir, id)).is_ok()
}
