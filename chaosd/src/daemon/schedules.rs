//! Schedules: scenarios or single faults the daemon starts on a cron expression (UTC),
//! stored in SQLite next to the audit trail so they survive restarts.
//!
//! Each schedule remembers up to when its due times were handled (`covered_ms`). The ticker
//! sleeps until the next due time of any schedule (at most [`MAX_NAP`], and a change to the
//! schedules wakes it) and handles the due times after that: one due less than [`GRACE`] ago
//! starts; an older one (the daemon was down, or stalled) is recorded as missed and never run
//! late. A due time whose previous run (or fault) is still going is refused, as is one while
//! another run is going. Every outcome is a row in `schedule_fires` and an audit record.

use std::{
    path::Path,
    str::FromStr as _,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use chrono::{DateTime, SecondsFormat, TimeZone as _, Utc};
use croner::Cron;
use rusqlite::{Connection, params};

use crate::{
    api::{
        FaultState, InjectRequest,
        history::HistoryEntry,
        schedule::{Fire, FireOutcome, ScheduleInfo, ScheduleRequest},
    },
    daemon::audit::History,
    engine::registry::Registry,
    scenario::{
        format,
        probes::RunAs,
        runs::{RunError, Runs},
        wire::{RunRequest, RunState},
    },
};

/// A due time handled later than this is missed, not run late (the tick's jitter, a slow
/// start right after it).
pub const GRACE: Duration = Duration::from_secs(2);
/// The longest the ticker sleeps: its sleep is on the monotonic clock, due times are on the
/// wall clock, so a step of the wall clock is noticed within this.
const MAX_NAP: Duration = Duration::from_secs(10);
/// Past a due time when the ticker wakes for it (the due time must have passed).
const PAST_DUE: Duration = Duration::from_millis(5);
/// Missed due times recorded one by one per schedule and tick; beyond, one summary row.
const MAX_MISSED_ROWS: usize = 100;
/// Fires kept per schedule.
const FIRES_KEPT: i64 = 1_000;
/// Fires shown per schedule in lists.
const FIRES_LISTED: u32 = 20;

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "--cron {expr:?} is not a cron expression: {reason}. Give five fields (minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\" for 02:00 UTC daily) or six with seconds first (\"*/30 * * * * *\")"
    )]
    BadCron { expr: String, reason: String },
    #[error("--cron {expr:?} never fires")]
    NeverFires { expr: String },
    #[error("{0}")]
    Invalid(String),
    #[error("no schedule with id {id}")]
    NotFound { id: String },
    #[error("the schedule database: {0}")]
    Db(#[from] rusqlite::Error),
}

/// The parsed expression; five fields or six with seconds first.
pub fn parse_cron(expr: &str) -> Result<Cron, ScheduleError> {
    let cron = Cron::from_str(expr).map_err(|e| ScheduleError::BadCron {
        expr: expr.to_string(),
        reason: e.to_string(),
    })?;
    cron.find_next_occurrence(&Utc::now(), false)
        .map_err(|_| ScheduleError::NeverFires {
            expr: expr.to_string(),
        })?;
    Ok(cron)
}

/// A schedule and the due time to start for it now.
type Due = (Row, DateTime<Utc>);

/// One stored schedule.
#[derive(Clone)]
struct Row {
    id: String,
    cron: String,
    what: String,
    body: String,
    title: String,
    source: Option<String>,
    uid: u32,
    gid: u32,
    paused: bool,
    created_at: String,
    covered_ms: i64,
}

/// The daemon's schedules and the ticker that fires them.
pub struct Schedules {
    db: Mutex<Connection>,
    runs: Arc<Runs>,
    registry: Arc<Registry>,
    history: Arc<History>,
    /// Wakes the ticker when a schedule is added or resumed.
    changed: tokio::sync::Notify,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// How long the ticker sleeps at `now` when `next` is the first due time.
fn nap_until(next: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    let Some(next) = next else { return MAX_NAP };
    (next - now).to_std().unwrap_or_default().min(MAX_NAP) + PAST_DUE
}

/// The time of `ms`, floored to the second: croner keeps a start time's fraction in the
/// occurrences it finds, and cron due times are whole seconds.
fn at_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(ms.div_euclid(1000), 0)
        .single()
        .unwrap_or_default()
}

