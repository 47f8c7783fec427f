//! The daemon's runs: each runs in a task of its own, so a client that disconnects orphans
//! nothing; its events and report stay in memory, and the report is also written to
//! `<state_dir>/runs/<id>.json`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

use tokio::{sync::watch, task::JoinHandle};

use crate::{
    engine::registry::Registry,
    scenario::{
        ScenarioError, format,
        probes::RunAs,
        report::Report,
        runner::{self, RunContext},
        wire::{Event, EventsPage, Phase, RunEvent, RunInfo, RunRequest, RunState},
    },
};

/// Finished runs kept in memory; older reports are still read from their files.
const FINISHED_KEPT: usize = 256;
/// Events kept per run; past this, periodic probe health events are no longer kept.
const MAX_EVENTS: usize = 20_000;
/// Events returned per page.
const PAGE: usize = 1_000;
/// Longest a client may wait for new events in one request.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// How long shutdown waits for runs to roll back and write their reports.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{source_name}{err}")]
    Invalid {
        source_name: String,
        err: ScenarioError,
    },
    #[error("no run with id {id}")]
    NotFound { id: String },
    #[error("run {id} is still running; its report is ready when it ends (`chaosctl runs`)")]
    NotFinished { id: String },
    #[error(
        "run {id} ({title}) is in progress; wait for it to end or abort it (DELETE /v1/runs/{id})"
    )]
    Busy { id: String, title: String },
}

/// One run as the API sees it; the runner writes to it.
pub struct RunHandle {
    pub id: String,
    pub title: String,
    pub source: Option<String>,
    started: Instant,
    started_at: String,
    log: Mutex<RunLog>,
    /// The number of events so far; followers wait for it to change.
    seq: watch::Sender<u64>,
    /// An abort request and its reason.
    abort: watch::Sender<Option<String>>,
}

struct RunLog {
    events: Vec<RunEvent>,
    phase: Phase,
    active_faults: Vec<String>,
    report: Option<Arc<Report>>,
}

impl RunHandle {
    fn new(id: String, title: String, source: Option<String>) -> Self {
        RunHandle {
            id,
            title,
            source,
            started: Instant::now(),
            started_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            log: Mutex::new(RunLog {
                events: Vec::new(),
                phase: Phase::Preflight,
                active_faults: Vec::new(),
                report: None,
            }),
            seq: watch::Sender::new(0),
            abort: watch::Sender::new(None),
        }
    }

    /// A run of an earlier daemon, known by its report only.
    fn from_report(report: Report) -> Self {
        let handle = RunHandle::new(
            report.id.clone(),
            report.title.clone(),
            report.source.clone(),
        );
        {
            let mut log = handle.lock();
            log.events = report.timeline.clone();
            log.phase = Phase::Done;
            log.report = Some(Arc::new(report));
        }
        handle.seq.send_replace(handle.lock().events.len() as u64);
        handle
    }

    fn lock(&self) -> MutexGuard<'_, RunLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Milliseconds from the run's start to `t`.
    pub fn ms_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.started).as_millis() as u64
    }

    pub fn started_at(&self) -> &str {
        &self.started_at
    }

    pub fn emit(&self, event: Event) {
        let mut log = self.lock();
        let health = matches!(event, Event::ProbeHealth { .. });
        if log.events.len() >= MAX_EVENTS && health {
            return;
        }
        let event = RunEvent {
            seq: log.events.len() as u64 + 1,
            at_ms: self.started.elapsed().as_millis() as u64,
            event,
        };
        if health {
            tracing::debug!(run_id = %self.id, "{event}");
        } else {
            tracing::info!(run_id = %self.id, "{event}");
        }
        let seq = event.seq;
        log.events.push(event);
        drop(log);
        self.seq.send_replace(seq);
    }

    pub fn set_phase(&self, phase: Phase) {
        self.lock().phase = phase;
        self.emit(Event::Phase { phase });
    }

    pub fn set_active_faults(&self, ids: Vec<String>) {
        self.lock().active_faults = ids;
    }

    pub fn events(&self) -> Vec<RunEvent> {
        self.lock().events.clone()
    }

    /// Records the report; the run is finished from here on.
    pub fn finish(&self, report: Report) {
        let mut log = self.lock();
        log.phase = Phase::Done;
        log.active_faults.clear();
        log.report = Some(Arc::new(report));
        let seq = log.events.len() as u64;
        drop(log);
        self.seq.send_replace(seq);
    }

    pub fn abort_requests(&self) -> watch::Receiver<Option<String>> {
        self.abort.subscribe()
    }

    /// Asks the run to abort; the first reason wins.
    pub fn request_abort(&self, reason: &str) {
        self.abort.send_if_modified(|r| {
            if r.is_some() {
                return false;
            }
            *r = Some(reason.to_string());
            true
        });
    }

    pub fn is_finished(&self) -> bool {
        self.lock().report.is_some()
    }

    pub fn report(&self) -> Option<Arc<Report>> {
        self.lock().report.clone()
    }

    pub fn info(&self) -> RunInfo {
        let log = self.lock();
        RunInfo {
            id: self.id.clone(),
            title: self.title.clone(),
            source: self.source.clone(),
            state: if log.report.is_some() {
                RunState::Finished
            } else {
                RunState::Running
            },
            phase: log.phase,
            verdict: log.report.as_ref().map(|r| r.verdict),
            started_at: log
                .report
                .as_ref()
                .map_or_else(|| self.started_at.clone(), |r| r.started_at.clone()),
            ended_at: log.report.as_ref().map(|r| r.ended_at.clone()),
            active_faults: log.active_faults.clone(),
        }
    }

    /// Events after sequence number `after`, waiting up to `wait` for one to come.
    pub async fn events_after(&self, after: u64, wait: Duration) -> EventsPage {
        let mut changes = self.seq.subscribe();
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        loop {
            let page = self.page(after);
            if !page.events.is_empty() || page.finished {
                return page;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.page(after),
            }
        }
    }

    fn page(&self, after: u64) -> EventsPage {
        let log = self.lock();
        let from = (after as usize).min(log.events.len());
        let events: Vec<RunEvent> = log.events[from..].iter().take(PAGE).cloned().collect();
        let next = events.last().map_or(after, |e| e.seq);
        EventsPage {
            finished: log.report.is_some() && next as usize >= log.events.len(),
            events,
            next,
        }
    }
}

