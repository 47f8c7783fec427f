//! Bodies of the `/v1/schedules` routes (`chaosctl schedule`): experiments started by the
//! daemon on a cron schedule, stored so they survive restarts.

use serde::{Deserialize, Serialize};

use crate::api::InjectRequest;

/// Body of `POST /v1/schedules`: a cron expression and what to start, a scenario or one fault.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// Five fields (minute hour day-of-month month day-of-week), or six with seconds first;
    /// evaluated in UTC.
    pub cron: String,
    /// A scenario file's text (TOML); exactly one of `scenario` and `fault`.
    #[serde(default)]
    pub scenario: Option<String>,
    /// A fault as `POST /v1/faults` takes it.
    #[serde(default)]
    pub fault: Option<InjectRequest>,
    /// Where it came from (a file name), for lists and reports.
    #[serde(default)]
    pub source: Option<String>,
}

/// A schedule as the daemon reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ScheduleInfo {
    pub id: String,
    pub cron: String,
    /// `scenario` or `fault`.
    pub what: String,
    /// The scenario's title, or the fault's kind.
    pub title: String,
    #[serde(default)]
    pub source: Option<String>,
    pub paused: bool,
    /// Who added it: scheduled runs run as this user.
    pub uid: u32,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The next time it fires (none while paused).
    #[serde(default)]
    pub next_due: Option<String>,
    /// The latest fires, newest first (up to 20 in lists, all kept ones for one schedule).
    #[serde(default)]
    pub fires: Vec<Fire>,
}

/// What became of one due time.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FireOutcome {
    /// The run (or fault) started.
    Started,
    /// The daemon was not running (or was busy past the grace) at the due time; not run late.
    Missed,
    /// Not started: its previous run was still going, another run was going, or it was refused.
    Refused,
}

impl std::fmt::Display for FireOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FireOutcome::Started => "started",
            FireOutcome::Missed => "missed",
            FireOutcome::Refused => "refused",
        })
    }
}

/// One due time of a schedule and its outcome.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Fire {
    /// When it was due (RFC 3339, UTC).
    pub due_at: String,
    /// When the daemon handled it.
    pub at: String,
    pub outcome: FireOutcome,
    /// The run id (scenario) or fault id it started.
    #[serde(default)]
    pub started: Option<String>,
    /// Why, in a sentence.
    pub detail: String,
}