impl Schedules {
    /// Opens (creating the tables if needed) the schedules in the database at `path`.
    pub fn open(
        path: &Path,
        runs: Arc<Runs>,
        registry: Arc<Registry>,
        history: Arc<History>,
    ) -> Result<Arc<Schedules>, ScheduleError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(2))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schedules (
                 id TEXT PRIMARY KEY,
                 cron TEXT NOT NULL,
                 what TEXT NOT NULL,
                 body TEXT NOT NULL,
                 title TEXT NOT NULL,
                 source TEXT,
                 uid INTEGER NOT NULL,
                 gid INTEGER NOT NULL,
                 paused INTEGER NOT NULL DEFAULT 0,
                 created_at TEXT NOT NULL,
                 covered_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS schedule_fires (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 schedule TEXT NOT NULL,
                 due_at TEXT NOT NULL,
                 at TEXT NOT NULL,
                 outcome TEXT NOT NULL,
                 started TEXT,
                 detail TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS schedule_fires_by_schedule
                 ON schedule_fires (schedule, id);",
        )?;
        Ok(Arc::new(Schedules {
            db: Mutex::new(conn),
            runs,
            registry,
            history,
            changed: tokio::sync::Notify::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks and stores a new schedule; it fires from the next due time on.
    pub fn add(&self, req: ScheduleRequest, owner: RunAs) -> Result<ScheduleInfo, ScheduleError> {
        parse_cron(&req.cron)?;
        let (what, body, title) = match (&req.scenario, &req.fault) {
            (Some(text), None) => {
                let s = format::parse(text).map_err(|e| {
                    let name = req
                        .source
                        .as_deref()
                        .map(|s| format!("{s}: "))
                        .unwrap_or_default();
                    ScheduleError::Invalid(format!("{name}{e}"))
                })?;
                ("scenario", text.clone(), s.title)
            }
            (None, Some(fault)) => {
                crate::faults::FaultKinds::validate(&fault.fault)
                    .map_err(|e| ScheduleError::Invalid(format!("the fault: {e}")))?;
                let body = serde_json::to_string(fault)
                    .map_err(|e| ScheduleError::Invalid(e.to_string()))?;
                ("fault", body, fault.fault.kind().to_string())
            }
            _ => {
                return Err(ScheduleError::Invalid(
                    "give exactly one of scenario (a scenario file's text) and fault (as POST /v1/faults takes it)".into(),
                ));
            }
        };
        let id = format!("s{:07x}", rand::random::<u32>() >> 4);
        let now = Utc::now();
        self.lock().execute(
            "INSERT INTO schedules (id, cron, what, body, title, source, uid, gid, created_at, covered_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![id, req.cron.trim(), what, body, title, req.source, owner.uid, owner.gid, rfc3339(now), now.timestamp_millis()],
        )?;
        self.changed.notify_one();
        self.get(&id)
    }

    fn rows(&self, id: Option<&str>) -> Result<Vec<Row>, ScheduleError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, cron, what, body, title, source, uid, gid, paused, created_at, covered_ms
             FROM schedules WHERE ?1 IS NULL OR id = ?1 ORDER BY created_at, id",
        )?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    cron: r.get(1)?,
                    what: r.get(2)?,
                    body: r.get(3)?,
                    title: r.get(4)?,
                    source: r.get(5)?,
                    uid: r.get(6)?,
                    gid: r.get(7)?,
                    paused: r.get(8)?,
                    created_at: r.get(9)?,
                    covered_ms: r.get(10)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn fires(&self, id: &str, limit: u32) -> Result<Vec<Fire>, ScheduleError> {
        self.fires_where(id, false, limit)
    }

    /// The newest `limit` fires of `id`, newest first; only those that started something if
    /// `started_only`.
    fn fires_where(
        &self,
        id: &str,
        started_only: bool,
        limit: u32,
    ) -> Result<Vec<Fire>, ScheduleError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT due_at, at, outcome, started, detail FROM schedule_fires
             WHERE schedule = ?1 AND (?3 = 0 OR outcome = 'started') ORDER BY id DESC LIMIT ?2",
        )?;
        let fires = stmt
            .query_map(params![id, limit, started_only], |r| {
                let outcome: String = r.get(2)?;
                Ok(Fire {
                    due_at: r.get(0)?,
                    at: r.get(1)?,
                    outcome: match outcome.as_str() {
                        "started" => FireOutcome::Started,
                        "missed" => FireOutcome::Missed,
                        _ => FireOutcome::Refused,
                    },
                    started: r.get(3)?,
                    detail: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(fires)
    }

    fn info(&self, row: &Row, fires: u32) -> Result<ScheduleInfo, ScheduleError> {
        let next_due = (!row.paused)
            .then(|| parse_cron(&row.cron).ok())
            .flatten()
            .and_then(|c| c.find_next_occurrence(&at_ms(row.covered_ms), false).ok())
            .map(rfc3339);
        Ok(ScheduleInfo {
            id: row.id.clone(),
            cron: row.cron.clone(),
            what: row.what.clone(),
            title: row.title.clone(),
            source: row.source.clone(),
            paused: row.paused,
            uid: row.uid,
            created_at: row.created_at.clone(),
            next_due,
            fires: self.fires(&row.id, fires)?,
        })
    }

    pub fn list(&self) -> Result<Vec<ScheduleInfo>, ScheduleError> {
        self.rows(None)?
            .iter()
            .map(|r| self.info(r, FIRES_LISTED))
            .collect()
    }

    /// One schedule with every kept fire.
    pub fn get(&self, id: &str) -> Result<ScheduleInfo, ScheduleError> {
        let row = self
            .rows(Some(id))?
            .pop()
            .ok_or_else(|| ScheduleError::NotFound { id: id.to_string() })?;
        self.info(&row, FIRES_KEPT as u32)
    }

    /// Pauses or resumes. Due times while paused are skipped (not missed): resuming covers
    /// up to now.
    pub fn set_paused(&self, id: &str, paused: bool) -> Result<ScheduleInfo, ScheduleError> {
        let changed = self.lock().execute(
            "UPDATE schedules SET paused = ?2, covered_ms = MAX(covered_ms, ?3) WHERE id = ?1",
            params![id, paused, Utc::now().timestamp_millis()],
        )?;
        if changed == 0 {
            return Err(ScheduleError::NotFound { id: id.to_string() });
        }
        self.changed.notify_one();
        self.get(id)
    }

    pub fn remove(&self, id: &str) -> Result<ScheduleInfo, ScheduleError> {
        let info = self.get(id)?;
        let conn = self.lock();
        conn.execute("DELETE FROM schedules WHERE id = ?1", [id])?;
        conn.execute("DELETE FROM schedule_fires WHERE schedule = ?1", [id])?;
        Ok(info)
    }

    /// Fires what is due, sleeping in between until the next due time, until the task is
    /// aborted.
    pub async fn tick_forever(self: Arc<Self>) {
        loop {
            let this = Arc::clone(&self);
            let due = tokio::task::spawn_blocking(move || this.collect_due(Utc::now())).await;
            let mut next = None;
            match due {
                Ok(Ok((due, next_due))) => {
                    next = next_due;
                    for (row, due_at) in due {
                        Arc::clone(&self).fire(row, due_at).await;
                    }
                }
                Ok(Err(e)) => tracing::warn!("schedules: {e}"),
                Err(e) => tracing::warn!("schedules: the tick failed: {e}"),
            }
            let nap = nap_until(next, Utc::now());
            tokio::select! {
                () = tokio::time::sleep(nap) => {}
                () = self.changed.notified() => {}
            }
        }
    }

    /// Records missed due times, advances every schedule's coverage to `now` and returns the
    /// due times to start now (at most one per schedule: the latest within [`GRACE`]), and
    /// the first due time of any schedule after `now`.
    fn collect_due(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Due>, Option<DateTime<Utc>>), ScheduleError> {
        let mut out = Vec::new();
        let mut first_next: Option<DateTime<Utc>> = None;
        for row in self.rows(None)? {
            let covered = at_ms(row.covered_ms);
            let mut due_times = Vec::new();
            if !row.paused
                && let Ok(cron) = parse_cron(&row.cron)
            {
                let mut t = covered;
                while let Ok(next) = cron.find_next_occurrence(&t, false) {
                    if next > now {
                        first_next = Some(first_next.map_or(next, |f| f.min(next)));
                        break;
                    }
                    due_times.push(next);
                    t = next;
                }
            }
            self.lock().execute(
                "UPDATE schedules SET covered_ms = ?2 WHERE id = ?1",
                params![row.id, now.timestamp_millis()],
            )?;
            let grace = chrono::Duration::from_std(GRACE).unwrap_or_default();
            let start = due_times.last().copied().filter(|d| now - *d <= grace);
            let missed = &due_times[..due_times.len() - usize::from(start.is_some())];
            self.record_missed(&row, missed, now)?;
            if let Some(d) = start {
                out.push((row, d));
            }
        }
        Ok((out, first_next))
    }

    fn record_missed(
        &self,
        row: &Row,
        missed: &[DateTime<Utc>],
        now: DateTime<Utc>,
    ) -> Result<(), ScheduleError> {
        for due in missed.iter().take(MAX_MISSED_ROWS) {
            self.record(row, *due, now, FireOutcome::Missed, None, format!(
                "not run: chaosd was not running (or not ticking) at the due time; a missed run is not started late (grace {} s)",
                GRACE.as_secs()
            ))?;
        }
        if missed.len() > MAX_MISSED_ROWS {
            let last = missed[missed.len() - 1];
            self.record(
                row,
                last,
                now,
                FireOutcome::Missed,
                None,
                format!(
                    "and {} more due times missed up to this one",
                    missed.len() - MAX_MISSED_ROWS
                ),
            )?;
        }
        Ok(())
    }

    /// Starts one due time, unless its previous one is still going.
    /// Database work off the async runtime; `None` if the blocking task failed.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Schedules) -> T + Send + 'static,
    ) -> Option<T> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .inspect_err(|e| tracing::warn!("schedules: a database task failed: {e}"))
            .ok()
    }

    async fn fire(self: Arc<Self>, row: Row, due_at: DateTime<Utc>) {
        let now = Utc::now();
        let id = row.id.clone();
        let last = self
            .blocking(move |s| s.last_started(&id))
            .await
            .and_then(Result::ok)
            .flatten();
        let (outcome, started, detail) = match self.previous_still_going(&row, last).await {
            Some(detail) => (FireOutcome::Refused, None, detail),
            None => match self.start(&row).await {
                Ok((id, detail)) => (FireOutcome::Started, Some(id), detail),
                Err(e) => (FireOutcome::Refused, None, e),
            },
        };
        let id = row.id.clone();
        let recorded = self
            .blocking(move |s| s.record(&row, due_at, now, outcome, started, detail))
            .await;
        if let Some(Err(e)) = recorded {
            tracing::warn!(schedule = %id, "recording a fire: {e}");
        }
    }

    /// The latest fire of schedule `id` that started something.
    fn last_started(&self, id: &str) -> Result<Option<Fire>, ScheduleError> {
        Ok(self.fires_where(id, true, 1)?.pop())
    }

    /// Why the previous start (`last`) of `row` is still going, if it is.
    async fn previous_still_going(&self, row: &Row, last: Option<Fire>) -> Option<String> {
        let last = last?;
        let id = last.started.clone()?;
        let going = match row.what.as_str() {
            "scenario" => self
                .runs
                .get(&id)
                .is_ok_and(|r| r.info().state == RunState::Running),
            _ => self
                .registry
                .get(&id)
                .await
                .is_ok_and(|f| f.state == FaultState::Active),
        };
        going.then(|| {
            format!(
                "overlap refused: its previous {} {id} (due {}) is still going",
                row.what, last.due_at
            )
        })
    }

    async fn start(&self, row: &Row) -> Result<(String, String), String> {
        let run_as = RunAs {
            uid: row.uid,
            gid: row.gid,
        };
        if row.what == "scenario" {
            let source = format!(
                "schedule {}{}",
                row.id,
                row.source
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            );
            let req = RunRequest {
                scenario: row.body.clone(),
                source: Some(source),
            };
            return match self.runs.start(req, run_as) {
                Ok(info) => Ok((
                    info.id.clone(),
                    format!(
                        "run {} started; its report: chaosctl report {}",
                        info.id, info.id
                    ),
                )),
                Err(e @ RunError::Busy { .. }) => {
                    Err(format!("refused: another run is going: {e}"))
                }
                Err(e) => Err(format!("refused: {e}")),
            };
        }
        let req: InjectRequest =
            serde_json::from_str(&row.body).map_err(|e| format!("the stored fault: {e}"))?;
        match self.registry.inject(req).await {
            Ok(info) => Ok((
                info.id.clone(),
                format!("fault {} injected; chaosctl show {}", info.id, info.id),
            )),
            Err(e) => Err(format!("refused: {e}")),
        }
    }

    /// A row in `schedule_fires` and a record in the audit trail.
    fn record(
        &self,
        row: &Row,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
        outcome: FireOutcome,
        started: Option<String>,
        detail: String,
    ) -> Result<(), ScheduleError> {
        let (due_s, now_s) = (rfc3339(due_at), rfc3339(now));
        match outcome {
            FireOutcome::Started => tracing::info!(schedule = %row.id, due_at = %due_s, "{detail}"),
            _ => tracing::warn!(schedule = %row.id, due_at = %due_s, %outcome, "{detail}"),
        }
        {
            let conn = self.lock();
            conn.execute(
                "INSERT INTO schedule_fires (schedule, due_at, at, outcome, started, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![row.id, due_s, now_s, outcome.to_string(), started, detail],
            )?;
            let newest = conn.last_insert_rowid();
            conn.execute(
                "DELETE FROM schedule_fires WHERE schedule = ?1 AND id <= ?2 - ?3",
                params![row.id, newest, FIRES_KEPT],
            )?;
        }
        let entry = HistoryEntry {
            id: 0,
            at: now_s,
            uid: row.uid,
            pid: None,
            comm: Some("chaosd-schedule".into()),
            method: "SCHEDULE".into(),
            path: format!("/v1/schedules/{}", row.id),
            request: Some(format!("{} {:?} due {due_s}", row.what, row.title)),
            status: match outcome {
                FireOutcome::Started => 201,
                FireOutcome::Missed => 0,
                FireOutcome::Refused => 409,
            },
            outcome: format!("{outcome}: {detail}"),
            peer: None,
        };
        if let Err(e) = self.history.record(&entry) {
            tracing::warn!(schedule = %row.id, "auditing a fire: {e}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticker_sleeps_until_just_past_the_next_due_time_and_never_long() {
        let now = at_ms(1_700_000_000_000);
        let soon = now + chrono::Duration::milliseconds(1_500);
        assert_eq!(
            nap_until(Some(soon), now),
            Duration::from_millis(1_500) + PAST_DUE
        );
        let late = now - chrono::Duration::seconds(3);
        assert_eq!(nap_until(Some(late), now), PAST_DUE);
        let far = now + chrono::Duration::hours(5);
        assert_eq!(nap_until(Some(far), now), MAX_NAP + PAST_DUE);
        assert_eq!(nap_until(None, now), MAX_NAP);
    }

    #[test]
    fn cron_expressions_parse_or_say_why() {
        assert!(parse_cron("0 2 * * *").is_ok());
        assert!(parse_cron("*/5 * * * * *").is_ok(), "seconds first");
        let e = parse_cron("0 25 * * *").unwrap_err().to_string();
        assert!(
            e.contains("\"0 25 * * *\"") && e.contains("five fields"),
            "{e}"
        );
        assert!(parse_cron("every night").is_err());
        assert!(parse_cron("").is_err());
    }
}
