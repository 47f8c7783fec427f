//! The audit trail: every request that changes something (any method but GET and HEAD:
//! inject, recover, recover --all, run start and abort) is recorded with who sent it (uid and
//! pid from SO_PEERCRED, the command name from `/proc/PID/comm`), what it asked and how it
//! ended, in an SQLite database and in the log. Refused requests are recorded with their error.
//! `GET /v1/history?limit=N` and `chaosctl history` read it back, newest first. Calls over
//! the remote listener (`crate::daemon::remote`) are recorded the same way, with the client
//! certificate's subject and address in place of a local user.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, Query, Request, State},
    http::{Method, StatusCode},
    middleware::Next,
    response::Response,
    routing::get,
};
use rusqlite::{Connection, params};
use serde::Deserialize;

use crate::daemon::http::{ApiError, PeerCred};

/// Largest request body read for the record; the API's JSON bodies are far smaller.
const MAX_BODY: usize = 2 << 20;
/// Longest request text kept in a record (scenario files can be long).
const MAX_REQUEST_TEXT: usize = 64 << 10;
/// Records kept; older ones are deleted as new ones arrive.
const KEPT: i64 = 100_000;
/// `GET /v1/history` without `limit`.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 10_000;

pub use crate::api::history::HistoryEntry;

/// The SQLite database of [`HistoryEntry`] records.
pub struct History {
    conn: Mutex<Connection>,
}

impl History {
    /// Opens (creating if needed, mode 0600: requests may name internal services) the database.
    pub fn open(path: &Path) -> anyhow::Result<Arc<History>> {
        let context = || format!("opening the audit database {}", path.display());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(context)?;
        }
        let conn = Connection::open(path).with_context(context)?;
        // The guardian writes here too, while a stalled daemon may hold the database.
        conn.busy_timeout(std::time::Duration::from_secs(2))
            .with_context(context)?;
        // The trail is appended to and read newest-first a page at a time: a 256 KiB page
        // cache (SQLite's default is 2 MiB) is plenty, and it is resident for the daemon's life.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -256;
             CREATE TABLE IF NOT EXISTS mutations (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 at TEXT NOT NULL,
                 uid INTEGER NOT NULL,
                 pid INTEGER,
                 comm TEXT,
                 method TEXT NOT NULL,
                 path TEXT NOT NULL,
                 request TEXT,
                 status INTEGER NOT NULL,
                 outcome TEXT NOT NULL
             );",
        )
        .with_context(context)?;
        // Databases made before the remote listener have no `peer` column.
        let has_peer = conn
            .prepare("SELECT 1 FROM pragma_table_info('mutations') WHERE name = 'peer'")
            .and_then(|mut s| s.exists([]))
            .with_context(context)?;
        if !has_peer {
            conn.execute_batch("ALTER TABLE mutations ADD COLUMN peer TEXT;")
                .with_context(context)?;
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(context)?;
        tracing::info!(db = %path.display(), "audit trail");
        Ok(Arc::new(History {
            conn: Mutex::new(conn),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `e` (its `id` is assigned here) and drops records beyond the newest [`KEPT`].
    pub fn record(&self, e: &HistoryEntry) -> rusqlite::Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO mutations
                 (at, uid, pid, comm, method, path, request, status, outcome, peer)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                e.at, e.uid, e.pid, e.comm, e.method, e.path, e.request, e.status, e.outcome,
                e.peer
            ],
        )?;
        let newest = conn.last_insert_rowid();
        conn.execute("DELETE FROM mutations WHERE id <= ?1", [newest - KEPT])?;
        Ok(())
    }

    /// The newest `limit` records, newest first.
    pub fn recent(&self, limit: u32) -> rusqlite::Result<Vec<HistoryEntry>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, at, uid, pid, comm, method, path, request, status, outcome, peer
             FROM mutations ORDER BY id DESC LIMIT ?1",
        )?;
        stmt.query_map([limit], |r| {
            Ok(HistoryEntry {
                id: r.get(0)?,
                at: r.get(1)?,
                uid: r.get(2)?,
                pid: r.get(3)?,
                comm: r.get(4)?,
                method: r.get(5)?,
                path: r.get(6)?,
                request: r.get(7)?,
                status: r.get(8)?,
                outcome: r.get(9)?,
                peer: r.get(10)?,
            })
        })?
        .collect()
    }
}

/// Who sent a recorded request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub uid: u32,
    pub pid: Option<i32>,
    /// The remote listener's client: certificate subject and address.
    pub peer: Option<String>,
}

impl From<PeerCred> for Caller {
    fn from(p: PeerCred) -> Self {
        Caller {
            uid: p.uid,
            pid: p.pid,
            peer: None,
        }
    }
}

/// Middleware: records every non-GET request with its peer and outcome (see the module docs).
pub async fn record_mutations(
    State(history): State<Arc<History>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    req: Request,
    next: Next,
) -> Response {
    record(history, peer.into(), req, next).await
}

