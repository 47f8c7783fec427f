//! The fault registry: validates requests, applies faults completely or not at all, and
//! reverts each at its deadline, on request, or at shutdown.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    sync::{Mutex, watch},
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::{
    api::{
        DryRunInfo, DryRunTarget, FaultInfo, FaultState, InjectRequest, ResolvedTarget, StatusInfo,
        TargetSelector,
    },
    config::{FaultsConfig, PolicyConfig},
    engine::journal::Journal,
    engine::metrics::Metrics,
    error::{Error, RequestError},
    faults::{
        ActiveFault, ApplyContext, FaultKinds, TargetRule,
        kernel::heartbeat::{BeatHold, Heartbeat},
    },
    host::cgroup,
};

/// Ended faults kept for `show` after they end.
const ENDED_KEPT: usize = 256;

pub struct Registry {
    kinds: FaultKinds,
    heartbeat: Heartbeat,
    journal: Arc<Journal>,
    faults_cfg: FaultsConfig,
    policy: PolicyConfig,
    cgroup2_mount: PathBuf,
    started: Instant,
    metrics: Metrics,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    active: BTreeMap<String, Entry>,
    /// Ids of injects being applied: they count against the concurrency limit.
    applying: HashSet<String>,
    ended: VecDeque<FaultInfo>,
}

struct Entry {
    info: FaultInfo,
    /// Taken out while the fault is being reverted (on a blocking thread).
    fault: Option<Box<dyn ActiveFault>>,
    timer: Option<JoinHandle<()>>,
    /// While the fault is being reverted: the end's outcome, for a request that comes to end
    /// it meanwhile (a recover racing the deadline waits and answers with it).
    ending: Option<EndWatch>,
    /// Keeps the heartbeat going until the fault has ended.
    _beat: BeatHold,
}

/// The outcome of an end under way: the ended fault, or why its revert failed.
type EndWatch = watch::Receiver<Option<Result<FaultInfo, String>>>;

impl Registry {
    pub fn new(
        kinds: FaultKinds,
        heartbeat: Heartbeat,
        journal: Journal,
        faults_cfg: FaultsConfig,
        policy: PolicyConfig,
        cgroup2_mount: PathBuf,
    ) -> Arc<Self> {
        Arc::new(Registry {
            kinds,
            heartbeat,
            journal: Arc::new(journal),
            faults_cfg,
            policy,
            cgroup2_mount,
            started: Instant::now(),
            metrics: Metrics::default(),
            inner: Mutex::default(),
        })
    }

    /// Validates, journals, applies and arms the rollback timer. On any error nothing stays
    /// applied. Kernel work runs on a blocking thread and the registry lock is never held
    /// across it, so listing, status and metrics answer while an inject applies.
    pub async fn inject(self: &Arc<Self>, req: InjectRequest) -> Result<FaultInfo, Error> {
        let started = Instant::now();
        let duration = crate::engine::request::check_inject(&req, &self.faults_cfg)?;
        let targets = self.resolve_targets(&req)?;
        self.prepare_kind(&req.fault).await?;
        self.kinds.check_available(&req.fault)?;

        // One-shot faults end at once: they hold no slot (the kind decides which are).
        let one_shot = FaultKinds::one_shot(&req.fault);
        let id = {
            let mut inner = self.inner.lock().await;
            if !one_shot {
                self.policy
                    .check_room(inner.active.len() + inner.applying.len())?;
            }
            let id = new_id(|id| {
                inner.active.contains_key(id)
                    || inner.applying.contains(id)
                    || inner.ended.iter().any(|f| f.id == id)
            });
            inner.applying.insert(id.clone());
            id
        };
        let now = SystemTime::now();
        let mut info = FaultInfo {
            id: id.clone(),
            kind: req.fault.kind().to_string(),
            fault: req.fault.clone(),
            targets,
            state: FaultState::Active,
            duration: crate::engine::request::written_duration(req.duration.as_deref(), duration),
            duration_ms: duration.as_millis() as u64,
            created_at: rfc3339(now),
            expires_at: rfc3339(now + duration),
            ended_at: None,
            counters: Default::default(),
            op_counters: Vec::new(),
            netns: Vec::new(),
            knobs: Vec::new(),
            limits: Vec::new(),
            outcome: None,
        };
        // Before anything is journaled or written: the guardian and the kernel then see a
        // fresh beat from the fault's first moment.
        let beat = self.heartbeat.hold();
        let applied = self.apply_off_runtime(&info, duration).await;
        let mut inner = self.inner.lock().await;
        inner.applying.remove(&id);
        let fault = applied?;
        info.counters = fault.counters();
        info.op_counters = fault.op_counters();
        info.netns = fault.netns();
        info.knobs = fault.knobs();
        info.limits = fault.limits();
        let timer = (!one_shot).then(|| self.arm_timer(id.clone(), duration));
        info!(fault_id = %id, kind = info.kind, targets = ?info.targets.iter().map(|t| &t.cgroup).collect::<Vec<_>>(),
              duration = info.duration, duration_ms = info.duration_ms, "fault injected");
        inner.active.insert(
            id.clone(),
            Entry {
                info: info.clone(),
                fault: Some(fault),
                timer,
                ending: None,
                _beat: beat,
            },
        );
        self.metrics.observe_inject(&info.kind, started.elapsed());
        if one_shot {
            drop(inner);
            return self.end(&id, FaultState::Completed, false).await;
        }
        Ok(info)
    }

