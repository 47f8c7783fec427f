//! Body of `GET /v1/history` (`chaosctl history`): the audit trail's records.

use serde::{Deserialize, Serialize};

/// One recorded mutation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    /// Increasing with time.
    pub id: i64,
    /// RFC 3339, UTC.
    pub at: String,
    /// The peer's uid (SO_PEERCRED); `u32::MAX` for a call over the remote listener, which
    /// has no local user (`peer` says who it was).
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
    /// A call over the remote listener: the client certificate's subject and the address it
    /// came from (`CN=chaos-mesh,O=example from 10.0.0.5:41234`); None for the socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}
