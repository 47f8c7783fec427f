//! One run of a scenario, start to report:
//!
//! 1. **preflight**: start the services, check every step as `POST /v1/faults` would (targets,
//!    parameters, this host's support for the kind, duration) without applying it, check the
//!    blast radius on the resolved cgroups, and wait for every probe to pass once;
//! 2. **baseline**: the steady state must hold before anything is injected;
//! 3. **inject**: steps start and end on schedule through the fault registry (so each fault has
//!    its own deadline and journal entry, whatever happens to the run), while abort rules watch
//!    the probes;
//! 4. **rollback**: every fault of the run still in force is reverted;
//! 5. **recovery**: the time until every probe passes `recovery_confirm` times in a row;
//! 6. the report, in memory and as `<state_dir>/runs/<id>.json`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::{mpsc, watch};

use crate::{
    api::{InjectRequest, TargetSelector},
    engine::registry::Registry,
    error::Error,
    scenario::{
        format::Scenario,
        probes::{self, Prepared, ProbeTasks, RuleSample, RunAs, Sample},
        report::{
            AbortFired, CheckPoint, MAX_SERIES, PhaseSpan, PhaseStats, ProbeReport, Report,
            StepReport, percent,
        },
        runs::{RunHandle, write_report},
        service::{self, RunCgroup, RunningService},
        wire::{Event, Phase, Verdict},
    },
};

/// How often each probe's health is reported while a run goes on.
const HEALTH_EVERY: Duration = Duration::from_secs(1);

pub struct RunContext {
    pub handle: Arc<RunHandle>,
    pub scenario: Scenario,
    pub registry: Arc<Registry>,
    pub mount: PathBuf,
    pub run_as: RunAs,
    pub report_path: PathBuf,
}

/// Runs the scenario to its end and records the report.
pub async fn execute(ctx: RunContext) {
    let registry = Arc::clone(&ctx.registry);
    registry.metrics().run_started();
    let mut runner = Runner::new(ctx);
    let (verdict, reason) = runner.run().await;
    runner.finish(verdict, reason);
    // The wire name (snake_case) as the label: `not_recovered`, `preflight_failed`.
    registry
        .metrics()
        .run_finished(&verdict.to_string().replace(' ', "_"));
}

/// Why a run stopped before injecting: a failed preflight, or an abort.
enum Stop {
    Preflight(String),
    Abort(String),
}

/// A probe outcome, filed under the phase its check started in.
struct Recorded {
    started: Instant,
    phase: Phase,
    latency: Duration,
    ok: bool,
}

/// Checks since a probe's last health event.
#[derive(Default)]
struct Health {
    latencies_ms: Vec<f64>,
    passed: u64,
    last_error: Option<String>,
}

struct Runner {
    ctx: RunContext,
    /// When each phase began, in order.
    phase_starts: Vec<(Phase, Instant)>,
    samples: Vec<Vec<Recorded>>,
    sample_tx: mpsc::Sender<Sample>,
    sample_rx: mpsc::Receiver<Sample>,
    probe_tasks: Option<ProbeTasks>,
    rule_tx: mpsc::Sender<RuleSample>,
    rule_rx: mpsc::Receiver<RuleSample>,
    rule_tasks: Option<ProbeTasks>,
    /// The `[[abort.prometheus]]` rule that fired, once one has.
    rule_fired: Option<AbortFired>,
    abort_rx: watch::Receiver<Option<String>>,
    health: Vec<Health>,
    next_health: Instant,
    /// Declared before `run_cgroup`: services go first when dropped.
    services: Vec<RunningService>,
    run_cgroup: Option<RunCgroup>,
    requests: Vec<InjectRequest>,
    steps: Vec<StepReport>,
    /// Faults in force: step index → fault id.
    active: BTreeMap<usize, String>,
    inject_start: Option<Instant>,
    rollback_end: Option<Instant>,
    abort_reason: Option<String>,
    rollback_failed: bool,
}

