//! Resource faults: cgroup v2 knobs that make one cgroup slow or short exactly, where the
//! peers burn the whole host: [`cpu_limit`] (`cpu.max`), [`mem_pressure`] (`memory.high`,
//! `memory.max`), [`process_limit`] (`pids.max`); and per process, [`fd_limit`] (the soft
//! `RLIMIT_NOFILE`, with the same write-ahead journal and "only while still ours" undo).
//!
//! Each write goes through [`KnobFault`]: the value before is journaled first (through
//! [`ApplyContext::journal_knobs`]), and whoever ends the fault (chaosd at recover or the
//! deadline, its guardian after a `kill -9`, a later start) writes it back, but only while the
//! knob still reads what the fault set. A knob that one fault holds is refused to another, so
//! two faults never save each other's values.
//!
//! A target needs the controller enabled for it (its parent's `cgroup.subtree_control`);
//! chaosd does not enable controllers itself: that moves processes' accounting for the whole
//! subtree and can fail on cgroups with processes of their own. The refusal says how.

pub mod cpu_limit;
pub mod fd_limit;
pub mod mem_pressure;
pub mod process_limit;

use std::{
    collections::{BTreeSet, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::Mutex,
};

use crate::{
    api::{Counters, FaultInfo, KnobChange},
    error::{FaultError, RequestError},
    faults::{ActiveFault, ApplyContext, process::pids_in_subtree},
    host::cgroup::{Cgroup, cgroup2_mount},
};

/// `(cgroup id, knob file)` of every knob an active fault of this daemon holds.
static HELD: Mutex<BTreeSet<(u64, String)>> = Mutex::new(BTreeSet::new());

fn with_held<T>(f: impl FnOnce(&mut BTreeSet<(u64, String)>) -> T) -> T {
    let mut guard = HELD.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut guard)
}

/// One knob write a kind asks for: the file and the value to write.
pub struct KnobWrite {
    pub file: &'static str,
    pub value: String,
}

/// What a kind counts as "affected": a line of a `*.events`/`*.stat` file.
pub struct EventCounter {
    pub file: &'static str,
    pub key: &'static str,
}

/// The knobs of one fault in force, on every target.
pub struct KnobFault {
    changes: Vec<(PathBuf, KnobChange)>,
    events: EventCounter,
    /// Each target's dir and its event count when the fault began.
    baseline: Vec<(PathBuf, u64)>,
    reverted: bool,
}

/// Writes `writes` on every target of `ctx` for `kind` (`controller` names what the files
/// need), journaling each value before it is changed. Nothing stays written on error.
pub fn apply_knobs(
    kind: &'static str,
    controller: &'static str,
    ctx: &ApplyContext<'_>,
    writes: &[KnobWrite],
    events: EventCounter,
) -> Result<KnobFault, FaultError> {
    let mount = cgroup2_mount().map_err(|e| FaultError::kernel("finding cgroup2", e))?;
    let mut planned = Vec::new();
    for t in ctx.targets {
        let cg = Cgroup::open(&mount, &t.cgroup)
            .map_err(|e| FaultError::Refused(RequestError::Target(e)))?;
        for w in writes {
            let before = read_knob(&cg, w.file, controller)?;
            planned.push((cg.dir.clone(), change(&cg, w.file, before, w.value.clone())));
        }
    }
    let mut fault = KnobFault {
        changes: Vec::new(),
        baseline: Vec::new(),
        events,
        reverted: false,
    };
    hold(&planned)?;
    // From here `fault` owns the holds and every write: dropping it on error undoes both.
    fault.changes = planned;
    (ctx.journal_knobs)(&fault.journaled())?;
    for i in 0..fault.changes.len() {
        let (dir, c) = &fault.changes[i];
        let path = dir.join(&c.file);
        fs::write(&path, &c.set).map_err(|e| refused_write(kind, &c.cgroup, &c.file, &c.set, e))?;
        let now = fs::read_to_string(&path).map_err(|e| FaultError::kernel("reading a knob", e))?;
        fault.changes[i].1.set = now.trim().to_string();
    }
    // The kernel's own spelling of what was set, for the undo's "still ours" check.
    (ctx.journal_knobs)(&fault.journaled())?;
    let baseline: Vec<(PathBuf, u64)> = fault
        .target_dirs()
        .map(|d| {
            let n = event_count(&d, &fault.events);
            (d, n)
        })
        .collect();
    fault.baseline = baseline;
    Ok(fault)
}

