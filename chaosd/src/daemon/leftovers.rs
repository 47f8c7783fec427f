//! Reverting what a previous chaosd left when it died: journaled faults (frozen cgroups, skewed
//! clocks), the sch_fq qdiscs and the TC filters it recorded, its stress cgroups. The guardian
//! does this the moment the daemon dies (`crate::daemon::guardian`); a start does it before serving
//! (and shows what the guardian did); `chaosd --cleanup` (systemd's ExecStopPost=) does only
//! this. The state lock makes them take turns, and each reverted entry leaves the journal, so
//! nothing is reverted twice.

use std::{fmt, fs::File, path::Path};

use anyhow::{Context as _, bail};
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};
use tracing::warn;

use crate::{
    engine::handoff::{Ended, EndedBy},
    engine::journal::Journal,
};

/// What a cleanup reverted.
#[derive(Debug, Default)]
pub struct Cleaned {
    /// Faults journaled by the dead instance, with what was found and done.
    pub faults: Vec<Ended>,
    /// Faults a guardian ended before this start (read from its records; a start only).
    pub by_guardian: Vec<Ended>,
    /// sch_fq qdiscs removed (net.delay / net.bandwidth pacing).
    pub fq_qdiscs: usize,
    /// Devices whose TC filter (and clsact qdisc) was removed.
    pub tc_devices: usize,
    /// `chaosd-stress-<pid>` cgroups of dead daemons removed.
    pub stress_cgroups: usize,
    /// Cgroups of scenario runs (and their services) the dead instance left.
    pub run_cgroups: usize,
}

impl Cleaned {
    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
            && self.by_guardian.is_empty()
            && self.fq_qdiscs == 0
            && self.tc_devices == 0
            && self.stress_cgroups == 0
            && self.run_cgroups == 0
    }
}

impl fmt::Display for Cleaned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "nothing to clean: no previous chaosd left anything");
        }
        for e in self.by_guardian.iter().chain(&self.faults) {
            writeln!(f, "{}", e.summary())?;
        }
        if self.fq_qdiscs > 0 {
            writeln!(f, "sch_fq qdiscs removed: {}", self.fq_qdiscs)?;
        }
        if self.tc_devices > 0 {
            writeln!(f, "devices with TC filters removed: {}", self.tc_devices)?;
        }
        if self.stress_cgroups > 0 {
            writeln!(
                f,
                "dead daemons' stress cgroups removed: {}",
                self.stress_cgroups
            )?;
        }
        if self.run_cgroups > 0 {
            writeln!(f, "scenario run cgroups removed: {}", self.run_cgroups)?;
        }
        Ok(())
    }
}

/// Where the fq qdisc record lives in `state_dir`.
pub fn fq_record(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("fq.json")
}

/// Where the TC filter record lives in `state_dir`.
pub fn tc_record(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("tc.json")
}

