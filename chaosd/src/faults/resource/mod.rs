//! Resource faults: cgroup v2 knobs that make one cgroup slow or short exactly, where the
//! peers burn the whole host: [`cpu_limit`] (`cpu.max`), [`mem_pressure`] (`memory.high`,
//! `memory.max`), [`process_limit`] (`pids.max`), [`io_throttle`] (`io.max`); and per
//! process, [`fd_limit`] (the soft `RLIMIT_NOFILE`, with the same write-ahead journal and
//! "only while still ours" undo).
//!
//! Each write goes through [`KnobFault`]: the value before is journaled first (through
//! [`ApplyContext::journal_knobs`]), and whoever ends the fault (chaosd at recover or the
//! deadline, its guardian after a `kill -9`, a later start) writes it back, but only while the
//! knob still reads what the fault set. A knob that one fault holds is refused to another, so
//! two faults never save each other's values. Most knobs hold one value; `io.max` holds a
//! line per device and `cgroup.subtree_control` a set of controllers ([`Shape`]): only the
//! fault's own line or controllers are compared and put back.
//!
//! A target needs the controller enabled for it (its parent's `cgroup.subtree_control`).
//! `cpu.limit`, `mem.pressure` and `process.limit` do not enable controllers: those are
//! usually on already (systemd's accounting), and enabling one moves accounting for a whole
//! subtree. `io.throttle` does enable `io` in the ancestors that lack it (hosts rarely have it
//! on below the root), journaled and put back like a knob.

pub mod cpu_limit;
pub mod fd_limit;
pub mod io_throttle;
pub mod mem_pressure;
pub mod process_limit;

