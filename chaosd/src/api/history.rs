//! Body of `GET /v1/history` (`chaosctl history`): the audit trail's records.

use serde::{Deserialize, Serialize};

/// One recorded mutation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    /// Increasing with time.
    pub id: i64,
    /// RFC 3339, UTC.
    pub at: String,
    pub uid: u32,
    pub pid: Option<i32>,
    /// The peer's command name (`/proc/PID/comm`), if it could be read.
    pub comm: Option<String>,
    pub method: String,
    pub path: String,
    /// The request body, if any (cut at 64 KiB).
    pub request: Option<String>,
    /// The HTTP status of the answer.
    pub status: u16,
    /// `ok`, with the ids of the faults or runs touched, or the error as the client saw it.
    pub outcome: String,
}