    /// Loads the programs the kind needs (its probe), on a blocking thread.
    async fn prepare_kind(&self, spec: &crate::api::FaultSpec) -> Result<(), Error> {
        let kinds = self.kinds.clone();
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || kinds.prepare(&spec))
            .await
            .map_err(|e| Error::Worker {
                op: "loading programs",
                reason: e.to_string(),
            })
    }

    /// Journals and applies `info`'s fault on a blocking thread, within the apply timeout. A
    /// late apply is rolled back when it finishes and the inject is refused.
    async fn apply_off_runtime(
        &self,
        info: &FaultInfo,
        duration: Duration,
    ) -> Result<Box<dyn ActiveFault>, Error> {
        let kinds = self.kinds.clone();
        let journal = Arc::clone(&self.journal);
        let task_info = info.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            journal.record(&task_info)?;
            let journal_knobs = |knobs: &[crate::api::KnobChange]| {
                let mut with_knobs = task_info.clone();
                with_knobs.knobs = knobs.to_vec();
                journal.record(&with_knobs)
            };
            let journal_limits = |limits: &[crate::api::LimitChange]| {
                let mut with_limits = task_info.clone();
                with_limits.limits = limits.to_vec();
                journal.record(&with_limits)
            };
            let ctx = ApplyContext {
                fault_id: &task_info.id,
                targets: &task_info.targets,
                duration,
                journal_knobs: &journal_knobs,
                journal_limits: &journal_limits,
            };
            let span =
                tracing::info_span!("fault", fault_id = %task_info.id, kind = task_info.kind);
            span.in_scope(|| kinds.apply(&task_info.fault, &ctx))
                .inspect_err(|_| journal.remove(&task_info.id))
                .map_err(Error::from)
        });
        let limit = self.faults_cfg.apply_timeout();
        let joined = match tokio::time::timeout(limit, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                let (id, journal) = (info.id.clone(), Arc::clone(&self.journal));
                tokio::spawn(async move {
                    if let Ok(Ok(fault)) = task.await {
                        let _ = tokio::task::spawn_blocking(move || drop(fault)).await;
                        journal.remove(&id);
                        warn!(fault_id = %id, "rolled back an inject that applied after its time-out");
                    }
                });
                warn!(fault_id = %info.id, kind = info.kind, limit_s = limit.as_secs(), "inject timed out; rolling it back");
                return Err(Error::ApplyTimeout {
                    kind: info.kind.clone(),
                    limit_s: limit.as_secs(),
                });
            }
        };
        let applied = joined.map_err(|e| {
            self.journal.remove(&info.id);
            Error::Worker {
                op: "applying the fault",
                reason: e.to_string(),
            }
        })?;
        applied.inspect_err(|e| warn!(fault_id = %info.id, kind = info.kind, "inject failed: {e}"))
    }

    /// The table with `kind`'s row only, probing only its programs (None: no such kind).
    pub async fn capability(
        &self,
        kind: &str,
    ) -> Option<crate::faults::capabilities::CapabilitiesInfo> {
        let group = crate::faults::kinds::named(kind)?.programs;
        if let Some(group) = group {
            let kinds = self.kinds.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || kinds.probe(group)).await {
                warn!("probing {group:?}: {e}");
            }
        }
        let mut table = crate::faults::capabilities::current();
        table.kinds.retain(|k| k.kind == kind);
        Some(table)
    }

    /// Probes every kind's programs (for `doctor`), or only `kind`'s, on a blocking thread.
    pub async fn capabilities(
        &self,
        kind: Option<&str>,
    ) -> crate::faults::capabilities::CapabilitiesInfo {
        let kinds = self.kinds.clone();
        let kind = kind.map(str::to_owned);
        let probe = move || match kind {
            // Only its group: loading all of them takes half a minute under emulation.
            Some(kind) => kinds.probe_kind(&kind),
            None => kinds.probe_all(),
        };
        if let Err(e) = tokio::task::spawn_blocking(probe).await {
            warn!("probing the program groups: {e}");
        }
        crate::faults::capabilities::current()
    }

    /// Checks `req` as [`Registry::inject`] would (duration, parameters, this host's support
    /// for the kind, targets) without applying anything; returns the resolved targets.
    pub async fn check(&self, req: &InjectRequest) -> Result<Vec<ResolvedTarget>, Error> {
        crate::engine::request::check_inject(req, &self.faults_cfg)?;
        let targets = self.resolve_targets(req)?;
        self.prepare_kind(&req.fault).await?;
        self.kinds.check_available(&req.fault)?;
        Ok(targets)
    }

    /// What [`Registry::inject`] would act on, with the processes there now; changes nothing
    /// (the kind's programs may load once, as `doctor` loads them, to know it works here).
    pub async fn dry_run(&self, req: &InjectRequest) -> Result<DryRunInfo, Error> {
        crate::engine::request::check_inject(req, &self.faults_cfg)?;
        let (targets, cover) = self.resolve_targets_and_cover(req)?;
        self.prepare_kind(&req.fault).await?;
        self.kinds.check_available(&req.fault)?;
        let mount = &self.cgroup2_mount;
        let listed = |rel: &str, below: bool| DryRunTarget {
            cgroup: rel.to_string(),
            processes: cgroup::processes_in(mount, rel, below),
        };
        Ok(DryRunInfo {
            kind: req.fault.kind().to_string(),
            targets: targets.iter().map(|t| listed(&t.cgroup, true)).collect(),
            excluded: cover.excluded,
            uncovered: cover.uncovered.iter().map(|c| listed(c, false)).collect(),
        })
    }

    fn resolve_targets(&self, req: &InjectRequest) -> Result<Vec<ResolvedTarget>, RequestError> {
        self.resolve_targets_and_cover(req)
            .map(|(targets, _)| targets)
    }

    fn resolve_targets_and_cover(
        &self,
        req: &InjectRequest,
    ) -> Result<(Vec<ResolvedTarget>, cgroup::HostCover), RequestError> {
        match (FaultKinds::target_rule(&req.fault), req.targets.is_empty()) {
            (TargetRule::Required, true) => return Err(RequestError::NoTargets),
            (TargetRule::Forbidden, false) => {
                return Err(RequestError::TargetsNotAccepted {
                    kind: req.fault.kind(),
                });
            }
            _ => {}
        }
        let max_level = chaosd_common::net::MAX_CGROUP_LEVEL;
        if req.targets.contains(&TargetSelector::Host) {
            return self.resolve_host(req);
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for selector in &req.targets {
            let t = cgroup::resolve(&self.cgroup2_mount, selector, max_level)?;
            self.policy.check_target(&t.cgroup)?;
            if !seen.insert(t.cgroup_id) {
                return Err(RequestError::DuplicateTarget {
                    selector: selector.to_string(),
                    cgroup: t.cgroup,
                });
            }
            out.push(t);
        }
        Ok((out, cgroup::HostCover::default()))
    }

    /// Expands a host-wide target (see [`cgroup::host_cover`]). Kinds that run without a
    /// target (stress) are host-wide without one.
    fn resolve_host(
        &self,
        req: &InjectRequest,
    ) -> Result<(Vec<ResolvedTarget>, cgroup::HostCover), RequestError> {
        if req.targets.len() > 1 {
            return Err(RequestError::HostWithOthers);
        }
        let kind = req.fault.kind();
        if !crate::faults::allows_host(kind) {
            return Err(RequestError::HostNotAllowed { kind });
        }
        if FaultKinds::target_rule(&req.fault) == TargetRule::Optional {
            return Ok((Vec::new(), cgroup::HostCover::default()));
        }
        let keep = crate::engine::policy::Keep {
            own: cgroup::cgroup_of_pid(std::process::id())?,
            init: cgroup::cgroup_of_pid(1).ok(),
        };
        let max_level = chaosd_common::net::MAX_CGROUP_LEVEL as usize;
        let cover = cgroup::host_cover(&self.cgroup2_mount, max_level, &|c| {
            self.policy.host_part(c, &keep)
        });
        // A cgroup removed since the walk is simply not a target.
        let targets: Vec<ResolvedTarget> = cover
            .targets
            .iter()
            .filter_map(|rel| cgroup::Cgroup::open(&self.cgroup2_mount, rel).ok())
            .map(|c| ResolvedTarget {
                selector: TargetSelector::Host,
                cgroup: c.rel,
                cgroup_id: c.id,
            })
            .collect();
        if targets.is_empty() {
            return Err(RequestError::NoHostTargets);
        }
        Ok((targets, cover))
    }

    fn arm_timer(self: &Arc<Self>, id: String, after: Duration) -> JoinHandle<()> {
        let registry = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(registry) = registry.upgrade() {
                info!(fault_id = %id, "fault reached its deadline");
                registry.end(&id, FaultState::Expired, false).await.ok();
            }
        })
    }

    /// Reverts one fault and moves it to the ended list, in a task of its own: a caller that
    /// goes away meanwhile (an HTTP client that disconnects) must not stop an end half-way,
    /// with the fault taken out of its entry and the journal left behind.
    async fn end(
        self: &Arc<Self>,
        id: &str,
        state: FaultState,
        abort_timer: bool,
    ) -> Result<FaultInfo, Error> {
        let (registry, id) = (Arc::clone(self), id.to_string());
        let ending = id.clone();
        tokio::spawn(async move { registry.end_here(&id, state, abort_timer).await })
            .await
            .unwrap_or_else(|_| Err(Error::Ending { id: ending }))
    }

    /// [`Registry::end`]'s work (the revert on a blocking thread, the registry unlocked
    /// meanwhile); not cancel-safe once the fault is taken out of its entry.
    async fn end_here(
        &self,
        id: &str,
        state: FaultState,
        abort_timer: bool,
    ) -> Result<FaultInfo, Error> {
        let started = Instant::now();
        let (done, _) = watch::channel(None);
        let (mut fault, kind) = {
            let mut inner = self.inner.lock().await;
            let entry = inner
                .active
                .get_mut(id)
                .ok_or_else(|| Error::NotFound { id: id.to_string() })?;
            let Some(fault) = entry.fault.take() else {
                let under_way = entry.ending.clone();
                drop(inner);
                return wait_for_end(id, under_way).await;
            };
            if abort_timer && let Some(t) = entry.timer.take() {
                t.abort();
            }
            entry.ending = Some(done.subscribe());
            entry.info.counters = fault.counters();
            entry.info.op_counters = fault.op_counters();
            (fault, entry.info.kind.clone())
        };
        let span = tracing::info_span!("fault", fault_id = %id, kind = kind);
        let journal = Arc::clone(&self.journal);
        let claim_id = id.to_string();
        let reverted = tokio::task::spawn_blocking(move || {
            // The guardian may have ended it while this daemon was stalled: then only release.
            let claim = crate::engine::handoff::claim_for_daemon(journal.dir(), &claim_id);
            let by_guardian = match claim {
                crate::engine::handoff::Claim::Ours => None,
                crate::engine::handoff::Claim::Ended(e) => Some(e),
            };
            let result = span.in_scope(|| match &by_guardian {
                None => fault.revert(),
                Some(_) => fault.release(),
            });
            // Dropped here too: a fault's Drop may still have kernel work to do.
            drop(fault);
            result.map(|()| by_guardian)
        })
        .await
        .unwrap_or_else(|e| {
            Err(crate::error::FaultError::kernel(
                "reverting the fault",
                anyhow::anyhow!("the revert task failed: {e}"),
            ))
        });
        self.metrics
            .observe_recover(&kind, state, started.elapsed());
        let mut inner = self.inner.lock().await;
        let mut entry = inner
            .active
            .remove(id)
            .ok_or_else(|| Error::NotFound { id: id.to_string() })?;
        entry.info.state = state;
        entry.info.ended_at = Some(rfc3339(SystemTime::now()));
        if let Ok(Some(by_guardian)) = &reverted {
            warn!(fault_id = %id, "{}", by_guardian.summary());
            entry.info.state = by_guardian.info.state;
            entry.info.ended_at.clone_from(&by_guardian.info.ended_at);
            entry.info.outcome.clone_from(&by_guardian.info.outcome);
        }
        match &reverted {
            Ok(_) => {
                self.journal.remove(id);
                info!(fault_id = %id, kind = entry.info.kind, state = %state, seen = entry.info.counters.seen,
                      affected = entry.info.counters.affected, "fault reverted");
            }
            // The journal entry stays so a later cleanup can retry.
            Err(e) => warn!(fault_id = %id, "reverting failed: {e}"),
        }
        if inner.ended.len() >= ENDED_KEPT {
            inner.ended.pop_front();
        }
        inner.ended.push_back(entry.info.clone());
        done.send_replace(Some(match &reverted {
            Ok(_) => Ok(entry.info.clone()),
            Err(e) => Err(e.to_string()),
        }));
        reverted?;
        Ok(entry.info)
    }

    /// Lists faults that ended without this daemon (a guardian's or a cleanup's records) as
    /// ended, so `chaosctl list --all` shows them with what was found and done.
    pub async fn adopt_ended(&self, faults: impl IntoIterator<Item = FaultInfo>) {
        let mut inner = self.inner.lock().await;
        for f in faults {
            if inner.ended.len() >= ENDED_KEPT {
                inner.ended.pop_front();
            }
            inner.ended.push_back(f);
        }
    }

    pub async fn recover(self: &Arc<Self>, id: &str) -> Result<FaultInfo, Error> {
        self.end(id, FaultState::Recovered, true).await
    }

    /// Reverts every active fault (emergency stop, shutdown).
    pub async fn recover_all(self: &Arc<Self>, state: FaultState) -> Vec<FaultInfo> {
        let ids: Vec<String> = self.inner.lock().await.active.keys().cloned().collect();
        let mut out = Vec::new();
        for id in ids {
            match self.end(&id, state, true).await {
                Ok(info) => out.push(info),
                Err(Error::NotFound { .. } | Error::Ending { .. }) => {}
                Err(e) => warn!(fault_id = %id, "recover: {e}"),
            }
        }
        out
    }

    pub async fn get(&self, id: &str) -> Result<FaultInfo, Error> {
        let inner = self.inner.lock().await;
        if let Some(e) = inner.active.get(id) {
            return Ok(live_info(e));
        }
        inner
            .ended
            .iter()
            .rev()
            .find(|f| f.id == id)
            .cloned()
            .ok_or_else(|| Error::NotFound { id: id.to_string() })
    }

    /// Active faults, and the recently ended ones too with `include_ended`.
    pub async fn list(&self, include_ended: bool) -> Vec<FaultInfo> {
        let inner = self.inner.lock().await;
        let mut out: Vec<FaultInfo> = inner.active.values().map(live_info).collect();
        if include_ended {
            out.extend(inner.ended.iter().cloned());
        }
        out
    }

    /// The daemon's metrics, for what other layers count (scenario runs).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The `/metrics` exposition: live counters of active faults, frozen ones of ended faults.
    pub async fn metrics_text(&self) -> String {
        let faults = self.list(true).await;
        self.metrics.render(&faults)
    }

    pub async fn status(&self) -> StatusInfo {
        let active = self.inner.lock().await.active.len();
        let net_attached = self.kinds.net_attached.load(Ordering::Relaxed);
        StatusInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs(),
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            cgroup2_mount: self.cgroup2_mount.display().to_string(),
            active_faults: active,
            max_duration_s: self.faults_cfg.max_duration().as_secs(),
            default_duration_s: self.faults_cfg.default_duration.map(|d| d.as_secs()),
            net_programs_attached: net_attached,
        }
    }
}

