//! Undoing, without the daemon, the state a journaled fault leaves on the host when its
//! process is gone or stalled, and saying what was found and what was done.
//!
//! Only what the journal says is touched, and only if it is still the same object: a cgroup by
//! its recorded id (a new cgroup at the same path is left alone), a stress worker by its
//! argv (`chaosd-stress: ... fault <id>`, so a reused pid is never killed), a process whose
//! limit was lowered by its start time.

use std::{fs, path::Path};

use crate::{
    api::{FaultInfo, FaultSpec},
    host::cgroup::Cgroup,
};

/// What the host showed and what was done about it, for the records and logs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub found: String,
    pub done: String,
}

impl Outcome {
    fn new(found: impl Into<String>, done: impl Into<String>) -> Outcome {
        Outcome {
            found: found.into(),
            done: done.into(),
        }
    }
}

/// Whether `spec`'s kind leaves state that its process's death does not end (or, for
/// stress workers and fill files, that a stalled daemon would keep past the deadline).
pub fn outlives_the_daemon(spec: &FaultSpec) -> bool {
    matches!(
        spec,
        FaultSpec::ProcessPause(_)
            | FaultSpec::ClockSkew(_)
            | FaultSpec::StressCpu(_)
            | FaultSpec::StressMem(_)
            | FaultSpec::DiskIo(_)
            | FaultSpec::DiskFill(_)
            | FaultSpec::CpuLimit(_)
            | FaultSpec::MemPressure(_)
            | FaultSpec::ProcessLimit(_)
            | FaultSpec::IoThrottle(_)
            | FaultSpec::FdLimit(_)
    )
}

/// Reverts what fault `f` left. `daemon` is the pid of its daemon if that still lives
/// (stalled): a fill file it holds open is then emptied through `/proc/PID/fd`.
pub fn revert(f: &FaultInfo, daemon: Option<u32>) -> Outcome {
    match &f.fault {
        FaultSpec::ProcessPause(_) => thaw(f),
        FaultSpec::ClockSkew(_) => restore_clocks(f),
        FaultSpec::StressCpu(_) | FaultSpec::StressMem(_) | FaultSpec::DiskIo(_) => {
            kill_workers(&f.id)
        }
        FaultSpec::DiskFill(p) => match daemon {
            None => Outcome::new(
                format!("the fill file in {} held open by the dead chaosd", p.path),
                "nothing to do: its space came back when chaosd died",
            ),
            Some(pid) => empty_fill_file(pid, &p.path),
        },
        FaultSpec::CpuLimit(_)
        | FaultSpec::MemPressure(_)
        | FaultSpec::ProcessLimit(_)
        | FaultSpec::IoThrottle(_) => {
            let (found, done) = crate::faults::resource::restore_leftover(f);
            Outcome::new(found, done)
        }
        FaultSpec::FdLimit(_) => {
            let (found, done) = crate::faults::resource::fd_limit::restore_leftover(f);
            Outcome::new(found, done)
        }
        FaultSpec::NetDelay(_) | FaultSpec::NetBandwidth(_) => Outcome::new(
            "eBPF rules and a recorded sch_fq lease",
            "rules ended with chaosd; the recorded qdiscs are removed with the state dir's lease records",
        ),
        _ => Outcome::new(
            "eBPF rules only",
            "nothing to do: its kernel state ended with that process",
        ),
    }
}

/// The cgroups of `f`'s targets that still are the ones journaled, with their paths.
fn same_cgroups(f: &FaultInfo) -> (Vec<(String, Cgroup)>, Vec<String>) {
    let Ok(mount) = crate::host::cgroup::cgroup2_mount() else {
        return (
            Vec::new(),
            f.targets.iter().map(|t| t.cgroup.clone()).collect(),
        );
    };
    let mut same = Vec::new();
    let mut gone = Vec::new();
    for t in &f.targets {
        match Cgroup::open(&mount, &t.cgroup) {
            Ok(cg) if cg.id == t.cgroup_id => same.push((t.cgroup.clone(), cg)),
            _ => gone.push(t.cgroup.clone()),
        }
    }
    (same, gone)
}

