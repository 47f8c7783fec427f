//! `fd.limit`: lowers the soft `RLIMIT_NOFILE` of each target process with `prlimit(2)`, so
//! once it holds `nofile` descriptors its next `open()`/`socket()`/`accept()` fails with EMFILE.
//! A `--pid` target is that process only; a `--cgroup`/`--unit` target is every process in
//! its subtree when the fault starts. The hard limit is not touched: lowering a soft limit
//! and raising it back up to the hard limit needs no `CAP_SYS_RESOURCE`.
//!
//! Each process's limit before is journaled first (through [`ApplyContext::journal_limits`])
//! with the process's start time, and whoever ends the fault (chaosd at recover or the
//! deadline, its guardian after a `kill -9`, a later start) raises it back, only for the same
//! process (a reused pid has another start time) and only while it still reads what the fault
//! set. Children a target forks while the fault is in force inherit the lowered limit: those
//! still in a target cgroup and still at the fault's value are raised back too, to their
//! journaled ancestor's value. `affected` counts the processes whose limit was lowered.

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    sync::Mutex,
};

use crate::{
    api::{Counters, FaultInfo, FdLimitParams, LimitChange, ResolvedTarget, TargetSelector},
    error::{FaultError, RequestError},
    faults::{ActiveFault, ApplyContext, process::pids_in_subtree},
    host::{
        cgroup::{Cgroup, cgroup2_mount},
        proc::start_time,
    },
};

const RESOURCE: &str = "NOFILE";

/// `(pid, start time)` of every process whose limit an active fault of this daemon lowered.
static HELD: Mutex<BTreeSet<(u32, u64)>> = Mutex::new(BTreeSet::new());

fn with_held<T>(f: impl FnOnce(&mut BTreeSet<(u32, u64)>) -> T) -> T {
    let mut guard = HELD.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut guard)
}

/// A process's (soft, hard) `RLIMIT_NOFILE`, or with `new` set, the values before the change.
fn prlimit(pid: u32, new: Option<(u64, u64)>) -> std::io::Result<(u64, u64)> {
    let new = new.map(|(soft, hard)| libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    });
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let new_ptr = new.as_ref().map_or(std::ptr::null(), |n| n as *const _);
    // SAFETY: prlimit64(2) reads `new` (or nothing when null) and writes `old`; both point to
    // live rlimit64 values for the duration of the call.
    let rc = unsafe { libc::prlimit64(pid as libc::pid_t, libc::RLIMIT_NOFILE, new_ptr, &mut old) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((old.rlim_cur, old.rlim_max))
}

pub fn validate(p: &FdLimitParams) -> Result<(), RequestError> {
    if p.nofile == 0 || p.nofile == u64::MAX {
        return Err(RequestError::BadParam {
            field: "nofile",
            input: p.nofile.to_string(),
            reason: "give at least 1 descriptor and less than unlimited".into(),
        });
    }
    Ok(())
}

/// The processes a target names: the one of a `--pid` target, every process of the subtree
/// of the others.
fn processes(mount: &std::path::Path, t: &ResolvedTarget) -> Result<Vec<u32>, FaultError> {
    if let TargetSelector::Pid(pid) = t.selector {
        return Ok(vec![pid]);
    }
    let cg =
        Cgroup::open(mount, &t.cgroup).map_err(|e| FaultError::Refused(RequestError::Target(e)))?;
    Ok(pids_in_subtree(&cg.dir))
}

/// The fault in force: the limits it lowered and the cgroup targets whose new children it
/// raises back too.
pub struct FdLimit {
    changes: Vec<LimitChange>,
    cgroups: Vec<PathBuf>,
    seen: u64,
    reverted: bool,
}