/// The outcome of an end of fault `id` already under way, once it is known.
async fn wait_for_end(id: &str, under_way: Option<EndWatch>) -> Result<FaultInfo, Error> {
    let ending = || Error::Ending { id: id.to_string() };
    let mut watch = under_way.ok_or_else(ending)?;
    // The end's sender goes only with its outcome sent, or with its task gone (then: Ending).
    let outcome = watch
        .wait_for(Option::is_some)
        .await
        .map_err(|_| ending())?
        .clone();
    match outcome {
        Some(Ok(info)) => Ok(info),
        Some(Err(reason)) => Err(Error::RevertFailed {
            id: id.to_string(),
            reason,
        }),
        None => Err(ending()),
    }
}

/// The entry's info with its counters now; while it is being reverted, those taken just before.
fn live_info(e: &Entry) -> FaultInfo {
    match &e.fault {
        Some(fault) => FaultInfo {
            counters: fault.counters(),
            op_counters: fault.op_counters(),
            ..e.info.clone()
        },
        None => e.info.clone(),
    }
}

/// The request's duration, else the configured default; never zero, never above the maximum.
pub fn resolve_duration(asked: Option<&str>, cfg: &FaultsConfig) -> Result<Duration, RequestError> {
    let d = match asked {
        Some(s) => humantime::parse_duration(s.trim()).map_err(|e| RequestError::BadDuration {
            input: s.to_string(),
            reason: e.to_string(),
        })?,
        None => cfg.default_duration.ok_or(RequestError::MissingDuration)?,
    };
    if d.is_zero() {
        return Err(RequestError::BadDuration {
            input: asked.unwrap_or("0").to_string(),
            reason: "it must be above zero".into(),
        });
    }
    let max = cfg.max_duration();
    if d > max {
        return Err(RequestError::DurationTooLong {
            asked: crate::engine::request::written_duration(asked, d),
            max: humantime::format_duration(max).to_string(),
        });
    }
    Ok(d)
}