/// An exclusive lock on a state dir (flock on `state_dir/lock`), held by the daemon for its
/// life, so `--cleanup` never reverts the faults of a live daemon and two daemons never share
/// a journal. The kernel drops it when the holder dies, whatever reuses its pid.
pub struct StateLock(#[expect(dead_code, reason = "held for its Drop")] Flock<File>);

/// How long a start or `--cleanup` waits for a guardian that is reverting a dead daemon's
/// faults (it needs well under a second natively; TCG guests are slower).
const GUARDIAN_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Takes the state dir's lock, or says who holds it. A guardian reverting what its dead
/// daemon left holds it for a moment: that is waited for.
fn lock(state_dir: &Path) -> anyhow::Result<StateLock> {
    let path = state_dir.join("lock");
    let mut file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let started = std::time::Instant::now();
    let mut waited = false;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => return Ok(StateLock(held)),
            Err((f, Errno::EWOULDBLOCK))
                if started.elapsed() < GUARDIAN_WAIT
                    && crate::engine::handoff::guardian_reverting(state_dir) =>
            {
                if !waited {
                    tracing::info!(
                        "a guardian is reverting what a dead chaosd left; waiting for it"
                    );
                    waited = true;
                }
                file = f;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err((_, Errno::EWOULDBLOCK)) => bail!(
                "a running chaosd holds {}; stop it first (it reverts its own faults as it stops)",
                path.display()
            ),
            Err((_, e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
}

/// Locks `state_dir`, opens its journal and reverts everything a previous instance left
/// there; returns the lock and the journal (for the daemon that goes on) and what was cleaned,
/// including what a guardian ended before (its records are consumed).
pub fn clean(state_dir: &Path) -> anyhow::Result<(StateLock, Journal, Cleaned)> {
    clean_as(state_dir, EndedBy::NextStart)
}

/// [`clean`], done `by` a start, `chaosd --cleanup` or a guardian. All but a start leave a
/// record of each fault (`faults/<id>.ended`) for the next start to show.
pub fn clean_as(state_dir: &Path, by: EndedBy) -> anyhow::Result<(StateLock, Journal, Cleaned)> {
    let journal = Journal::open(state_dir)
        .with_context(|| format!("opening the state dir {}", state_dir.display()))?;
    let held = lock(state_dir)?;
    let mut cleaned = Cleaned::default();
    if by == EndedBy::NextStart {
        cleaned.by_guardian = crate::engine::handoff::take_ended(journal.dir());
    }
    for (_, f) in journal.leftovers() {
        let outcome = crate::engine::undo::revert(&f, None);
        let ended = Ended::new(f, by, outcome.found, outcome.done);
        warn!(fault_id = %ended.info.id, kind = ended.info.kind, "a previous chaosd left this fault: {}", ended.summary());
        if by != EndedBy::NextStart
            && let Err(e) = crate::engine::handoff::write_ended(journal.dir(), &ended)
        {
            warn!(fault_id = %ended.info.id, "writing the record of a revert: {e}");
        }
        journal.remove(&ended.info.id);
        cleaned.faults.push(ended);
    }
    cleaned.fq_qdiscs = crate::faults::net::qdisc::clean_leftovers(&fq_record(state_dir));
    cleaned.tc_devices = crate::faults::net::tc::clean_leftovers(&tc_record(state_dir));
    if let Ok(mount) = crate::host::cgroup::cgroup2_mount() {
        cleaned.stress_cgroups = crate::faults::stress::remove_stale_stress_cgroups(&mount);
        crate::daemon::guardian::remove_stale_cgroups(&mount);
    }
    // Here, not at run start: `chaosd --cleanup` (ExecStopPost=) must remove them too.
    cleaned.run_cgroups = crate::scenario::service::remove_leftovers(&state_dir.join("runs"));
    Ok((held, journal, cleaned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_state_dir_has_nothing_to_clean() {
        let dir = tempfile::tempdir().unwrap();
        let (held, _, cleaned) = clean(dir.path()).unwrap();
        assert!(cleaned.is_empty());
        let e = clean(dir.path()).err().unwrap();
        assert!(e.to_string().contains("a running chaosd holds"), "{e}");
        drop(held);
        assert!(clean(dir.path()).is_ok());
        assert!(cleaned.to_string().contains("nothing to clean"));
    }

    #[test]
    fn the_report_names_each_fault() {
        let info: crate::api::FaultInfo = serde_json::from_value(serde_json::json!({
            "id": "ab12", "kind": "process.pause", "fault": {"kind": "process.pause", "params": {}},
            "targets": [{"selector": {"cgroup": "/a"}, "cgroup": "/a", "cgroup_id": 7}],
            "state": "active", "duration_ms": 1000, "created_at": "", "expires_at": "",
            "counters": {"seen": 0, "affected": 0}
        }))
        .unwrap();
        let ended = Ended::new(
            info,
            EndedBy::Cleanup,
            "/a still frozen".into(),
            "thawed /a".into(),
        );
        let cleaned = Cleaned {
            faults: vec![ended],
            by_guardian: Vec::new(),
            fq_qdiscs: 2,
            tc_devices: 0,
            stress_cgroups: 1,
            run_cgroups: 1,
        };
        let text = cleaned.to_string();
        assert!(
            text.contains("fault ab12 (process.pause) on /a: reverted by chaosd --cleanup: found /a still frozen; thawed /a"),
            "{text}"
        );
        assert!(text.contains("sch_fq qdiscs removed: 2"), "{text}");
        assert!(!text.contains("TC"), "{text}");
        assert!(text.contains("stress cgroups removed: 1"), "{text}");
        assert!(text.contains("scenario run cgroups removed: 1"), "{text}");
    }
}