pub fn apply(
    p: &FdLimitParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let mount = cgroup2_mount().map_err(|e| FaultError::kernel("finding cgroup2", e))?;
    let mut planned = Vec::new();
    let mut seen = 0;
    for t in ctx.targets {
        for pid in processes(&mount, t)? {
            let (Some(started), Ok((soft, hard))) = (start_time(pid), prlimit(pid, None)) else {
                continue; // exited meanwhile
            };
            seen += 1;
            if soft <= p.nofile || planned.iter().any(|c: &LimitChange| c.pid == pid) {
                continue;
            }
            planned.push(LimitChange {
                pid,
                start_time: started,
                resource: RESOURCE.into(),
                before: soft,
                set: p.nofile,
                hard,
            });
        }
    }
    if planned.is_empty() {
        let targets: Vec<String> = ctx.targets.iter().map(|t| t.selector.to_string()).collect();
        return Err(FaultError::Refused(RequestError::NothingToLower {
            targets: targets.join(", "),
            nofile: p.nofile,
        }));
    }
    with_held(|held| {
        if let Some(c) = planned
            .iter()
            .find(|c| held.contains(&(c.pid, c.start_time)))
        {
            return Err(FaultError::Refused(RequestError::LimitHeld { pid: c.pid }));
        }
        held.extend(planned.iter().map(|c| (c.pid, c.start_time)));
        Ok(())
    })?;
    let cgroups = ctx
        .targets
        .iter()
        .filter(|t| !matches!(t.selector, TargetSelector::Pid(_)))
        .filter_map(|t| Cgroup::open(&mount, &t.cgroup).ok().map(|cg| cg.dir))
        .collect();
    // From here `fault` owns the holds and every change: dropping it on error undoes both.
    let mut fault = FdLimit {
        changes: planned,
        cgroups,
        seen,
        reverted: false,
    };
    (ctx.journal_limits)(&fault.changes)?;
    let mut lowered = Vec::with_capacity(fault.changes.len());
    for c in &fault.changes {
        match prlimit(c.pid, Some((c.set, c.hard))) {
            Ok((before, _)) if start_time(c.pid) == Some(c.start_time) => {
                lowered.push(LimitChange {
                    before,
                    ..c.clone()
                });
            }
            // The pid was reused between the look and the change: put the stranger's back.
            Ok((before, hard)) => {
                let _ = prlimit(c.pid, Some((before, hard)));
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => {
                return Err(FaultError::Refused(RequestError::BadParam {
                    field: "nofile",
                    input: c.set.to_string(),
                    reason: format!("the kernel refused it for process {}: {e}", c.pid),
                }));
            }
        }
    }
    // What each process held just before its change, for the undo.
    let gone: Vec<_> = fault
        .changes
        .iter()
        .filter(|c| !lowered.iter().any(|l| l.pid == c.pid))
        .map(|c| (c.pid, c.start_time))
        .collect();
    with_held(|held| {
        for k in &gone {
            held.remove(k);
        }
    });
    fault.changes = lowered;
    (ctx.journal_limits)(&fault.changes)?;
    Ok(Box::new(fault))
}

/// What [`restore`] did to one process's limit.
#[derive(Debug, PartialEq, Eq)]
pub enum Restored {
    /// It read what the fault set and now reads what it held before.
    Put,
    /// Someone set another soft limit since: theirs, left alone.
    ChangedSince(u64),
    /// The process is gone (or its pid is another process's now).
    Gone,
}

/// Raises `pid`'s soft limit back to `before` while it reads `set` and `pid` is still the
/// process that started at `started`.
fn restore_one(pid: u32, started: u64, set: u64, before: u64) -> std::io::Result<Restored> {
    if start_time(pid) != Some(started) {
        return Ok(Restored::Gone);
    }
    let (soft, hard) = match prlimit(pid, None) {
        Ok(v) => v,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(Restored::Gone),
        Err(e) => return Err(e),
    };
    if soft != set {
        return Ok(Restored::ChangedSince(soft));
    }
    // A hard limit lowered since caps what can be put back.
    match prlimit(pid, Some((before.min(hard), hard))) {
        Ok(_) => Ok(Restored::Put),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(Restored::Gone),
        Err(e) => Err(e),
    }
}

/// `pid`'s parent, from `/proc/PID/stat` (field 4).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The journaled change of `pid`'s nearest ancestor, when `pid` started after it (so it
/// inherited the lowered limit).
fn inherited_from<'a>(pid: u32, by_pid: &HashMap<u32, &'a LimitChange>) -> Option<&'a LimitChange> {
    let started = start_time(pid)?;
    let mut at = pid;
    for _ in 0..64 {
        at = parent(at)?;
        if at <= 1 {
            return None;
        }
        if let Some(c) = by_pid.get(&at) {
            return (start_time(at) == Some(c.start_time) && c.start_time <= started).then_some(*c);
        }
    }
    None
}