/// Every run this daemon knows.
pub struct Runs {
    registry: Arc<Registry>,
    mount: PathBuf,
    dir: PathBuf,
    runs: Mutex<BTreeMap<String, Arc<RunHandle>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Runs {
    /// Loads the reports under `<state_dir>/runs` (a crashed predecessor's run cgroups were
    /// removed before, by `leftovers::clean`).
    pub fn new(registry: Arc<Registry>, mount: PathBuf, state_dir: &Path) -> Arc<Runs> {
        let dir = state_dir.join("runs");
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), "cannot create the reports directory: {e}");
        }
        let mut reports: Vec<Report> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| read_report(&e.path()))
            .collect();
        reports.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        let skip = reports.len().saturating_sub(FINISHED_KEPT);
        let runs = reports
            .into_iter()
            .skip(skip)
            .map(|r| (r.id.clone(), Arc::new(RunHandle::from_report(r))))
            .collect();
        Arc::new(Runs {
            registry,
            mount,
            dir,
            runs: Mutex::new(runs),
            tasks: Mutex::default(),
        })
    }

    fn runs(&self) -> MutexGuard<'_, BTreeMap<String, Arc<RunHandle>>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Validates the scenario and starts running it; one run at a time.
    pub fn start(self: &Arc<Self>, req: RunRequest, run_as: RunAs) -> Result<RunInfo, RunError> {
        let scenario = format::parse(&req.scenario).map_err(|err| RunError::Invalid {
            source_name: req
                .source
                .as_ref()
                .map(|s| format!("{s}: "))
                .unwrap_or_default(),
            err,
        })?;
        let mut runs = self.runs();
        if let Some(busy) = runs.values().find(|r| !r.is_finished()) {
            return Err(RunError::Busy {
                id: busy.id.clone(),
                title: busy.title.clone(),
            });
        }
        let id = loop {
            let id = format!("{:08x}", rand::random::<u32>());
            if !runs.contains_key(&id) && !self.report_path(&id).exists() {
                break id;
            }
        };
        let handle = Arc::new(RunHandle::new(
            id.clone(),
            scenario.title.clone(),
            req.source,
        ));
        runs.insert(id, Arc::clone(&handle));
        evict_finished(&mut runs);
        drop(runs);
        let ctx = RunContext {
            handle: Arc::clone(&handle),
            scenario,
            registry: Arc::clone(&self.registry),
            mount: self.mount.clone(),
            run_as,
            report_path: self.report_path(&handle.id),
        };
        let task = tokio::spawn(runner::execute(ctx));
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
        Ok(handle.info())
    }

    fn report_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Runs, oldest first.
    pub fn list(&self) -> Vec<RunInfo> {
        let mut out: Vec<RunInfo> = self.runs().values().map(|r| r.info()).collect();
        out.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        out
    }

    pub fn get(&self, id: &str) -> Result<Arc<RunHandle>, RunError> {
        if let Some(r) = self.runs().get(id) {
            return Ok(Arc::clone(r));
        }
        // Evicted from memory: its report file.
        let valid_id = id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit());
        valid_id
            .then(|| read_report(&self.report_path(id)))
            .flatten()
            .map(|r| Arc::new(RunHandle::from_report(r)))
            .ok_or_else(|| RunError::NotFound { id: id.to_string() })
    }

    /// Aborts every running run and waits for them to roll back and write their reports.
    pub async fn shutdown(&self) {
        for r in self.runs().values() {
            r.request_abort("the daemon is shutting down");
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(SHUTDOWN_WAIT, t).await.is_err() {
                abort.abort();
            }
        }
    }
}

fn evict_finished(runs: &mut BTreeMap<String, Arc<RunHandle>>) {
    while runs.len() > FINISHED_KEPT {
        let oldest = runs
            .values()
            .filter(|r| r.is_finished())
            .min_by(|a, b| a.started_at.cmp(&b.started_at))
            .map(|r| r.id.clone());
        match oldest {
            Some(id) => runs.remove(&id),
            None => return,
        };
    }
}

fn read_report(path: &Path) -> Option<Report> {
    if path.extension().is_none_or(|e| e != "json") {
        return None;
    }
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(file = %path.display(), "skipping an unreadable run report: {e}");
            None
        }
    }
}

/// Writes `report` to `path` through a temporary file, so a reader never sees half of it.
pub fn write_report(path: &Path, report: &Report) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(report)?)?;
    std::fs::rename(&tmp, path)
}