fn gone_note(gone: &[String]) -> String {
    if gone.is_empty() {
        String::new()
    } else {
        format!(" ({} gone or replaced: left alone)", gone.join(", "))
    }
}

fn thaw(f: &FaultInfo) -> Outcome {
    let (same, gone) = same_cgroups(f);
    let mut frozen = Vec::new();
    let mut thawed = Vec::new();
    for (rel, cg) in &same {
        let setting = fs::read_to_string(cg.dir.join("cgroup.freeze")).unwrap_or_default();
        if setting.trim() != "1" {
            continue;
        }
        frozen.push(rel.clone());
        match fs::write(cg.dir.join("cgroup.freeze"), "0") {
            Ok(()) => thawed.push(rel.clone()),
            Err(e) => tracing::warn!(fault_id = %f.id, cgroup = rel, "thawing: {e}"),
        }
    }
    let found = if frozen.is_empty() {
        format!("no target still frozen{}", gone_note(&gone))
    } else {
        format!("{} still frozen{}", frozen.join(", "), gone_note(&gone))
    };
    let done = if thawed.is_empty() {
        "nothing to thaw".to_string()
    } else {
        format!("thawed {}", thawed.join(", "))
    };
    Outcome::new(found, done)
}

fn restore_clocks(f: &FaultInfo) -> Outcome {
    let (same, gone) = same_cgroups(f);
    let procs: usize = same
        .iter()
        .map(|(_, cg)| crate::faults::process::pids_in_subtree(&cg.dir).len())
        .sum();
    crate::faults::clock::restore_leftover(f);
    Outcome::new(
        format!("{procs} processes in the targets{}", gone_note(&gone)),
        "restored the original vDSO code of every patched one",
    )
}

/// The workers of fault `id` still running anywhere (their argv names the fault).
fn workers_of(id: &str) -> Vec<u32> {
    let tag = format!(" fault {id}");
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim() == crate::faults::stress::WORKER_COMM
                && fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|argv| {
                    let argv0 = argv.split(|b| *b == 0).next().unwrap_or_default();
                    String::from_utf8_lossy(argv0).ends_with(&tag)
                })
        })
        .collect()
}

fn kill_workers(id: &str) -> Outcome {
    let pids = workers_of(id);
    if pids.is_empty() {
        return Outcome::new(
            "no stress worker left",
            "nothing to do: workers end with chaosd (parent-death signal) and at the deadline",
        );
    }
    for pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    Outcome::new(
        format!("{} stress workers still running", pids.len()),
        format!("killed {pids:?}"),
    )
}

/// Frees the space of the fill files that the stalled daemon `pid` holds open in `dir`: they
/// are unlinked (O_TMPFILE), so they are found among the daemon's descriptors and truncated
/// through `/proc/PID/fd/N`; the daemon closes them when it resumes. The journal cannot tell
/// two fills of one directory apart: a second fill there, not yet expired, is emptied too
/// (the outcome says how many files were).
fn empty_fill_file(pid: u32, dir: &str) -> Outcome {
    let fds = format!("/proc/{pid}/fd");
    let prefix = Path::new(dir);
    let mut emptied = 0;
    let mut bytes = 0u64;
    for e in fs::read_dir(&fds).into_iter().flatten().flatten() {
        let Ok(target) = fs::read_link(e.path()) else {
            continue;
        };
        let text = target.to_string_lossy();
        if !(target.starts_with(prefix) && text.ends_with(" (deleted)")) {
            continue;
        }
        let Ok(file) = fs::OpenOptions::new().write(true).open(e.path()) else {
            continue;
        };
        bytes += file.metadata().map(|m| m.len()).unwrap_or(0);
        if file.set_len(0).is_ok() {
            emptied += 1;
        }
    }
    Outcome::new(
        format!("{emptied} unlinked fill files in {dir} held by the stalled chaosd"),
        format!(
            "truncated them ({} freed)",
            crate::faults::stress::human_bytes(bytes)
        ),
    )
}
