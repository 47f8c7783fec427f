//! Wire types of the run routes, shared by the daemon and `chaosctl`.
//!
//! `POST /v1/runs` (a [`RunRequest`]) starts a run and answers a [`RunInfo`]; `GET /v1/runs`
//! lists runs; `GET /v1/runs/{id}` is one [`RunInfo`]; `GET /v1/runs/{id}/events?after=N`
//! returns the events after sequence number N (waiting up to `wait_ms` for one), an
//! [`EventsPage`]; `GET /v1/runs/{id}/report` the [`Report`](super::report::Report) once the
//! run finished; `DELETE /v1/runs/{id}` aborts the run, which then rolls back.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/runs`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The scenario file's text (TOML).
    pub scenario: String,
    /// Where it came from (a file name), for messages and the report.
    #[serde(default)]
    pub source: Option<String>,
}

/// The phases of a run, in order.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Targets, capabilities, services; probes pass once.
    Preflight,
    /// The steady state measured before anything is injected.
    Baseline,
    /// Steps injected per schedule.
    Inject,
    /// Every fault of the run reverted.
    Rollback,
    /// Waiting for the steady state to hold again.
    Recovery,
    Done,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Phase::Preflight => "preflight",
            Phase::Baseline => "baseline",
            Phase::Inject => "inject",
            Phase::Rollback => "rollback",
            Phase::Recovery => "recovery",
            Phase::Done => "done",
        };
        f.write_str(s)
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The steady state held under the faults and held again after rollback.
    Passed,
    /// The steady state did not hold under the faults (it recovered afterwards).
    Failed,
    /// An abort rule fired or someone aborted the run; everything was rolled back.
    Aborted,
    /// The steady state did not hold again within the recovery timeout.
    NotRecovered,
    /// Nothing was injected: a target, capability or the steady state was missing.
    PreflightFailed,
    /// A fault could not be reverted; see the timeline.
    Error,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Aborted => "aborted",
            Verdict::NotRecovered => "not recovered",
            Verdict::PreflightFailed => "preflight failed",
            Verdict::Error => "error",
        };
        f.write_str(s)
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Finished,
}

/// A run as the daemon reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub source: Option<String>,
    pub state: RunState,
    pub phase: Phase,
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// RFC 3339, UTC.
    pub started_at: String,
    #[serde(default)]
    pub ended_at: Option<String>,
    /// Ids of the faults of this run in force now.
    #[serde(default)]
    pub active_faults: Vec<String>,
}

/// One thing that happened in a run; `at_ms` counts from the run's start.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunEvent {
    pub seq: u64,
    pub at_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Phase {
        phase: Phase,
    },
    ServiceStarted {
        service: String,
        cgroup: String,
        pid: u32,
    },
    StepStarted {
        step: String,
        kind: String,
        fault_id: String,
        cgroups: Vec<String>,
    },
    StepEnded {
        step: String,
        fault_id: String,
    },
    /// Probe results since the previous health event of this probe.
    ProbeHealth {
        probe: String,
        passed: u64,
        total: u64,
        p99_ms: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
    },
    Abort {
        reason: String,
    },
    RollbackFailed {
        fault_id: String,
        error: String,
    },
    Recovered {
        after_ms: u64,
    },
    NotRecovered {
        waited_ms: u64,
    },
    Finished {
        verdict: Verdict,
        reason: String,
    },
}

impl fmt::Display for RunEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>8.1}s  ", self.at_ms as f64 / 1000.0)?;
        match &self.event {
            Event::Phase { phase } => write!(f, "phase {phase}"),
            Event::ServiceStarted {
                service,
                cgroup,
                pid,
            } => write!(
                f,
                "service {service} started (pid {pid}) in cgroup {cgroup}"
            ),
            Event::StepStarted {
                step,
                kind,
                fault_id,
                cgroups,
            } => write!(
                f,
                "step {step:?}: {kind} injected into {} (fault {fault_id})",
                cgroups.join(",")
            ),
            Event::StepEnded { step, fault_id } => {
                write!(f, "step {step:?}: reverted (fault {fault_id})")
            }
            Event::ProbeHealth {
                probe,
                passed,
                total,
                p99_ms,
                last_error,
            } => {
                write!(
                    f,
                    "probe {probe}: {passed}/{total} passed, p99 {p99_ms:.0} ms"
                )?;
                match last_error {
                    Some(e) => write!(f, " (last error: {e})"),
                    None => Ok(()),
                }
            }
            Event::Abort { reason } => write!(f, "ABORT: {reason}"),
            Event::RollbackFailed { fault_id, error } => {
                write!(f, "rollback of fault {fault_id} FAILED: {error}")
            }
            Event::Recovered { after_ms } => {
                write!(f, "steady state holds again after {after_ms} ms")
            }
            Event::NotRecovered { waited_ms } => {
                write!(f, "steady state did not hold again within {waited_ms} ms")
            }
            Event::Finished { verdict, reason } => write!(f, "finished: {verdict} ({reason})"),
        }
    }
}

/// Body of `GET /v1/runs/{id}/events`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EventsPage {
    pub events: Vec<RunEvent>,
    /// Pass as `after` to get the events that follow.
    pub next: u64,
    /// The run has ended and `events` reach its last event.
    pub finished: bool,
}