impl Runner {
    fn new(ctx: RunContext) -> Self {
        let probes = ctx.scenario.steady_state.probes.len();
        let (sample_tx, sample_rx) = mpsc::channel(256);
        let (rule_tx, rule_rx) = mpsc::channel(64);
        let steps = ctx
            .scenario
            .steps
            .iter()
            .map(|s| StepReport {
                name: s.name.clone(),
                kind: s.fault.kind().to_string(),
                cgroups: Vec::new(),
                planned_at_ms: s.at.as_millis() as u64,
                planned_duration_ms: s.duration.as_millis() as u64,
                fault_id: None,
                injected_ms: None,
                reverted_ms: None,
                outcome: "not started".into(),
            })
            .collect();
        Runner {
            abort_rx: ctx.handle.abort_requests(),
            phase_starts: Vec::new(),
            samples: (0..probes).map(|_| Vec::new()).collect(),
            sample_tx,
            sample_rx,
            probe_tasks: None,
            rule_tx,
            rule_rx,
            rule_tasks: None,
            rule_fired: None,
            health: (0..probes).map(|_| Health::default()).collect(),
            next_health: Instant::now() + HEALTH_EVERY,
            services: Vec::new(),
            run_cgroup: None,
            requests: Vec::new(),
            steps,
            active: BTreeMap::new(),
            inject_start: None,
            rollback_end: None,
            abort_reason: None,
            rollback_failed: false,
            ctx,
        }
    }

    async fn run(&mut self) -> (Verdict, String) {
        match self.before_injection().await {
            Ok(()) => {}
            Err(Stop::Preflight(reason)) => return (Verdict::PreflightFailed, reason),
            Err(Stop::Abort(reason)) => {
                self.abort_reason = Some(reason.clone());
                return (Verdict::Aborted, format!("{reason}; nothing was injected"));
            }
        }
        if let Err(reason) = self.inject().await {
            self.abort_reason = Some(reason);
        }
        self.rollback().await;
        let recovery = self.recovery().await;
        self.verdict(recovery)
    }

    fn set_phase(&mut self, phase: Phase) {
        self.phase_starts.push((phase, Instant::now()));
        self.ctx.handle.set_phase(phase);
    }

    fn phase_of(&self, t: Instant) -> Phase {
        self.phase_starts
            .iter()
            .rev()
            .find(|(_, start)| *start <= t)
            .map_or(Phase::Preflight, |(p, _)| *p)
    }

    // ---- preflight and baseline ----

    async fn before_injection(&mut self) -> Result<(), Stop> {
        self.set_phase(Phase::Preflight);
        self.start_services().map_err(Stop::Preflight)?;
        self.check_steps().await.map_err(Stop::Preflight)?;
        self.start_probes().map_err(Stop::Preflight)?;
        let warmup = self.ctx.scenario.steady_state.warmup;
        if !self
            .wait(Instant::now() + warmup, Runner::all_passed_once)
            .await
            .map_err(Stop::Abort)?
        {
            return Err(Stop::Preflight(self.never_passed(warmup)));
        }
        self.set_phase(Phase::Baseline);
        let baseline = self.ctx.scenario.steady_state.baseline;
        self.wait(Instant::now() + baseline, |_| false)
            .await
            .map_err(Stop::Abort)?;
        self.baseline_holds().map_err(Stop::Preflight)
    }