/// Puts back every journaled limit, and those of the processes in `cgroups` that inherited
/// one: a line for each, as `(what was found, what was done)`, and the first error.
fn restore_all(
    changes: &[LimitChange],
    cgroups: &[PathBuf],
) -> (Vec<String>, Vec<String>, Option<std::io::Error>) {
    let (mut found, mut done, mut first_err) = (Vec::new(), Vec::new(), None);
    let mut note = |pid: u32, c: &LimitChange, r: std::io::Result<Restored>, heir: bool| {
        let who = if heir {
            format!("child {pid} of {}", c.pid)
        } else {
            format!("process {pid}")
        };
        match r {
            Ok(Restored::Put) => {
                found.push(format!("{who} nofile {}", c.set));
                done.push(format!("{who} nofile back to {}", c.before));
            }
            Ok(Restored::ChangedSince(now)) if !heir => found.push(format!(
                "{who} nofile {now}, set by someone else since: left alone"
            )),
            Ok(Restored::Gone) if !heir => found.push(format!("{who}: gone")),
            Ok(_) => {}
            Err(e) => {
                found.push(format!("{who}: {e}"));
                first_err.get_or_insert(e);
            }
        }
    };
    for c in changes {
        note(
            c.pid,
            c,
            restore_one(c.pid, c.start_time, c.set, c.before),
            false,
        );
    }
    let by_pid: HashMap<u32, &LimitChange> = changes.iter().map(|c| (c.pid, c)).collect();
    for dir in cgroups {
        for pid in pids_in_subtree(dir) {
            if by_pid.contains_key(&pid) {
                continue;
            }
            if let (Some(c), Some(started)) = (inherited_from(pid, &by_pid), start_time(pid)) {
                note(pid, c, restore_one(pid, started, c.set, c.before), true);
            }
        }
    }
    (found, done, first_err)
}

impl ActiveFault for FdLimit {
    /// `seen`: processes in the targets when the fault began; `affected`: those whose soft
    /// limit it lowered.
    fn counters(&self) -> Counters {
        Counters {
            seen: self.seen,
            affected: self.changes.len() as u64,
        }
    }

    fn limits(&self) -> Vec<LimitChange> {
        self.changes.clone()
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        if self.reverted {
            return Ok(());
        }
        self.reverted = true;
        let (found, _, err) = restore_all(&self.changes, &self.cgroups);
        self.release_holds();
        match err {
            None => Ok(()),
            Some(e) => {
                tracing::warn!("restoring RLIMIT_NOFILE: {}", found.join(", "));
                Err(FaultError::kernel("restoring RLIMIT_NOFILE", e))
            }
        }
    }

    /// The guardian raised the limits back already: only let go of the processes.
    fn release(&mut self) -> Result<(), FaultError> {
        self.reverted = true;
        self.release_holds();
        Ok(())
    }
}

impl FdLimit {
    fn release_holds(&self) {
        with_held(|held| {
            for c in &self.changes {
                held.remove(&(c.pid, c.start_time));
            }
        });
    }
}

impl Drop for FdLimit {
    fn drop(&mut self) {
        if let Err(e) = self.revert() {
            tracing::error!("restoring RLIMIT_NOFILE on drop: {e}");
        }
    }
}

/// The journaled limits of `f` raised back where the process is still the one changed (and
/// its children in the targets that inherited them), and a line on what was found and done.
pub fn restore_leftover(f: &FaultInfo) -> (String, String) {
    let cgroups: Vec<PathBuf> = match cgroup2_mount() {
        Ok(mount) => f
            .targets
            .iter()
            .filter(|t| !matches!(t.selector, TargetSelector::Pid(_)))
            .filter_map(|t| Cgroup::open(&mount, &t.cgroup).ok())
            .filter(|cg| f.targets.iter().any(|t| t.cgroup_id == cg.id))
            .map(|cg| cg.dir)
            .collect(),
        Err(_) => Vec::new(),
    };
    let (found, done, _) = restore_all(&f.limits, &cgroups);
    let found = if found.is_empty() {
        "no limit journaled (the fault had not lowered any)".to_string()
    } else {
        found.join(", ")
    };
    let done = if done.is_empty() {
        "nothing to restore".to_string()
    } else {
        format!("set {}", done.join(", "))
    };
    (found, done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_raises_only_the_same_process_still_at_the_set_value() {
        // A child of the test: lower its limit, then undo, then try again with a stale record.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let started = start_time(pid).unwrap();
        let (soft, hard) = prlimit(pid, None).unwrap();
        let set = soft.min(64) - 1;
        prlimit(pid, Some((set, hard))).unwrap();
        assert_eq!(
            restore_one(pid, started + 1, set, soft).unwrap(),
            Restored::Gone
        );
        assert_eq!(prlimit(pid, None).unwrap().0, set);
        assert_eq!(restore_one(pid, started, set, soft).unwrap(), Restored::Put);
        assert_eq!(prlimit(pid, None).unwrap(), (soft, hard));
        assert_eq!(
            restore_one(pid, started, set, soft).unwrap(),
            Restored::ChangedSince(soft)
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn zero_and_unlimited_are_refused() {
        for nofile in [0, u64::MAX] {
            let err = validate(&FdLimitParams { nofile }).unwrap_err().to_string();
            assert!(err.contains("at least 1"), "{err}");
        }
        assert!(validate(&FdLimitParams { nofile: 16 }).is_ok());
    }
}
