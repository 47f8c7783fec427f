//! `process.pause`: freezes the target cgroups (cgroup v2 `cgroup.freeze` = 1, which covers
//! their descendants) and thaws them at revert and on drop. A cgroup that is already frozen is
//! refused, so a pause never thaws what someone else froze. If chaosd dies while a pause is
//! active, the restarted daemon thaws the journaled targets (see [`thaw_leftover`]).
//!
//! Counters: `seen` is the processes in the targets and their descendants, `affected` those
//! in targets the kernel reports frozen (`frozen 1` in `cgroup.events`).

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{pids_in_subtree, target_dirs};
use crate::{
    api::{Counters, FaultInfo, FaultSpec},
    error::{FaultError, RequestError},
    faults::{ActiveFault, ApplyContext},
};

fn is_frozen_setting(dir: &std::path::Path) -> bool {
    fs::read_to_string(dir.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
}

fn is_frozen_now(dir: &std::path::Path) -> bool {
    fs::read_to_string(dir.join("cgroup.events"))
        .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1"))
}

/// The first of `dir` and its ancestors below `mount` whose `cgroup.freeze` is set: a
/// process started in `dir` stops before it runs (before `exec`, if it joins there first).
pub(crate) fn frozen_ancestor(mount: &Path, dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .take_while(|d| d.starts_with(mount) && *d != mount)
        .find(|d| is_frozen_setting(d))
        .map(Path::to_path_buf)
}

fn set_freeze(dir: &std::path::Path, on: bool) -> std::io::Result<()> {
    fs::write(dir.join("cgroup.freeze"), if on { "1" } else { "0" })
}

pub fn apply(ctx: &ApplyContext<'_>) -> Result<Box<dyn ActiveFault>, FaultError> {
    let dirs = target_dirs(ctx.targets)?;
    for (d, t) in dirs.iter().zip(ctx.targets) {
        if !d.join("cgroup.freeze").exists() {
            return Err(FaultError::Refused(RequestError::Unsupported {
                kind: "process.pause".into(),
                reason: "cgroup.freeze is missing: the cgroup v2 freezer needs Linux 5.2+".into(),
                fix: "run a kernel 5.2 or newer".into(),
            }));
        }
        if is_frozen_setting(d) {
            return Err(FaultError::Refused(RequestError::AlreadyFrozen {
                cgroup: t.cgroup.clone(),
            }));
        }
    }
    let mut fault = PauseFault {
        frozen: Vec::new(),
        reverted: false,
    };
    for d in dirs {
        if let Err(e) = set_freeze(&d, true) {
            // Dropping `fault` thaws the ones frozen so far.
            return Err(FaultError::kernel("writing cgroup.freeze", e));
        }
        fault.frozen.push(d);
    }
    // Freezing is asynchronous; wait briefly so the first `list` shows it done.
    for _ in 0..50 {
        if fault.frozen.iter().all(|d| is_frozen_now(d)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Box::new(fault))
}

struct PauseFault {
    frozen: Vec<PathBuf>,
    reverted: bool,
}

impl ActiveFault for PauseFault {
    fn counters(&self) -> Counters {
        let mut c = Counters::default();
        for d in &self.frozen {
            let n = pids_in_subtree(d).len() as u64;
            c.seen += n;
            if is_frozen_now(d) {
                c.affected += n;
            }
        }
        c
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        if self.reverted {
            return Ok(());
        }
        self.reverted = true;
        let mut first_err = None;
        for d in &self.frozen {
            match set_freeze(d, false) {
                Ok(()) => {}
                // The cgroup is gone: nothing left to thaw.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(FaultError::kernel("thawing cgroup.freeze", e)),
        }
    }
}

impl Drop for PauseFault {
    fn drop(&mut self) {
        if let Err(e) = self.revert() {
            tracing::error!("thawing a process.pause fault on drop: {e}");
        }
    }
}

/// Thaws the targets of a pause that a dead chaosd journaled; other kinds are left alone.
pub fn thaw_leftover(f: &FaultInfo) {
    if !matches!(f.fault, FaultSpec::ProcessPause(_)) {
        return;
    }
    let Ok(mount) = crate::host::cgroup::cgroup2_mount() else {
        return;
    };
    for t in &f.targets {
        if let Ok(cg) = crate::host::cgroup::Cgroup::open(&mount, &t.cgroup)
            && cg.id == t.cgroup_id
            && set_freeze(&cg.dir, false).is_ok()
        {
            tracing::warn!(fault_id = %f.id, cgroup = t.cgroup, "thawed a cgroup a previous chaosd left frozen");
        }
    }
}