    /// Starts the probes and the abort rules' queries, once their TLS settings are loaded.
    fn start_probes(&mut self) -> Result<(), String> {
        let scenario = &self.ctx.scenario;
        let prepared = scenario
            .steady_state
            .probes
            .iter()
            .map(Prepared::new)
            .collect::<Result<Vec<_>, _>>()?;
        let rules_tls = scenario
            .abort
            .queries
            .iter()
            .map(|r| {
                probes::tls_for(&r.query)
                    .transpose()
                    .map_err(|e| format!("abort rule {}: {e}", r.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.probe_tasks = Some(probes::start(
            &prepared,
            self.ctx.run_as,
            self.sample_tx.clone(),
        ));
        self.rule_tasks = Some(probes::start_rules(
            &scenario.abort.queries,
            &rules_tls,
            self.rule_tx.clone(),
        ));
        Ok(())
    }

    fn start_services(&mut self) -> Result<(), String> {
        if self.ctx.scenario.services.is_empty() {
            return Ok(());
        }
        let runs_dir = self
            .ctx
            .report_path
            .parent()
            .unwrap_or(&self.ctx.report_path);
        let parent = RunCgroup::create(&self.ctx.mount, &self.ctx.handle.id, runs_dir)
            .map_err(|e| format!("creating the run's cgroup: {e}"))?;
        for spec in &self.ctx.scenario.services {
            let svc = service::start(&parent, spec, self.ctx.run_as)
                .map_err(|e| format!("starting service {:?}: {e}", spec.name))?;
            self.ctx.handle.emit(Event::ServiceStarted {
                service: svc.name.clone(),
                cgroup: svc.cgroup().to_string(),
                pid: svc.pid,
            });
            self.services.push(svc);
        }
        self.run_cgroup = Some(parent);
        Ok(())
    }

    fn selector(&self, name: &str) -> TargetSelector {
        match self.ctx.scenario.target(name) {
            Some(sel) => sel.clone(),
            None => TargetSelector::Cgroup(
                self.services
                    .iter()
                    .find(|s| s.name == name)
                    .map(|s| s.cgroup().to_string())
                    .unwrap_or_default(),
            ),
        }
    }

    /// Every step checked as the registry would inject it, and the blast radius on the
    /// cgroups the targets resolve to.
    async fn check_steps(&mut self) -> Result<(), String> {
        let mut cgroups = BTreeSet::new();
        for (i, step) in self.ctx.scenario.steps.iter().enumerate() {
            let req = InjectRequest {
                fault: step.fault.clone(),
                targets: step.targets.iter().map(|t| self.selector(t)).collect(),
                duration: Some(format!("{}ms", step.duration.as_millis())),
            };
            let resolved = self
                .ctx
                .registry
                .check(&req)
                .await
                .map_err(|e| format!("step {:?}: {e}", step.name))?;
            self.steps[i].cgroups = resolved.iter().map(|t| t.cgroup.clone()).collect();
            cgroups.extend(resolved.into_iter().map(|t| t.cgroup));
            self.requests.push(req);
        }
        match self.ctx.scenario.blast_radius.max_targets {
            Some(max) if cgroups.len() > max as usize => Err(format!(
                "the steps' targets resolve to {} cgroups ({}), above max_targets = {max}",
                cgroups.len(),
                cgroups.into_iter().collect::<Vec<_>>().join(", ")
            )),
            _ => Ok(()),
        }
    }

    fn all_passed_once(&self) -> bool {
        self.samples.iter().all(|s| s.iter().any(|r| r.ok))
    }

    fn never_passed(&self, warmup: Duration) -> String {
        let probes = &self.ctx.scenario.steady_state.probes;
        let failing: Vec<String> = probes
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.samples[*i].iter().any(|r| r.ok))
            .map(|(i, p)| {
                let last = self.health[i]
                    .last_error
                    .as_deref()
                    .unwrap_or("no check finished");
                format!("{} ({last})", p.name)
            })
            .collect();
        format!(
            "the steady state never held before injecting: within warmup {} no pass of {}",
            humantime::format_duration(warmup),
            failing.join(", ")
        )
    }

    fn baseline_holds(&self) -> Result<(), String> {
        for (probe, spec) in self.ctx.scenario.steady_state.probes.iter().enumerate() {
            let checks = self.checks(probe, |p| p == Phase::Baseline);
            let Some(stats) = PhaseStats::of(Phase::Baseline, &checks) else {
                return Err(format!(
                    "probe {} finished no check during the baseline; make baseline longer than its interval and timeout",
                    spec.name
                ));
            };
            if stats.success_percent < 100.0 - spec.tolerance {
                return Err(format!(
                    "the steady state does not hold before injecting: probe {} passed {:.1} % of {} checks in the baseline (tolerance {} % failures)",
                    spec.name, stats.success_percent, stats.checks, spec.tolerance
                ));
            }
        }
        Ok(())
    }

    // ---- injection ----

    async fn inject(&mut self) -> Result<(), String> {
        self.set_phase(Phase::Inject);
        let start = Instant::now();
        self.inject_start = Some(start);
        // (when, is_start, step): ends before starts at the same instant.
        let mut plan: Vec<(Duration, bool, usize)> = self
            .ctx
            .scenario
            .steps
            .iter()
            .enumerate()
            .flat_map(|(i, s)| [(s.at, true, i), (s.end(), false, i)])
            .collect();
        plan.sort();
        for (at, is_start, step) in plan {
            self.wait(start + at, |_| false).await?;
            if is_start {
                self.start_step(step).await?;
            } else {
                self.end_step(step).await;
            }
        }
        Ok(())
    }

    async fn start_step(&mut self, i: usize) -> Result<(), String> {
        let name = self.ctx.scenario.steps[i].name.clone();
        let info = self
            .ctx
            .registry
            .inject(self.requests[i].clone())
            .await
            .map_err(|e| {
                self.steps[i].outcome = format!("injection failed: {e}");
                let reason = format!("step {name:?} could not be injected: {e}");
                self.ctx.handle.emit(Event::Abort {
                    reason: reason.clone(),
                });
                reason
            })?;
        let cgroups: Vec<String> = info.targets.iter().map(|t| t.cgroup.clone()).collect();
        let report = &mut self.steps[i];
        report.fault_id = Some(info.id.clone());
        report.cgroups = cgroups.clone();
        report.injected_ms = Some(self.ctx.handle.elapsed().as_millis() as u64);
        report.outcome = "in force".into();
        self.active.insert(i, info.id.clone());
        self.publish_active();
        self.ctx.handle.emit(Event::StepStarted {
            step: name,
            kind: info.kind,
            fault_id: info.id,
            cgroups,
        });
        Ok(())
    }

    /// Reverts step `i`'s fault if it is in force (its registry deadline may have passed
    /// already, which reverted it).
    async fn end_step(&mut self, i: usize) {
        let Some(id) = self.active.remove(&i) else {
            return;
        };
        self.publish_active();
        let outcome = match self.ctx.registry.recover(&id).await {
            Ok(_) | Err(Error::NotFound { .. }) => "reverted".to_string(),
            Err(e) => {
                self.rollback_failed = true;
                self.ctx.handle.emit(Event::RollbackFailed {
                    fault_id: id.clone(),
                    error: e.to_string(),
                });
                format!("revert failed: {e}")
            }
        };
        let report = &mut self.steps[i];
        report.reverted_ms = Some(self.ctx.handle.elapsed().as_millis() as u64);
        report.outcome = outcome;
        self.ctx.handle.emit(Event::StepEnded {
            step: self.ctx.scenario.steps[i].name.clone(),
            fault_id: id,
        });
    }

    fn publish_active(&self) {
        self.ctx
            .handle
            .set_active_faults(self.active.values().cloned().collect());
    }

    async fn rollback(&mut self) {
        self.set_phase(Phase::Rollback);
        let in_force: Vec<usize> = self.active.keys().copied().collect();
        for i in in_force {
            self.end_step(i).await;
        }
        self.rollback_end = Some(Instant::now());
    }

    // ---- recovery ----

    /// Waits until the steady state holds again; the time from the end of rollback.
    async fn recovery(&mut self) -> Option<Duration> {
        self.set_phase(Phase::Recovery);
        let rollback_end = self.rollback_end.unwrap_or_else(Instant::now);
        let timeout = self.ctx.scenario.steady_state.recovery_timeout;
        // Abort requests and rules no longer apply: nothing is injected, and the wait is bounded.
        let _ = self
            .wait(Instant::now() + timeout, |r| r.recovered_at().is_some())
            .await;
        match self.recovered_at() {
            Some(at) => {
                let after = at.saturating_duration_since(rollback_end);
                self.ctx.handle.emit(Event::Recovered {
                    after_ms: after.as_millis() as u64,
                });
                Some(after)
            }
            None => {
                self.ctx.handle.emit(Event::NotRecovered {
                    waited_ms: timeout.as_millis() as u64,
                });
                None
            }
        }
    }

    /// When the steady state held again: every probe has passed `recovery_confirm` checks in
    /// a row, the last of them started after rollback. The time is the latest start of those
    /// runs of passes over the probes, not earlier than the end of rollback (a probe that
    /// never failed does not delay recovery).
    fn recovered_at(&self) -> Option<Instant> {
        let confirm = self.ctx.scenario.steady_state.recovery_confirm as usize;
        let rollback_end = self.rollback_end?;
        self.samples
            .iter()
            .map(|samples| {
                let last = samples.last()?;
                if last.phase != Phase::Recovery {
                    return None;
                }
                let streak = samples.iter().rev().take_while(|r| r.ok).count();
                (streak >= confirm)
                    .then(|| samples[samples.len() - streak].started.max(rollback_end))
            })
            .try_fold(rollback_end, |latest, at| at.map(|at| latest.max(at)))
    }

    // ---- waiting, probing, abort rules ----

    /// Records probe outcomes until `deadline` or until `done` holds (then `Ok(true)`).
    /// Outside recovery, an abort request or rule ends the wait with its reason.
    async fn wait(&mut self, deadline: Instant, done: fn(&Runner) -> bool) -> Result<bool, String> {
        loop {
            if done(self) {
                return Ok(true);
            }
            if let Some(reason) = self.abort_due() {
                self.ctx.handle.emit(Event::Abort {
                    reason: reason.clone(),
                });
                return Err(reason);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            if now >= self.next_health {
                self.emit_health();
            }
            let wake = deadline
                .min(self.next_health)
                .min(self.max_duration_deadline());
            enum Woke {
                Sample(Option<Sample>),
                Rule(Option<RuleSample>),
                Timer,
                AbortRequest,
            }
            let woke = tokio::select! {
                s = self.sample_rx.recv() => Woke::Sample(s),
                r = self.rule_rx.recv() => Woke::Rule(r),
                () = tokio::time::sleep_until(wake.into()) => Woke::Timer,
                _ = self.abort_rx.changed() => Woke::AbortRequest,
            };
            match woke {
                Woke::Sample(Some(s)) => self.record(s),
                Woke::Rule(Some(r)) => self.record_rule(r),
                Woke::Sample(None) | Woke::Rule(None) | Woke::Timer | Woke::AbortRequest => {}
            }
        }
    }

    fn max_duration_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        match (
            self.ctx.scenario.abort.max_duration,
            self.phase_starts.first(),
        ) {
            (Some(max), Some((_, start))) => (*start + max).min(far),
            _ => far,
        }
    }

    fn current_phase(&self) -> Phase {
        self.phase_starts
            .last()
            .map_or(Phase::Preflight, |(p, _)| *p)
    }

    /// An abort request, the total duration, or (while injecting) a probe rule.
    fn abort_due(&mut self) -> Option<String> {
        if matches!(self.current_phase(), Phase::Rollback | Phase::Recovery) {
            return None;
        }
        if let Some(reason) = self.abort_rx.borrow_and_update().clone() {
            return Some(reason);
        }
        if let (Some(max), Some((_, start))) = (
            self.ctx.scenario.abort.max_duration,
            self.phase_starts.first(),
        ) && start.elapsed() >= max
        {
            return Some(format!(
                "the run reached max_duration {}",
                humantime::format_duration(max)
            ));
        }
        if self.current_phase() == Phase::Inject {
            if let Some(fired) = &self.rule_fired {
                return Some(fired.reason.clone());
            }
            return self.probe_rule_broken();
        }
        None
    }

    /// A query of an abort rule: fires the rule when it was asked while injecting and its value
    /// is out of bounds. A failed query (Prometheus down, no data) does not fire: see
    /// docs/scenarios.md; a hypothesis probe on the same query catches a blind spot.
    fn record_rule(&mut self, r: RuleSample) {
        let rule = &self.ctx.scenario.abort.queries[r.rule];
        let injecting = self.phase_of(r.started) == Phase::Inject
            && self.inject_start.is_some_and(|s| r.started >= s);
        match r.value {
            Ok(value) if injecting && self.rule_fired.is_none() => {
                if let Some(why) = rule.fires(value) {
                    self.rule_fired = Some(AbortFired {
                        rule: rule.name.clone(),
                        query: rule.query.query.clone(),
                        value,
                        at_ms: self.ctx.handle.ms_at(r.started),
                        reason: format!(
                            "abort rule {:?} fired: {} = {why}",
                            rule.name, rule.query.query
                        ),
                    });
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(run_id = %self.ctx.handle.id, rule = %rule.name, "abort rule query failed: {e}")
            }
        }
    }

    /// The abort rules on the checks of the last `window`, once injection has lasted that long.
    fn probe_rule_broken(&self) -> Option<String> {
        let rules = &self.ctx.scenario.abort;
        let now = Instant::now();
        let since = now.checked_sub(rules.window)?;
        if self.inject_start.is_none_or(|s| s > since) {
            return None;
        }
        for (samples, spec) in self
            .samples
            .iter()
            .zip(&self.ctx.scenario.steady_state.probes)
        {
            let window: Vec<(Duration, bool)> = samples
                .iter()
                .filter(|r| r.phase == Phase::Inject && r.started >= since)
                .map(|r| (r.latency, r.ok))
                .collect();
            let Some(stats) = PhaseStats::of(Phase::Inject, &window) else {
                continue;
            };
            let failed = 100.0 - stats.success_percent;
            let window_s = humantime::format_duration(rules.window);
            if let Some(limit) = rules.failure_rate
                && failed > limit
            {
                return Some(format!(
                    "probe {} failed {failed:.0} % of {} checks over the last {window_s}, above failure_rate {limit} %",
                    spec.name, stats.checks
                ));
            }
            if let Some(limit) = rules.p99_latency
                && stats.p99_ms > limit.as_secs_f64() * 1e3
            {
                return Some(format!(
                    "probe {} p99 latency {:.0} ms over the last {window_s}, above p99_latency {} ms",
                    spec.name,
                    stats.p99_ms,
                    limit.as_millis()
                ));
            }
        }
        None
    }

    fn record(&mut self, s: Sample) {
        let phase = self.phase_of(s.started);
        let health = &mut self.health[s.probe];
        health.latencies_ms.push(s.latency.as_secs_f64() * 1e3);
        match &s.error {
            None => health.passed += 1,
            Some(e) => health.last_error = Some(e.clone()),
        }
        self.samples[s.probe].push(Recorded {
            started: s.started,
            phase,
            latency: s.latency,
            ok: s.error.is_none(),
        });
    }

    fn emit_health(&mut self) {
        self.next_health = Instant::now() + HEALTH_EVERY;
        for (i, spec) in self.ctx.scenario.steady_state.probes.iter().enumerate() {
            let mut h = std::mem::take(&mut self.health[i]);
            if h.latencies_ms.is_empty() {
                // Keep the last error for a probe that is still waiting on a check.
                self.health[i].last_error = h.last_error;
                continue;
            }
            h.latencies_ms.sort_by(f64::total_cmp);
            self.ctx.handle.emit(Event::ProbeHealth {
                probe: spec.name.clone(),
                passed: h.passed,
                total: h.latencies_ms.len() as u64,
                p99_ms: crate::scenario::report::percentile(&h.latencies_ms, 99.0),
                last_error: if h.passed == h.latencies_ms.len() as u64 {
                    None
                } else {
                    h.last_error
                },
            });
        }
    }

    // ---- verdict and report ----

    fn checks(&self, probe: usize, phase: impl Fn(Phase) -> bool) -> Vec<(Duration, bool)> {
        self.samples[probe]
            .iter()
            .filter(|r| phase(r.phase))
            .map(|r| (r.latency, r.ok))
            .collect()
    }

    fn verdict(&self, recovery: Option<Duration>) -> (Verdict, String) {
        if self.rollback_failed {
            return (
                Verdict::Error,
                "a fault could not be reverted; see the timeline and `chaosctl list`".into(),
            );
        }
        if let Some(reason) = &self.abort_reason {
            return (
                Verdict::Aborted,
                format!("{reason}; every fault was rolled back"),
            );
        }
        let Some(recovery) = recovery else {
            return (
                Verdict::NotRecovered,
                format!(
                    "the steady state did not hold again within recovery_timeout {}",
                    humantime::format_duration(self.ctx.scenario.steady_state.recovery_timeout)
                ),
            );
        };
        for (probe, spec) in self.ctx.scenario.steady_state.probes.iter().enumerate() {
            if let Some(s) =
                PhaseStats::of(Phase::Inject, &self.checks(probe, |p| p == Phase::Inject))
                && s.success_percent < 100.0 - spec.tolerance
            {
                return (
                    Verdict::Failed,
                    format!(
                        "probe {} passed {:.1} % of its {} checks under the faults (tolerance {} % failures); it recovered {} ms after rollback",
                        spec.name,
                        s.success_percent,
                        s.checks,
                        spec.tolerance,
                        recovery.as_millis()
                    ),
                );
            }
        }
        (
            Verdict::Passed,
            format!(
                "the steady state held under the faults and again {} ms after rollback",
                recovery.as_millis()
            ),
        )
    }

    /// Stops probes and services, writes the report and hands it to the run's handle.
    fn finish(&mut self, verdict: Verdict, reason: String) {
        self.probe_tasks = None;
        self.rule_tasks = None;
        self.services.clear();
        self.run_cgroup = None;
        self.set_phase(Phase::Done);
        self.ctx.handle.emit(Event::Finished {
            verdict,
            reason: reason.clone(),
        });
        let report = self.report(verdict, reason);
        if let Err(e) = write_report(&self.ctx.report_path, &report) {
            tracing::warn!(run_id = %self.ctx.handle.id, path = %self.ctx.report_path.display(), "cannot write the run report: {e}");
        }
        self.ctx.handle.finish(report);
    }

    fn report(&self, verdict: Verdict, reason: String) -> Report {
        let injected = self.inject_start.is_some();
        let after_injection = |p: Phase| p >= Phase::Inject;
        let probes: Vec<ProbeReport> = self
            .ctx
            .scenario
            .steady_state
            .probes
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let phases: Vec<PhaseStats> = [
                    Phase::Preflight,
                    Phase::Baseline,
                    Phase::Inject,
                    Phase::Rollback,
                    Phase::Recovery,
                ]
                .into_iter()
                .filter_map(|ph| PhaseStats::of(ph, &self.checks(i, |p| p == ph)))
                .collect();
                let held = phases
                    .iter()
                    .find(|s| s.phase == Phase::Inject)
                    .is_none_or(|s| s.success_percent >= 100.0 - spec.tolerance);
                ProbeReport {
                    name: spec.name.clone(),
                    check: spec.check.describe(),
                    tolerance_percent: spec.tolerance,
                    hypothesis_held: held,
                    availability_percent: availability(&self.checks(i, after_injection)),
                    phases,
                    series: self.series(i),
                }
            })
            .collect();
        let all: Vec<(Duration, bool)> = (0..self.samples.len())
            .flat_map(|i| self.checks(i, after_injection))
            .collect();
        let recovered = injected.then(|| {
            self.ctx
                .handle
                .events()
                .iter()
                .any(|e| matches!(e.event, Event::Recovered { .. }))
        });
        let recovery_ms = self.ctx.handle.events().iter().find_map(|e| match e.event {
            Event::Recovered { after_ms } => Some(after_ms),
            _ => None,
        });
        Report {
            id: self.ctx.handle.id.clone(),
            title: self.ctx.scenario.title.clone(),
            description: self.ctx.scenario.description.clone(),
            source: self.ctx.handle.source.clone(),
            started_at: self.ctx.handle.started_at().to_string(),
            ended_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            duration_ms: self.ctx.handle.elapsed().as_millis() as u64,
            verdict,
            reason,
            abort_reason: self.abort_reason.clone(),
            // Only the rule whose firing stopped the run (not one that fired after an abort).
            abort_rule: self
                .rule_fired
                .clone()
                .filter(|f| self.abort_reason.as_deref() == Some(f.reason.as_str())),
            recovered,
            recovery_ms,
            availability_percent: availability(&all),
            phases: self.phase_spans(),
            steps: self.steps.clone(),
            probes,
            timeline: Report::timeline_of(&self.ctx.handle.events()),
            scenario: self.ctx.scenario.clone(),
        }
    }

    fn series(&self, probe: usize) -> Vec<CheckPoint> {
        let points: Vec<CheckPoint> = self.samples[probe]
            .iter()
            .map(|r| CheckPoint {
                at_ms: self.ctx.handle.ms_at(r.started),
                latency_ms: (r.latency.as_secs_f64() * 1e4).round() / 10.0,
                ok: r.ok,
            })
            .collect();
        CheckPoint::merged(&points, MAX_SERIES)
    }

    fn phase_spans(&self) -> Vec<PhaseSpan> {
        let ms = |t: Instant| self.ctx.handle.ms_at(t);
        self.phase_starts
            .windows(2)
            .map(|w| PhaseSpan {
                phase: w[0].0,
                start_ms: ms(w[0].1),
                end_ms: ms(w[1].1),
            })
            .collect()
    }
}

fn availability(checks: &[(Duration, bool)]) -> Option<f64> {
    (!checks.is_empty()).then(|| {
        let passed = checks.iter().filter(|(_, ok)| *ok).count() as u64;
        percent(passed, checks.len() as u64)
    })
}
