//! Reverting what a previous chaosd left when it died: journaled faults (frozen cgroups, skewed
//! clocks), the sch_fq qdiscs and the TC filters it recorded, its stress cgroups. A start does this before
//! serving; `chaosd --cleanup` (systemd's ExecStopPost=) does only this.

use std::{fmt, fs::File, path::Path};

use anyhow::{Context as _, bail};
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};
use tracing::warn;

use crate::engine::journal::Journal;

/// What a cleanup reverted.
#[derive(Debug, Default)]
pub struct Cleaned {
    /// Faults journaled by the dead instance: `(id, kind, cgroups)`.
    pub faults: Vec<(String, String, Vec<String>)>,
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
        for (id, kind, cgroups) in &self.faults {
            writeln!(f, "fault {id} ({kind}) on {}: reverted", cgroups.join(", "))?;
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

/// Takes the state dir's lock, or says who holds it.
fn lock(state_dir: &Path) -> anyhow::Result<StateLock> {
    let path = state_dir.join("lock");
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(StateLock(held)),
        Err((_, Errno::EWOULDBLOCK)) => bail!(
            "a running chaosd holds {}; stop it first (it reverts its own faults as it stops)",
            path.display()
        ),
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// Locks `state_dir`, opens its journal and reverts everything a previous instance left
/// there; returns the lock and the journal (for the daemon that goes on) and what was cleaned.
pub fn clean(state_dir: &Path) -> anyhow::Result<(StateLock, Journal, Cleaned)> {
    let journal = Journal::open(state_dir)
        .with_context(|| format!("opening the state dir {}", state_dir.display()))?;
    let held = lock(state_dir)?;
    let mut cleaned = Cleaned::default();
    for f in journal.leftovers() {
        let cgroups: Vec<String> = f.targets.iter().map(|t| t.cgroup.clone()).collect();
        warn!(fault_id = %f.id, kind = f.kind, ?cgroups, "a previous chaosd left this fault; its kernel state ended with that process");
        // A frozen cgroup does not thaw when its freezer dies: thaw it here.
        crate::faults::process::pause::thaw_leftover(&f);
        // Skewed processes would recover at the deadline anyway; restore them now.
        crate::faults::clock::restore_leftover(&f);
        journal.remove(&f.id);
        cleaned.faults.push((f.id, f.kind, cgroups));
    }
    cleaned.fq_qdiscs = crate::faults::net::qdisc::clean_leftovers(&fq_record(state_dir));
    cleaned.tc_devices = crate::faults::net::tc::clean_leftovers(&tc_record(state_dir));
    if let Ok(mount) = crate::host::cgroup::cgroup2_mount() {
        cleaned.stress_cgroups = crate::faults::stress::remove_stale_stress_cgroups(&mount);
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
        let cleaned = Cleaned {
            faults: vec![("ab12".into(), "process.pause".into(), vec!["/a".into()])],
            fq_qdiscs: 2,
            tc_devices: 0,
            stress_cgroups: 1,
            run_cgroups: 1,
        };
        let text = cleaned.to_string();
        assert!(
            text.contains("fault ab12 (process.pause) on /a: reverted"),
            "{text}"
        );
        assert!(text.contains("sch_fq qdiscs removed: 2"), "{text}");
        assert!(!text.contains("TC"), "{text}");
        assert!(text.contains("stress cgroups removed: 1"), "{text}");
        assert!(text.contains("scenario run cgroups removed: 1"), "{text}");
    }
}