/// What [`record_mutations`] does, for any kind of caller (the remote listener's too).
pub async fn record(history: Arc<History>, caller: Caller, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let method = parts.method.to_string();
    let path = parts.uri.path().to_string();
    let (request, response) = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => {
            let text = request_text(&bytes);
            let req = Request::from_parts(parts, Body::from(bytes));
            (text, next.run(req).await)
        }
        Err(_) => {
            let e = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body above {MAX_BODY} bytes"),
            );
            (None, axum::response::IntoResponse::into_response(e))
        }
    };
    let (parts, body) = response.into_parts();
    // Answers to mutations are small JSON documents; reading one whole costs little.
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let entry = HistoryEntry {
        id: 0,
        at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        uid: caller.uid,
        pid: caller.pid,
        comm: caller.pid.and_then(command_name),
        method,
        path,
        request,
        status: parts.status.as_u16(),
        outcome: outcome(parts.status, &bytes),
        peer: caller.peer,
    };
    tracing::info!(
        uid = entry.uid, pid = ?entry.pid, comm = ?entry.comm, peer = ?entry.peer,
        method = entry.method, path = entry.path, status = entry.status,
        outcome = entry.outcome, "audit"
    );
    let written = tokio::task::spawn_blocking(move || history.record(&entry)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("writing the audit record: {e}"),
        Err(e) => tracing::error!("writing the audit record: {e}"),
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn request_text(bytes: &Bytes) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(bytes);
    let mut end = text.len().min(MAX_REQUEST_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(text[..end].to_string())
}

/// The command name of `pid`; None if it is gone.
fn command_name(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// `ok` with the ids in the answer (a fault, a run, or a list of them), or the error message.
fn outcome(status: StatusCode, body: &[u8]) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if !status.is_success() {
        // chaosd's `{"error": ".."}`, or the remote listener's Chaos Mesh-style
        // `{"error": true, "message": ".."}`.
        let message = json
            .as_ref()
            .and_then(|v| {
                let text = v
                    .get("error")?
                    .as_str()
                    .or_else(|| v.get("message")?.as_str())?;
                Some(text.to_string())
            })
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        return format!("error: {message}");
    }
    // A fault's or run's `id`, or the `uid` of a Chaos Mesh attack (remote listener).
    let id_of = |v: &serde_json::Value| {
        v.get("id")
            .or_else(|| v.get("uid"))?
            .as_str()
            .map(str::to_string)
    };
    let ids: Vec<String> = match &json {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(id_of).collect(),
        Some(v) => id_of(v).into_iter().collect(),
        None => Vec::new(),
    };
    if ids.is_empty() {
        "ok".to_string()
    } else {
        format!("ok: {}", ids.join(", "))
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<u32>,
}

/// `GET /v1/history?limit=N`.
pub fn routes(history: Arc<History>) -> Router {
    Router::new()
        .route("/v1/history", get(list))
        .with_state(history)
}

async fn list(
    State(history): State<Arc<History>>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Vec<HistoryEntry>>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_LIMIT}, got {limit}"),
        ));
    }
    let read = tokio::task::spawn_blocking(move || history.recent(limit)).await;
    match read {
        Ok(Ok(entries)) => Ok(Json(entries)),
        Ok(Err(e)) => Err(internal(e)),
        Err(e) => Err(internal(e)),
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!("reading the audit database: {e}");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "reading the audit database failed; see the daemon's log",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> HistoryEntry {
        HistoryEntry {
            id: 0,
            at: "2026-01-01T00:00:00.000Z".into(),
            uid: 0,
            pid: Some(42),
            comm: Some("chaosctl".into()),
            method: "DELETE".into(),
            path: path.into(),
            request: None,
            status: 200,
            outcome: "ok".into(),
            peer: None,
        }
    }

    #[test]
    fn records_come_back_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = History::open(&dir.path().join("h.sqlite")).unwrap();
        db.record(&entry("/v1/faults/a")).unwrap();
        db.record(&entry("/v1/faults/b")).unwrap();
        let got = db.recent(10).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].path, "/v1/faults/b");
        assert!(got[0].id > got[1].id);
        assert_eq!(got[1].comm.as_deref(), Some("chaosctl"));
        let mut remote = entry("/api/attack/network");
        remote.peer = Some("CN=chaos-mesh from 10.0.0.5:41234".into());
        db.record(&remote).unwrap();
        assert_eq!(db.recent(1).unwrap()[0].peer, remote.peer);
        assert_eq!(db.recent(1).unwrap().len(), 1);
        // Reopening keeps them.
        drop(db);
        let db = History::open(&dir.path().join("h.sqlite")).unwrap();
        assert_eq!(db.recent(10).unwrap().len(), 3);
    }

    #[test]
    fn outcomes_name_ids_or_the_error() {
        assert_eq!(
            outcome(StatusCode::CREATED, br#"{"id":"ab12","kind":"x"}"#),
            "ok: ab12"
        );
        assert_eq!(
            outcome(StatusCode::OK, br#"[{"id":"a"},{"id":"b"}]"#),
            "ok: a, b"
        );
        assert_eq!(outcome(StatusCode::OK, b"[]"), "ok");
        assert_eq!(
            outcome(
                StatusCode::BAD_REQUEST,
                br#"{"error":"refusing the cgroup2 root"}"#
            ),
            "error: refusing the cgroup2 root"
        );
    }
}