fn new_id(taken: impl Fn(&str) -> bool) -> String {
    loop {
        let id = format!("{:08x}", rand::random::<u32>());
        if !taken(&id) {
            return id;
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(default: Option<u64>) -> FaultsConfig {
        FaultsConfig {
            max_duration: Some(Duration::from_secs(3600)),
            default_duration: default.map(Duration::from_secs),
            ..FaultsConfig::default()
        }
    }

    #[test]
    fn duration_is_required_bounded_and_parsed() {
        assert!(matches!(
            resolve_duration(None, &cfg(None)),
            Err(RequestError::MissingDuration)
        ));
        assert_eq!(
            resolve_duration(None, &cfg(Some(30))).unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            resolve_duration(Some("1m30s"), &cfg(None)).unwrap(),
            Duration::from_secs(90)
        );
        assert!(matches!(
            resolve_duration(Some("2h"), &cfg(None)),
            Err(RequestError::DurationTooLong { .. })
        ));
        assert!(matches!(
            resolve_duration(Some("soon"), &cfg(None)),
            Err(RequestError::BadDuration { .. })
        ));
        assert!(matches!(
            resolve_duration(Some("0s"), &cfg(None)),
            Err(RequestError::BadDuration { .. })
        ));
    }

    /// A recover that comes while the deadline's end is under way answers with that end's
    /// outcome, not with "being reverted already".
    #[tokio::test]
    async fn a_second_end_waits_for_the_first_and_shares_its_outcome() {
        use crate::engine::metrics::tests::loss_fault;
        let (done, _) = watch::channel(None);
        let waiter = tokio::spawn(wait_for_end("f1", Some(done.subscribe())));
        tokio::task::yield_now().await;
        done.send_replace(Some(Ok(loss_fault("f1", FaultState::Expired, 4, 2))));
        let info = waiter.await.unwrap().unwrap();
        assert_eq!((info.id.as_str(), info.state), ("f1", FaultState::Expired));

        let (failed, _) = watch::channel(None);
        let waiter = tokio::spawn(wait_for_end("f2", Some(failed.subscribe())));
        failed.send_replace(Some(Err("the kernel said no".into())));
        let e = waiter.await.unwrap().unwrap_err();
        assert!(matches!(e, Error::RevertFailed { .. }), "{e}");
        assert!(e.to_string().contains("the kernel said no"), "{e}");

        let (gone, _) = watch::channel::<Option<Result<FaultInfo, String>>>(None);
        let waiter = tokio::spawn(wait_for_end("f3", Some(gone.subscribe())));
        drop(gone);
        let e = waiter.await.unwrap().unwrap_err();
        assert!(
            matches!(e, Error::Ending { .. }),
            "an end that vanished: {e}"
        );
    }

    /// A fault whose revert waits until the test lets it finish.
    struct HeldRevert {
        started: Option<tokio::sync::oneshot::Sender<()>>,
        finish: std::sync::mpsc::Receiver<()>,
    }

    impl ActiveFault for HeldRevert {
        fn counters(&self) -> crate::api::Counters {
            crate::api::Counters::default()
        }
        fn revert(&mut self) -> Result<(), crate::error::FaultError> {
            if let Some(started) = self.started.take() {
                let _ = started.send(());
            }
            let _ = self.finish.recv();
            Ok(())
        }
    }

    /// A recover whose caller goes away while the revert runs (an HTTP client that
    /// disconnects) still ends the fault: the entry moves to the ended list and its journal
    /// entry goes, instead of staying active with no fault to revert.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_end_whose_caller_goes_away_still_finishes() {
        use crate::engine::metrics::tests::loss_fault;
        let state = tempfile::tempdir().unwrap();
        let (kernel, _logger, beat_map) =
            tokio::task::spawn_blocking(crate::faults::kernel::Kernel::load)
                .await
                .unwrap()
                .expect("loading chaosd's eBPF object (needs root)");
        let kinds = FaultKinds {
            net_attached: kernel.net.attached_flag(),
            kernel: Arc::new(std::sync::Mutex::new(kernel)),
            stress: Default::default(),
        };
        let journal = Journal::open(state.path()).unwrap();
        let registry = Registry::new(
            kinds,
            Heartbeat::new(beat_map, None),
            journal,
            cfg(Some(60)),
            PolicyConfig::default(),
            PathBuf::from("/sys/fs/cgroup"),
        );
        let info = loss_fault("held", FaultState::Active, 0, 0);
        registry.journal.record(&info).unwrap();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (finish, finish_rx) = std::sync::mpsc::channel();
        registry.inner.lock().await.active.insert(
            "held".into(),
            Entry {
                info,
                fault: Some(Box::new(HeldRevert {
                    started: Some(started_tx),
                    finish: finish_rx,
                })),
                timer: None,
                ending: None,
                _beat: registry.heartbeat.hold(),
            },
        );

        // The caller is dropped as soon as the revert has started.
        tokio::select! {
            r = registry.recover("held") => panic!("the revert was held, yet: {r:?}"),
            _ = started => {}
        }
        finish.send(()).unwrap();
        let mut ended = None;
        for _ in 0..200 {
            let info = registry.get("held").await.unwrap();
            if info.state == FaultState::Recovered {
                ended = Some(info);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ended = ended.expect("the fault never ended after its caller went away");
        assert!(ended.ended_at.is_some());
        assert!(registry.inner.lock().await.active.is_empty());
        let left: Vec<_> = std::fs::read_dir(registry.journal.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "journal entries left: {left:?}");
    }
}