fn change(cg: &Cgroup, file: &str, before: String, set: String) -> KnobChange {
    KnobChange {
        cgroup: cg.rel.clone(),
        cgroup_id: cg.id,
        file: file.to_string(),
        before,
        set,
    }
}

/// The knob's value, or why the target has no such knob.
fn read_knob(cg: &Cgroup, file: &str, controller: &'static str) -> Result<String, FaultError> {
    match fs::read_to_string(cg.dir.join(file)) {
        Ok(v) => Ok(v.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = cg.dir.parent().unwrap_or(Path::new("/"));
            Err(FaultError::Refused(RequestError::ControllerNotEnabled {
                cgroup: cg.rel.clone(),
                file: file.to_string(),
                controller,
                subtree_control: parent.join("cgroup.subtree_control").display().to_string(),
            }))
        }
        Err(e) => Err(FaultError::kernel("reading a cgroup knob", e)),
    }
}

fn refused_write(
    kind: &'static str,
    cgroup: &str,
    file: &str,
    value: &str,
    e: std::io::Error,
) -> FaultError {
    FaultError::Refused(RequestError::BadParam {
        field: "value",
        input: format!("{file} = {value}"),
        reason: format!("the kernel refused it for {kind} on {cgroup}: {e}"),
    })
}

/// Claims each planned knob for this fault, or refuses if another fault holds one.
fn hold(planned: &[(PathBuf, KnobChange)]) -> Result<(), FaultError> {
    with_held(|held| {
        if let Some((_, c)) = planned
            .iter()
            .find(|(_, c)| held.contains(&(c.cgroup_id, c.file.clone())))
        {
            return Err(FaultError::Refused(RequestError::KnobHeld {
                cgroup: c.cgroup.clone(),
                file: c.file.clone(),
            }));
        }
        for (_, c) in planned {
            held.insert((c.cgroup_id, c.file.clone()));
        }
        Ok(())
    })
}

impl KnobFault {
    fn journaled(&self) -> Vec<KnobChange> {
        self.changes.iter().map(|(_, c)| c.clone()).collect()
    }

    fn target_dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        let mut seen = HashSet::new();
        self.changes
            .iter()
            .filter(move |(d, _)| seen.insert(d.clone()))
            .map(|(d, _)| d.clone())
    }

    fn release_holds(&self) {
        with_held(|held| {
            for (_, c) in &self.changes {
                held.remove(&(c.cgroup_id, c.file.clone()));
            }
        });
    }
}

impl ActiveFault for KnobFault {
    /// `seen`: processes in the targets; `affected`: times the kernel enforced the limit
    /// since the fault began (the kind's events line).
    fn counters(&self) -> Counters {
        let mut c = Counters::default();
        for (dir, start) in &self.baseline {
            c.seen += pids_in_subtree(dir).len() as u64;
            c.affected += event_count(dir, &self.events).saturating_sub(*start);
        }
        c
    }

    fn knobs(&self) -> Vec<KnobChange> {
        self.journaled()
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        if self.reverted {
            return Ok(());
        }
        self.reverted = true;
        let mut first_err = None;
        // Last written first, so knobs that depend on each other go back in order.
        for (dir, c) in self.changes.iter().rev() {
            if let Err(e) = restore(dir, c) {
                tracing::warn!(cgroup = c.cgroup, file = c.file, "restoring a knob: {e}");
                first_err.get_or_insert(e);
            }
        }
        self.release_holds();
        match first_err {
            None => Ok(()),
            Some(e) => Err(FaultError::kernel("restoring a cgroup knob", e)),
        }
    }

    /// The guardian wrote the old values back already: only let go of the knobs.
    fn release(&mut self) -> Result<(), FaultError> {
        self.reverted = true;
        self.release_holds();
        Ok(())
    }
}

impl Drop for KnobFault {
    fn drop(&mut self) {
        if let Err(e) = self.revert() {
            tracing::error!("restoring cgroup knobs on drop: {e}");
        }
    }
}

/// What [`restore`] did to one knob.
#[derive(Debug, PartialEq, Eq)]
pub enum Restored {
    /// It read what the fault set and now reads what it held before.
    Put,
    /// It already read its old value (the fault never wrote it, or someone restored it).
    AlreadyBefore,
    /// Someone wrote another value since: theirs, left alone.
    ChangedSince(String),
    /// The cgroup is gone.
    Gone,
}