use std::{
    collections::BTreeSet,
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

/// The file through which a cgroup enables controllers for its children.
pub const SUBTREE_CONTROL: &str = "cgroup.subtree_control";

/// One knob write a kind asks for: the file and the value to write (for
/// `cgroup.subtree_control`, the `+controller` tokens to apply).
#[derive(Clone)]
pub struct KnobWrite {
    pub file: &'static str,
    pub value: String,
}

/// What a kind counts as "affected".
pub enum EventCounter {
    /// The value of a `key value` line of a `*.events`/`*.stat` file.
    Line {
        file: &'static str,
        key: &'static str,
    },
    /// The I/Os (`rios` + `wios`) of one device's line of `io.stat`.
    DeviceIos { device: String },
}

/// How a knob file reads and is written back.
#[derive(Debug, PartialEq, Eq)]
pub enum Shape<'a> {
    /// One value (`cpu.max`, `pids.max`): read whole, written whole.
    Value,
    /// A line per device (`io.max`): only this "MAJ:MIN"'s line counts ("" when it has
    /// none); no line is written back as every limit `max`.
    DeviceLine(&'a str),
    /// A set of controllers (`cgroup.subtree_control`): written as `+`/`-` tokens.
    Controllers,
}

impl<'a> Shape<'a> {
    /// The shape of `file`; `value` is a value of it (a device line names its device first).
    pub fn of(file: &str, value: &'a str) -> Shape<'a> {
        match file {
            "io.max" => Shape::DeviceLine(value.split_whitespace().next().unwrap_or_default()),
            SUBTREE_CONTROL => Shape::Controllers,
            _ => Shape::Value,
        }
    }

    /// What of `text` (the file's content) the fault compares: the value, the device's line,
    /// or the controllers sorted.
    fn view(&self, text: &str) -> String {
        match self {
            Shape::Value => text.trim().to_string(),
            Shape::DeviceLine(dev) => text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(dev))
                .map(|l| l.trim().to_string())
                .unwrap_or_default(),
            Shape::Controllers => {
                let mut c: Vec<&str> = text.split_whitespace().collect();
                c.sort_unstable();
                c.join(" ")
            }
        }
    }

    /// What the view reads after writing `value` over `before`.
    fn predicted(&self, before: &str, value: &str) -> String {
        match self {
            Shape::Controllers => {
                let mut set: BTreeSet<&str> = before.split_whitespace().collect();
                for token in value.split_whitespace() {
                    if let Some(c) = token.strip_prefix('+') {
                        set.insert(c);
                    } else if let Some(c) = token.strip_prefix('-') {
                        set.remove(c);
                    }
                }
                set.into_iter().collect::<Vec<_>>().join(" ")
            }
            _ => value.to_string(),
        }
    }

    /// The text to write so that the view turns from `now` into `to` (`None`: nothing to write).
    fn write_text(&self, now: &str, to: &str) -> Option<String> {
        match self {
            Shape::Value => Some(to.to_string()),
            Shape::DeviceLine(dev) if to.is_empty() => {
                Some(format!("{dev} rbps=max wbps=max riops=max wiops=max"))
            }
            Shape::DeviceLine(_) => Some(to.to_string()),
            Shape::Controllers => {
                let (now, to): (BTreeSet<&str>, BTreeSet<&str>) = (
                    now.split_whitespace().collect(),
                    to.split_whitespace().collect(),
                );
                let tokens: Vec<String> = to
                    .difference(&now)
                    .map(|c| format!("+{c}"))
                    .chain(now.difference(&to).map(|c| format!("-{c}")))
                    .collect();
                (!tokens.is_empty()).then(|| tokens.join(" "))
            }
        }
    }
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
    let targets = open_targets(ctx)?;
    let plan = targets
        .iter()
        .flat_map(|cg| writes.iter().map(|w| (cg.clone(), w.clone())))
        .collect();
    apply_plan(kind, controller, ctx, &targets, plan, events)
}

/// The cgroups of `ctx`'s targets.
pub fn open_targets(ctx: &ApplyContext<'_>) -> Result<Vec<Cgroup>, FaultError> {
    let mount = cgroup2_mount().map_err(|e| FaultError::kernel("finding cgroup2", e))?;
    ctx.targets
        .iter()
        .map(|t| {
            Cgroup::open(&mount, &t.cgroup)
                .map_err(|e| FaultError::Refused(RequestError::Target(e)))
        })
        .collect()
}

/// Writes `plan` in order (each cgroup and what to write in which of its files), journaling
/// each value before it is changed; `targets` are the cgroups whose events count. Nothing
/// stays written on error: the undo goes in reverse order.
pub fn apply_plan(
    kind: &'static str,
    controller: &'static str,
    ctx: &ApplyContext<'_>,
    targets: &[Cgroup],
    plan: Vec<(Cgroup, KnobWrite)>,
    events: EventCounter,
) -> Result<KnobFault, FaultError> {
    let mut planned: Vec<(PathBuf, KnobChange)> = Vec::new();
    for (cg, w) in plan {
        let shape = Shape::of(w.file, &w.value);
        // A knob that appears once an earlier write of the plan enables its controller in the
        // parent holds nothing yet.
        let enabled_here = planned
            .iter()
            .any(|(d, c)| c.file == SUBTREE_CONTROL && Some(d.as_path()) == cg.dir.parent());
        let before = if enabled_here && !cg.dir.join(w.file).exists() {
            String::new()
        } else {
            read_knob(&cg, w.file, &shape, controller)?
        };
        let set = shape.predicted(&before, &w.value);
        planned.push((cg.dir.clone(), change(&cg, w.file, before, set)));
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
        let shape = Shape::of(&c.file, &c.set);
        let read = |path: &Path| {
            fs::read_to_string(path)
                .map(|t| shape.view(&t))
                .map_err(|e| FaultError::kernel("reading a knob", e))
        };
        if let Some(text) = shape.write_text(&read(&path)?, &c.set) {
            fs::write(&path, &text)
                .map_err(|e| refused_write(kind, &c.cgroup, &c.file, &text, e))?;
        }
        let now = read(&path)?;
        fault.changes[i].1.set = now;
    }
    // The kernel's own spelling of what was set, for the undo's "still ours" check.
    (ctx.journal_knobs)(&fault.journaled())?;
    fault.baseline = targets
        .iter()
        .map(|cg| (cg.dir.clone(), event_count(&cg.dir, &fault.events)))
        .collect();
    Ok(fault)
}

/// Whether an active fault of this daemon holds `file` of the cgroup with id `cgroup_id`.
pub fn is_held(cgroup_id: u64, file: &str) -> bool {
    with_held(|held| held.contains(&(cgroup_id, file.to_string())))
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

/// The knob's value (its view for `shape`), or why the target has no such knob.
fn read_knob(
    cg: &Cgroup,
    file: &str,
    shape: &Shape<'_>,
    controller: &'static str,
) -> Result<String, FaultError> {
    match fs::read_to_string(cg.dir.join(file)) {
        Ok(v) => Ok(shape.view(&v)),
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
    let why = if file == SUBTREE_CONTROL && e.raw_os_error() == Some(libc::EBUSY) {
        format!(
            "{cgroup} has processes of its own, and a cgroup with processes cannot enable controllers for its children (the no-internal-processes rule); move them into a child cgroup first"
        )
    } else {
        e.to_string()
    };
    FaultError::Refused(RequestError::BadParam {
        field: "value",
        input: format!("{file} = {value}"),
        reason: format!("the kernel refused it for {kind} on {cgroup}: {why}"),
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
    /// A controller the fault enabled is in use below (someone's `io.max` in a descendant):
    /// left enabled, which that needs.
    InUse(String),
    /// The cgroup is gone.
    Gone,
}

/// Puts `c.before` back into `dir`'s knob while it still reads `c.set`.
pub fn restore(dir: &Path, c: &KnobChange) -> std::io::Result<Restored> {
    let path = dir.join(&c.file);
    let shape = Shape::of(&c.file, &c.set);
    let now = match fs::read_to_string(&path) {
        Ok(v) => shape.view(&v),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Restored::Gone),
        Err(e) => return Err(e),
    };
    let (before, set) = if shape == Shape::Controllers {
        // Only the controllers this fault added or removed; others are someone else's.
        let Some(ours) = controllers_ours(&now, c) else {
            return Ok(Restored::ChangedSince(now));
        };
        if let Some(user) = ours.added.iter().find_map(|ctl| in_use_below(dir, ctl)) {
            return Ok(Restored::InUse(user));
        }
        (ours.before, now.clone())
    } else {
        (c.before.clone(), c.set.clone())
    };
    if now == before {
        return Ok(Restored::AlreadyBefore);
    }
    if now != set {
        return Ok(Restored::ChangedSince(now));
    }
    let Some(text) = shape.write_text(&now, &before) else {
        return Ok(Restored::AlreadyBefore);
    };
    match fs::write(&path, text) {
        Ok(()) => Ok(Restored::Put),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Restored::Gone),
        Err(e) => Err(e),
    }
}

/// The controllers a fault changed in a `cgroup.subtree_control` and what `now` turns into
/// with them undone.
struct OursUndone {
    added: Vec<String>,
    before: String,
}

/// `None` when `now` has some of the fault's changes undone already and others not (someone
/// else changed them since: left alone); otherwise what to undo.
fn controllers_ours(now: &str, c: &KnobChange) -> Option<OursUndone> {
    let words = |s: &str| {
        s.split_whitespace()
            .map(String::from)
            .collect::<BTreeSet<_>>()
    };
    let (now, before, set) = (words(now), words(&c.before), words(&c.set));
    let added: Vec<String> = set.difference(&before).cloned().collect();
    let removed: Vec<String> = before.difference(&set).cloned().collect();
    let still = added.iter().all(|a| now.contains(a)) && removed.iter().all(|r| !now.contains(r));
    let undone = added.iter().all(|a| !now.contains(a)) && removed.iter().all(|r| now.contains(r));
    if !still && !undone {
        return None;
    }
    let mut back = now;
    for a in &added {
        back.remove(a);
    }
    back.extend(removed);
    Some(OursUndone {
        added: if undone { Vec::new() } else { added },
        before: back.into_iter().collect::<Vec<_>>().join(" "),
    })
}

/// A cgroup below `dir` that uses `controller` (a non-empty `io.max`), as its directory.
/// Turning the controller off in `dir` would drop that setting.
fn in_use_below(dir: &Path, controller: &str) -> Option<String> {
    if controller != "io" {
        return None;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let limits = fs::read_to_string(p.join("io.max")).unwrap_or_default();
            if !limits.trim().is_empty() {
                return Some(format!("{} ({})", p.display(), limits.trim()));
            }
            stack.push(p);
        }
    }
    None
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
            Ok(Restored::InUse(user)) => {
                found.push(format!("{name}: left as is, {user} below still needs it"))
            }
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

/// What `events` counts in `dir` now, 0 when absent.
fn event_count(dir: &Path, events: &EventCounter) -> u64 {
    let read = |file: &str| fs::read_to_string(dir.join(file)).unwrap_or_default();
    match events {
        EventCounter::Line { file, key } => read(file)
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == *key).then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0),
        EventCounter::DeviceIos { device } => read("io.stat")
            .lines()
            .find(|l| l.split_whitespace().next() == Some(device))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .filter(|(k, _)| *k == "rios" || *k == "wios")
                    .filter_map(|(_, v)| v.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0),
    }
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
        let pids = EventCounter::Line {
            file: "pids.events",
            key: "max",
        };
        assert_eq!(event_count(dir.path(), &pids), 12);
        let missing = EventCounter::Line {
            file: "memory.events",
            key: "high",
        };
        assert_eq!(event_count(dir.path(), &missing), 0);
        fs::write(
            dir.path().join("io.stat"),
            "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n254:0 rbytes=9 wbytes=9 rios=10 wios=20\n",
        )
        .unwrap();
        let ios = EventCounter::DeviceIos {
            device: "254:0".into(),
        };
        assert_eq!(event_count(dir.path(), &ios), 30);
    }
}