/// Puts `c.before` back into `dir`'s knob while it still reads `c.set`.
pub fn restore(dir: &Path, c: &KnobChange) -> std::io::Result<Restored> {
    let path = dir.join(&c.file);
    let now = match fs::read_to_string(&path) {
        Ok(v) => v.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Restored::Gone),
        Err(e) => return Err(e),
    };
    if now == c.before {
        return Ok(Restored::AlreadyBefore);
    }
    if now != c.set {
        return Ok(Restored::ChangedSince(now));
    }
    match fs::write(&path, &c.before) {
        Ok(()) => Ok(Restored::Put),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Restored::Gone),
        Err(e) => Err(e),
    }
}

/// The journaled knobs of `f` put back where their cgroup is still the one changed, and a
/// line on what was found and what was done.
pub fn restore_leftover(f: &FaultInfo) -> (String, String) {
    let Ok(mount) = cgroup2_mount() else {
        return ("no cgroup2 mount".into(), "nothing to restore".into());
    };
    let mut found = Vec::new();
    let mut done = Vec::new();
    for c in f.knobs.iter().rev() {
        let name = format!("{} {}", c.cgroup, c.file);
        let cg = match Cgroup::open(&mount, &c.cgroup) {
            Ok(cg) if cg.id == c.cgroup_id => cg,
            _ => {
                found.push(format!("{name}: cgroup gone or replaced"));
                continue;
            }
        };
        match restore(&cg.dir, c) {
            Ok(Restored::Put) => {
                found.push(format!("{name} = {}", c.set));
                done.push(format!("{name} back to {}", c.before));
            }
            Ok(Restored::AlreadyBefore) => found.push(format!("{name} already {}", c.before)),
            Ok(Restored::ChangedSince(now)) => found.push(format!(
                "{name} = {now}, written by someone else: left alone"
            )),
            Ok(Restored::Gone) => found.push(format!("{name}: gone")),
            Err(e) => found.push(format!("{name}: {e}")),
        }
    }
    let found = if found.is_empty() {
        "no knob journaled (the fault had not written any)".to_string()
    } else {
        found.join(", ")
    };
    let done = if done.is_empty() {
        "nothing to restore".to_string()
    } else {
        format!("wrote {}", done.join(", "))
    };
    (found, done)
}

/// The value of `key` in `dir`'s `events.file` (`key value` lines), 0 when absent.
fn event_count(dir: &Path, events: &EventCounter) -> u64 {
    fs::read_to_string(dir.join(events.file))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == events.key).then(|| v.trim().parse().ok())?
            })
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knob(dir: &Path, file: &str, value: &str) -> KnobChange {
        fs::write(dir.join(file), value).unwrap();
        KnobChange {
            cgroup: "/t".into(),
            cgroup_id: 1,
            file: file.into(),
            before: "max".into(),
            set: "5".into(),
        }
    }

    #[test]
    fn restore_puts_back_only_what_still_reads_as_set() {
        let dir = tempfile::tempdir().unwrap();
        let ours = knob(dir.path(), "pids.max", "5");
        assert_eq!(restore(dir.path(), &ours).unwrap(), Restored::Put);
        assert_eq!(
            fs::read_to_string(dir.path().join("pids.max")).unwrap(),
            "max"
        );
        assert_eq!(restore(dir.path(), &ours).unwrap(), Restored::AlreadyBefore);
        let theirs = knob(dir.path(), "pids.max", "7\n");
        assert_eq!(
            restore(dir.path(), &theirs).unwrap(),
            Restored::ChangedSince("7".into())
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("pids.max")).unwrap(),
            "7\n"
        );
        fs::remove_file(dir.path().join("pids.max")).unwrap();
        assert_eq!(restore(dir.path(), &theirs).unwrap(), Restored::Gone);
    }

    #[test]
    fn event_counts_read_their_line_and_default_to_zero() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("pids.events"), "max 12\n").unwrap();
        let pids = EventCounter {
            file: "pids.events",
            key: "max",
        };
        assert_eq!(event_count(dir.path(), &pids), 12);
        let missing = EventCounter {
            file: "memory.events",
            key: "high",
        };
        assert_eq!(event_count(dir.path(), &missing), 0);
    }
}
