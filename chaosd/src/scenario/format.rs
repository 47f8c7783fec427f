//! The scenario file format: serde structs that keep each value's place in the file, and the
//! validation that turns them into a [`Scenario`]. Every error names a line and column.
//!
//! Fault steps are `kind` + `params` exactly as `POST /v1/faults` takes them ([`FaultSpec`]),
//! so a new fault kind works in scenarios without any change here.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    ops::Range,
    path::PathBuf,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::{
    api::{FaultSpec, TargetSelector},
    faults::{FaultKinds, TargetRule},
    scenario::{fetch::HttpUrl, millis},
};

/// A scenario file that does not parse or does not make sense, with the place of the problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ScenarioError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl ScenarioError {
    fn at(text: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let offset = span.map_or(0, |s| s.start).min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        ScenarioError {
            line,
            column: before[line_start..].chars().count() + 1,
            message: message.into(),
        }
    }
}

/// A validated scenario: what the runner executes and the report repeats.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Scenario {
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Demo services the run starts, each in a fresh cgroup; each is also a target by its name.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Named targets (services not included).
    #[serde(default)]
    pub targets: BTreeMap<String, TargetSelector>,
    pub steady_state: SteadyState,
    pub steps: Vec<StepSpec>,
    pub abort: AbortRules,
    pub blast_radius: BlastRadius,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    pub run: ServiceRun,
}

/// What a service runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ServiceRun {
    /// chaosd's built-in HTTP responder on this address (answers 200 "ok").
    Http(SocketAddr),
    /// A program and its arguments, run as the user who started the run.
    Command(Vec<String>),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SteadyState {
    /// How long probes may take to pass once before the baseline starts (services starting).
    #[serde(with = "millis", rename = "warmup_ms")]
    pub warmup: Duration,
    /// How long the steady state is measured before anything is injected.
    #[serde(with = "millis", rename = "baseline_ms")]
    pub baseline: Duration,
    /// How long to wait after rollback for the steady state to hold again.
    #[serde(with = "millis", rename = "recovery_timeout_ms")]
    pub recovery_timeout: Duration,
    /// Consecutive passes of every probe that count as "holds again".
    pub recovery_confirm: u32,
    pub probes: Vec<ProbeSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProbeSpec {
    pub name: String,
    pub check: ProbeCheck,
    /// A pass slower than this counts as a failure.
    #[serde(
        default,
        with = "millis::opt",
        rename = "max_latency_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_latency: Option<Duration>,
    #[serde(with = "millis", rename = "interval_ms")]
    pub interval: Duration,
    #[serde(with = "millis", rename = "timeout_ms")]
    pub timeout: Duration,
    /// Percent of failed probes the steady state tolerates.
    pub tolerance: f64,
}

/// What a probe checks.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ProbeCheck {
    /// `GET` on an `http://` or `https://` URL; passes on the expected status.
    Http {
        url: String,
        target: HttpUrl,
        expect_status: u16,
        /// PEM certificates to trust for https instead of the system's trust store.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_file: Option<PathBuf>,
    },
    /// An instant PromQL query; passes when it yields one value within the range.
    Prometheus { query: PromQuery, range: ValueRange },
    /// A TCP connect to host:port.
    Tcp { addr: String },
    /// A program run to completion; passes on the expected exit code.
    Command { argv: Vec<String>, expect_exit: i32 },
}

impl ProbeCheck {
    pub fn describe(&self) -> String {
        match self {
            ProbeCheck::Http {
                url, expect_status, ..
            } => format!("GET {url} → {expect_status}"),
            ProbeCheck::Tcp { addr } => format!("tcp connect {addr}"),
            ProbeCheck::Prometheus { query, range } => {
                format!("{} {} on {}", query.query, range.describe(), query.url)
            }
            ProbeCheck::Command { argv, expect_exit } => {
                format!("{} → exit {expect_exit}", argv.join(" "))
            }
        }
    }
}

/// An instant query against a Prometheus HTTP API (`GET /api/v1/query`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PromQuery {
    /// The server's base URL as written (`http://127.0.0.1:9090`).
    pub url: String,
    pub server: HttpUrl,
    /// PromQL; it must yield a scalar or a vector of exactly one sample.
    pub query: String,
    /// A file holding the bearer token sent as `Authorization: Bearer ..`, read at every query
    /// (so a rotated token is picked up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// Bounds for a query's value, both inclusive.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ValueRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl ValueRange {
    pub fn contains(&self, v: f64) -> bool {
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }

    pub fn describe(&self) -> String {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => format!("in [{lo}, {hi}]"),
            (Some(lo), None) => format!(">= {lo}"),
            (None, Some(hi)) => format!("<= {hi}"),
            (None, None) => "any value".into(),
        }
    }
}

/// An abort rule on a Prometheus query: while injecting, the run aborts and rolls back as soon
/// as the value is above `above` or below `below`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AbortQuery {
    pub name: String,
    pub query: PromQuery,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    #[serde(with = "millis", rename = "interval_ms")]
    pub interval: Duration,
    #[serde(with = "millis", rename = "timeout_ms")]
    pub timeout: Duration,
}

impl AbortQuery {
    /// Why `value` fires the rule, if it does.
    pub fn fires(&self, value: f64) -> Option<String> {
        match (self.above, self.below) {
            (Some(a), _) if value > a => Some(format!("{value} is above {a}")),
            (_, Some(b)) if value < b => Some(format!("{value} is below {b}")),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepSpec {
    pub name: String,
    pub fault: FaultSpec,
    /// Target names (of `[targets]` or `[services]`).
    pub targets: Vec<String>,
    /// Start, from the beginning of the injection phase.
    #[serde(with = "millis", rename = "at_ms")]
    pub at: Duration,
    #[serde(with = "millis", rename = "duration_ms")]
    pub duration: Duration,
}

impl StepSpec {
    pub fn end(&self) -> Duration {
        self.at + self.duration
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AbortRules {
    /// Abort when a probe fails more than this percent of its checks over `window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    /// Abort when a probe's p99 latency over `window` is above this.
    #[serde(
        default,
        with = "millis::opt",
        rename = "p99_latency_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub p99_latency: Option<Duration>,
    #[serde(with = "millis", rename = "window_ms")]
    pub window: Duration,
    /// Abort when the whole run (preflight to recovery) takes longer.
    #[serde(
        default,
        with = "millis::opt",
        rename = "max_duration_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_duration: Option<Duration>,
    /// `[[abort.prometheus]]` rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<AbortQuery>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BlastRadius {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_targets: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_faults: Option<u32>,
}

impl Scenario {
    /// The selector of target `name`: a named target, or `None` for a service (its cgroup is
    /// known only once the run made it).
    pub fn target(&self, name: &str) -> Option<&TargetSelector> {
        self.targets.get(name)
    }

    /// When the last step ends, from the start of the injection phase.
    pub fn schedule_end(&self) -> Duration {
        self.steps
            .iter()
            .map(StepSpec::end)
            .max()
            .unwrap_or_default()
    }
}

/// Parses and validates a scenario file's text.
pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    let raw: RawScenario =
        toml::from_str(text).map_err(|e| ScenarioError::at(text, e.span(), e.message()))?;
    Validator { text }.scenario(raw)
}

// ---- the file as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    title: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    services: BTreeMap<String, Spanned<RawService>>,
    #[serde(default)]
    targets: BTreeMap<String, Spanned<TargetSelector>>,
    steady_state: RawSteadyState,
    #[serde(default, rename = "step")]
    steps: Vec<Spanned<RawStep>>,
    #[serde(default)]
    abort: RawAbort,
    #[serde(default)]
    blast_radius: RawBlastRadius,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    http: Option<Spanned<String>>,
    #[serde(default)]
    command: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSteadyState {
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    tolerance: Option<Spanned<f64>>,
    #[serde(default)]
    warmup: Option<Spanned<String>>,
    #[serde(default)]
    baseline: Option<Spanned<String>>,
    #[serde(default)]
    recovery_timeout: Option<Spanned<String>>,
    #[serde(default)]
    recovery_confirm: Option<Spanned<u32>>,
    #[serde(default, rename = "probe")]
    probes: Vec<Spanned<RawProbe>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    name: Spanned<String>,
    #[serde(default)]
    http: Option<Spanned<String>>,
    #[serde(default)]
    tcp: Option<Spanned<String>>,
    #[serde(default)]
    command: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    prometheus: Option<Spanned<String>>,
    #[serde(default)]
    query: Option<Spanned<String>>,
    #[serde(default)]
    min: Option<Spanned<f64>>,
    #[serde(default)]
    max: Option<Spanned<f64>>,
    #[serde(default)]
    bearer_token_file: Option<Spanned<String>>,
    #[serde(default)]
    ca_file: Option<Spanned<String>>,
    #[serde(default)]
    expect_status: Option<Spanned<u16>>,
    #[serde(default)]
    expect_exit: Option<Spanned<i32>>,
    #[serde(default)]
    max_latency: Option<Spanned<String>>,
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    tolerance: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(default)]
    name: Option<Spanned<String>>,
    kind: Spanned<String>,
    #[serde(default)]
    params: Option<Spanned<toml::Value>>,
    #[serde(default)]
    target: Option<Spanned<String>>,
    #[serde(default)]
    targets: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    at: Option<Spanned<String>>,
    duration: Spanned<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAbort {
    #[serde(default)]
    failure_rate: Option<Spanned<f64>>,
    #[serde(default)]
    p99_latency: Option<Spanned<String>>,
    #[serde(default)]
    window: Option<Spanned<String>>,
    #[serde(default)]
    max_duration: Option<Spanned<String>>,
    #[serde(default)]
    prometheus: Vec<Spanned<RawAbortQuery>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAbortQuery {
    name: Spanned<String>,
    prometheus: Spanned<String>,
    query: Spanned<String>,
    #[serde(default)]
    above: Option<Spanned<f64>>,
    #[serde(default)]
    below: Option<Spanned<f64>>,
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    bearer_token_file: Option<Spanned<String>>,
    #[serde(default)]
    ca_file: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlastRadius {
    #[serde(default)]
    max_targets: Option<Spanned<u32>>,
    #[serde(default)]
    max_concurrent_faults: Option<Spanned<u32>>,
}

// ---- validation ----

const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_WARMUP: Duration = Duration::from_secs(10);
const DEFAULT_BASELINE: Duration = Duration::from_secs(2);
const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RECOVERY_CONFIRM: u32 = 3;
const DEFAULT_WINDOW: Duration = Duration::from_secs(2);
/// Prometheus evaluates rules and scrapes every few seconds; a query a second is plenty.
const DEFAULT_RULE_INTERVAL: Duration = Duration::from_secs(1);
/// Probes faster than this would mostly measure themselves.
const MIN_INTERVAL: Duration = Duration::from_millis(50);

struct Validator<'a> {
    text: &'a str,
}

type Checked<T> = Result<T, ScenarioError>;

impl Validator<'_> {
    fn err<T>(&self, span: Range<usize>, message: impl Into<String>) -> Checked<T> {
        Err(ScenarioError::at(self.text, Some(span), message))
    }

    fn scenario(&self, raw: RawScenario) -> Checked<Scenario> {
        if raw.title.get_ref().trim().is_empty() {
            return self.err(raw.title.span(), "title must not be empty");
        }
        let services = self.services(&raw.services, &raw.targets)?;
        let targets = raw
            .targets
            .iter()
            .map(|(name, sel)| Ok((name.clone(), self.selector(sel)?)))
            .collect::<Checked<BTreeMap<_, _>>>()?;
        let steady_state = self.steady_state(raw.steady_state)?;
        let names: BTreeSet<&str> = raw
            .targets
            .keys()
            .chain(raw.services.keys())
            .map(String::as_str)
            .collect();
        if raw.steps.is_empty() {
            return self.err(
                0..0,
                "at least one [[step]] is required: what to inject, where, when, for how long",
            );
        }
        let steps = raw
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| self.step(i, s, &names))
            .collect::<Checked<Vec<_>>>()?;
        let mut seen = BTreeSet::new();
        for (raw_step, step) in raw.steps.iter().zip(&steps) {
            if !seen.insert(step.name.as_str()) {
                let span = raw_step
                    .get_ref()
                    .name
                    .as_ref()
                    .map_or(raw_step.span(), Spanned::span);
                return self.err(span, format!("step name {:?} is used twice", step.name));
            }
        }
        let abort = self.abort(raw.abort)?;
        let blast_radius = self.blast_radius(&raw.blast_radius, &raw.steps, &steps)?;
        Ok(Scenario {
            title: raw.title.into_inner(),
            description: raw.description,
            services,
            targets,
            steady_state,
            steps,
            abort,
            blast_radius,
        })
    }

    fn selector(&self, sel: &Spanned<TargetSelector>) -> Checked<TargetSelector> {
        match sel.get_ref() {
            TargetSelector::Cgroup(p) if p.trim().is_empty() => {
                self.err(sel.span(), "cgroup path must not be empty")
            }
            TargetSelector::Unit(u) if u.trim().is_empty() => {
                self.err(sel.span(), "unit name must not be empty")
            }
            s => Ok(s.clone()),
        }
    }

    fn services(
        &self,
        raw: &BTreeMap<String, Spanned<RawService>>,
        targets: &BTreeMap<String, Spanned<TargetSelector>>,
    ) -> Checked<Vec<ServiceSpec>> {
        let mut out = Vec::new();
        for (name, svc) in raw {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return self.err(
                    svc.span(),
                    format!("service name {name:?} must be letters, digits, - and _ only (it names a cgroup)"),
                );
            }
            if targets.contains_key(name) {
                return self.err(
                    svc.span(),
                    format!("{name:?} is both a service and a target; services are targets by their name already"),
                );
            }
            let run = match (&svc.get_ref().http, &svc.get_ref().command) {
                (Some(addr), None) => ServiceRun::Http(addr.get_ref().parse().or_else(|_| {
                    self.err(addr.span(), format!("http = {:?} is not an address to listen on: give IP:PORT, e.g. \"127.0.0.1:18080\"", addr.get_ref()))
                })?),
                (None, Some(cmd)) => ServiceRun::Command(self.argv(cmd)?),
                _ => {
                    return self.err(
                        svc.span(),
                        format!("service {name:?} needs exactly one of http = \"IP:PORT\" (the built-in responder) and command = [\"program\", \"arg\", ..]"),
                    );
                }
            };
            out.push(ServiceSpec {
                name: name.clone(),
                run,
            });
        }
        Ok(out)
    }

    fn argv(&self, cmd: &Spanned<Vec<String>>) -> Checked<Vec<String>> {
        match cmd.get_ref().first() {
            Some(p) if !p.trim().is_empty() => Ok(cmd.get_ref().clone()),
            _ => self.err(
                cmd.span(),
                "command must name a program: [\"program\", \"arg\", ..]",
            ),
        }
    }

    fn duration(&self, d: &Spanned<String>, field: &str) -> Checked<Duration> {
        let parsed = humantime::parse_duration(d.get_ref().trim()).or_else(|e| {
            self.err(
                d.span(),
                format!(
                    "{field} = {:?} is not a duration: {e} (examples: 500ms, 3s, 1m)",
                    d.get_ref()
                ),
            )
        })?;
        if parsed.is_zero() {
            return self.err(d.span(), format!("{field} must be above zero"));
        }
        Ok(parsed)
    }

    fn duration_or(
        &self,
        d: Option<&Spanned<String>>,
        field: &str,
        default: Duration,
    ) -> Checked<Duration> {
        d.map_or(Ok(default), |d| self.duration(d, field))
    }

    fn percent(&self, p: &Spanned<f64>, field: &str, zero_ok: bool) -> Checked<f64> {
        let v = *p.get_ref();
        let low_ok = if zero_ok { v >= 0.0 } else { v > 0.0 };
        if !(low_ok && v <= 100.0) {
            let low = if zero_ok { "from 0" } else { "above 0" };
            return self.err(
                p.span(),
                format!("{field} is a percentage {low} to 100, got {v}"),
            );
        }
        Ok(v)
    }

    fn steady_state(&self, raw: RawSteadyState) -> Checked<SteadyState> {
        let defaults = ProbeDefaults {
            interval: self.duration_or(raw.interval.as_ref(), "interval", DEFAULT_INTERVAL)?,
            timeout: self.duration_or(raw.timeout.as_ref(), "timeout", DEFAULT_TIMEOUT)?,
            tolerance: raw
                .tolerance
                .as_ref()
                .map_or(Ok(0.0), |t| self.percent(t, "tolerance", true))?,
        };
        if raw.probes.is_empty() {
            return self.err(
                0..0,
                "[steady_state] needs at least one [[steady_state.probe]]: the hypothesis is what the probes check",
            );
        }
        let mut probes: Vec<ProbeSpec> = Vec::new();
        for p in &raw.probes {
            let probe = self.probe(p, &defaults)?;
            if probes.iter().any(|q| q.name == probe.name) {
                return self.err(
                    p.get_ref().name.span(),
                    format!("probe name {:?} is used twice", probe.name),
                );
            }
            probes.push(probe);
        }
        let recovery_confirm = match &raw.recovery_confirm {
            Some(c) if *c.get_ref() == 0 => {
                return self.err(c.span(), "recovery_confirm must be at least 1");
            }
            Some(c) => *c.get_ref(),
            None => DEFAULT_RECOVERY_CONFIRM,
        };
        Ok(SteadyState {
            warmup: self.duration_or(raw.warmup.as_ref(), "warmup", DEFAULT_WARMUP)?,
            baseline: self.duration_or(raw.baseline.as_ref(), "baseline", DEFAULT_BASELINE)?,
            recovery_timeout: self.duration_or(
                raw.recovery_timeout.as_ref(),
                "recovery_timeout",
                DEFAULT_RECOVERY_TIMEOUT,
            )?,
            recovery_confirm,
            probes,
        })
    }

    fn probe(&self, p: &Spanned<RawProbe>, defaults: &ProbeDefaults) -> Checked<ProbeSpec> {
        let r = p.get_ref();
        if r.name.get_ref().trim().is_empty() {
            return self.err(r.name.span(), "probe name must not be empty");
        }
        let check = match (&r.http, &r.tcp, &r.command, &r.prometheus) {
            (Some(url), None, None, None) => {
                self.http_check(url, r.expect_status.as_ref(), r.ca_file.as_ref())?
            }
            (None, Some(addr), None, None) => ProbeCheck::Tcp {
                addr: self.host_port(addr, "tcp")?,
            },
            (None, None, Some(cmd), None) => ProbeCheck::Command {
                argv: self.argv(cmd)?,
                expect_exit: r.expect_exit.as_ref().map_or(0, |e| *e.get_ref()),
            },
            (None, None, None, Some(server)) => self.prometheus_check(p, server)?,
            _ => {
                return self.err(
                    p.span(),
                    format!("probe {:?} needs exactly one of http = \"http://..\", tcp = \"HOST:PORT\", command = [..] and prometheus = \"http://..\" (with query)", r.name.get_ref()),
                );
            }
        };
        self.only_for_prometheus(r, &check)?;
        if let (Some(s), false) = (&r.expect_status, matches!(check, ProbeCheck::Http { .. })) {
            return self.err(s.span(), "expect_status applies to http probes only");
        }
        if let (Some(e), false) = (&r.expect_exit, matches!(check, ProbeCheck::Command { .. })) {
            return self.err(e.span(), "expect_exit applies to command probes only");
        }
        let interval = self.duration_or(r.interval.as_ref(), "interval", defaults.interval)?;
        if interval < MIN_INTERVAL {
            let span = r.interval.as_ref().map_or(p.span(), Spanned::span);
            return self.err(
                span,
                format!(
                    "interval must be at least {}",
                    humantime::format_duration(MIN_INTERVAL)
                ),
            );
        }
        Ok(ProbeSpec {
            name: r.name.get_ref().clone(),
            check,
            max_latency: r
                .max_latency
                .as_ref()
                .map(|d| self.duration(d, "max_latency"))
                .transpose()?,
            interval,
            timeout: self.duration_or(r.timeout.as_ref(), "timeout", defaults.timeout)?,
            tolerance: r.tolerance.as_ref().map_or(Ok(defaults.tolerance), |t| {
                self.percent(t, "tolerance", true)
            })?,
        })
    }

    fn url(&self, url: &Spanned<String>) -> Checked<HttpUrl> {
        HttpUrl::parse(url.get_ref()).or_else(|e| self.err(url.span(), e))
    }

    fn path(&self, p: Option<&Spanned<String>>, field: &str) -> Checked<Option<PathBuf>> {
        match p {
            Some(p) if !p.get_ref().starts_with('/') => self.err(
                p.span(),
                format!(
                    "{field} = {:?} must be an absolute path (the daemon reads it)",
                    p.get_ref()
                ),
            ),
            p => Ok(p.map(|p| PathBuf::from(p.get_ref()))),
        }
    }

    fn ca_file(&self, ca: Option<&Spanned<String>>, url: &HttpUrl) -> Checked<Option<PathBuf>> {
        match ca {
            Some(ca) if !url.https => self.err(ca.span(), "ca_file applies to https URLs only"),
            ca => self.path(ca, "ca_file"),
        }
    }

    /// `query` and its server, bearer token and CA file, shared by probes and abort rules.
    fn prom_query(
        &self,
        server: &Spanned<String>,
        query: Option<&Spanned<String>>,
        token: Option<&Spanned<String>>,
        ca: Option<&Spanned<String>>,
        owner: Range<usize>,
    ) -> Checked<PromQuery> {
        let Some(query) = query else {
            return self.err(
                owner,
                "a prometheus check needs query = \"PROMQL\" (an instant query yielding one value)",
            );
        };
        if query.get_ref().trim().is_empty() {
            return self.err(query.span(), "query must not be empty");
        }
        let url = self.url(server)?;
        if url.path != "/" {
            return self.err(
                server.span(),
                "prometheus = is the server's base URL (http://HOST:PORT); chaosd adds /api/v1/query",
            );
        }
        Ok(PromQuery {
            url: server.get_ref().clone(),
            ca_file: self.ca_file(ca, &url)?,
            server: url,
            query: query.get_ref().clone(),
            bearer_token_file: self.path(token, "bearer_token_file")?,
        })
    }

    fn prometheus_check(
        &self,
        p: &Spanned<RawProbe>,
        server: &Spanned<String>,
    ) -> Checked<ProbeCheck> {
        let r = p.get_ref();
        let query = self.prom_query(
            server,
            r.query.as_ref(),
            r.bearer_token_file.as_ref(),
            r.ca_file.as_ref(),
            p.span(),
        )?;
        let range = ValueRange {
            min: r.min.as_ref().map(|m| *m.get_ref()),
            max: r.max.as_ref().map(|m| *m.get_ref()),
        };
        match (range.min, range.max, &r.max) {
            (None, None, _) => self.err(
                p.span(),
                "a prometheus probe needs min = or max = (or both): the range its value must stay in",
            ),
            (Some(lo), Some(hi), Some(m)) if lo > hi => {
                self.err(m.span(), format!("max {hi} is below min {lo}"))
            }
            _ => Ok(ProbeCheck::Prometheus { query, range }),
        }
    }

    /// `query`, `min`, `max` and `bearer_token_file` belong to prometheus probes.
    fn only_for_prometheus(&self, r: &RawProbe, check: &ProbeCheck) -> Checked<()> {
        if matches!(check, ProbeCheck::Prometheus { .. }) {
            return Ok(());
        }
        if let (Some(ca), ProbeCheck::Tcp { .. } | ProbeCheck::Command { .. }) = (&r.ca_file, check)
        {
            return self.err(
                ca.span(),
                "ca_file applies to https and prometheus probes only",
            );
        }
        let stray = [
            ("query", r.query.as_ref().map(Spanned::span)),
            ("min", r.min.as_ref().map(Spanned::span)),
            ("max", r.max.as_ref().map(Spanned::span)),
            (
                "bearer_token_file",
                r.bearer_token_file.as_ref().map(Spanned::span),
            ),
        ];
        match stray.into_iter().find_map(|(f, s)| s.map(|s| (f, s))) {
            Some((field, span)) => self.err(
                span,
                format!("{field} applies to prometheus probes only (prometheus = \"http://..\")"),
            ),
            None => Ok(()),
        }
    }

    fn http_check(
        &self,
        url: &Spanned<String>,
        status: Option<&Spanned<u16>>,
        ca: Option<&Spanned<String>>,
    ) -> Checked<ProbeCheck> {
        let target = self.url(url)?;
        let expect_status = match status {
            Some(s) if !(100..=599).contains(s.get_ref()) => {
                return self.err(
                    s.span(),
                    format!(
                        "expect_status must be an HTTP status 100-599, got {}",
                        s.get_ref()
                    ),
                );
            }
            Some(s) => *s.get_ref(),
            None => 200,
        };
        Ok(ProbeCheck::Http {
            url: url.get_ref().clone(),
            ca_file: self.ca_file(ca, &target)?,
            target,
            expect_status,
        })
    }

    fn host_port(&self, addr: &Spanned<String>, field: &str) -> Checked<String> {
        match addr.get_ref().rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(addr.get_ref().clone())
            }
            _ => self.err(
                addr.span(),
                format!(
                    "{field} = {:?} is not HOST:PORT (e.g. \"127.0.0.1:5432\")",
                    addr.get_ref()
                ),
            ),
        }
    }

    fn step(
        &self,
        index: usize,
        s: &Spanned<RawStep>,
        names: &BTreeSet<&str>,
    ) -> Checked<StepSpec> {
        let r = s.get_ref();
        let fault = self.fault(r)?;
        let targets = self.step_targets(s, names)?;
        let rule = FaultKinds::target_rule(&fault);
        match (rule, targets.is_empty()) {
            (TargetRule::Required, true) => {
                return self.err(
                    s.span(),
                    format!(
                        "{} needs a target: target = \"NAME\" or targets = [..]",
                        fault.kind()
                    ),
                );
            }
            (TargetRule::Forbidden, false) => {
                let span = r
                    .target
                    .as_ref()
                    .map(Spanned::span)
                    .or(r.targets.as_ref().map(Spanned::span));
                return self.err(
                    span.unwrap_or(s.span()),
                    format!("{} takes no targets", fault.kind()),
                );
            }
            _ => {}
        }
        let at = match &r.at {
            Some(a) if a.get_ref().trim() == "0" => Duration::ZERO,
            Some(a) => humantime::parse_duration(a.get_ref().trim()).or_else(|e| {
                self.err(
                    a.span(),
                    format!(
                        "at = {:?} is not an offset: {e} (examples: 0s, 500ms, 3s)",
                        a.get_ref()
                    ),
                )
            })?,
            None => Duration::ZERO,
        };
        Ok(StepSpec {
            name: r
                .name
                .as_ref()
                .map_or_else(|| format!("step {}", index + 1), |n| n.get_ref().clone()),
            fault,
            targets,
            at,
            duration: self.duration(&r.duration, "duration")?,
        })
    }

    /// `kind` + `params` through the API's own [`FaultSpec`] and its parameter checks.
    fn fault(&self, r: &RawStep) -> Checked<FaultSpec> {
        let params_span = r.params.as_ref().map_or(r.kind.span(), Spanned::span);
        let params = r.params.as_ref().map_or_else(
            || toml::Value::Table(Default::default()),
            |p| p.get_ref().clone(),
        );
        let mut table = toml::Table::new();
        table.insert("kind".into(), toml::Value::String(r.kind.get_ref().clone()));
        table.insert("params".into(), params);
        let spec: FaultSpec = match toml::Value::Table(table).try_into() {
            Ok(spec) => spec,
            Err(e) if e.message().contains("unknown variant") => {
                return self.err(
                    r.kind.span(),
                    format!(
                        "unknown fault kind {:?}: {}",
                        r.kind.get_ref(),
                        e.message().trim()
                    ),
                );
            }
            Err(e) => {
                return self.err(
                    params_span,
                    format!("params of {}: {}", r.kind.get_ref(), e.message().trim()),
                );
            }
        };
        FaultKinds::validate(&spec)
            .or_else(|e| self.err(params_span, format!("params of {}: {e}", spec.kind())))?;
        Ok(spec)
    }

    fn step_targets(&self, s: &Spanned<RawStep>, names: &BTreeSet<&str>) -> Checked<Vec<String>> {
        let r = s.get_ref();
        let (list, span) = match (&r.target, &r.targets) {
            (Some(_), Some(t)) => return self.err(t.span(), "give target or targets, not both"),
            (Some(t), None) => (vec![t.get_ref().clone()], t.span()),
            (None, Some(t)) => (t.get_ref().clone(), t.span()),
            (None, None) => return Ok(Vec::new()),
        };
        let mut seen = BTreeSet::new();
        for name in &list {
            if !names.contains(name.as_str()) {
                let known = if names.is_empty() {
                    "none are defined; add [targets.NAME] or [services.NAME]".to_string()
                } else {
                    format!(
                        "known: {}",
                        names.iter().copied().collect::<Vec<_>>().join(", ")
                    )
                };
                return self.err(span, format!("unknown target {name:?} ({known})"));
            }
            if !seen.insert(name) {
                return self.err(span, format!("target {name:?} is listed twice"));
            }
        }
        Ok(list)
    }

    fn abort(&self, raw: RawAbort) -> Checked<AbortRules> {
        Ok(AbortRules {
            failure_rate: raw
                .failure_rate
                .as_ref()
                .map(|f| self.percent(f, "failure_rate", false))
                .transpose()?,
            p99_latency: raw
                .p99_latency
                .as_ref()
                .map(|d| self.duration(d, "p99_latency"))
                .transpose()?,
            window: self.duration_or(raw.window.as_ref(), "window", DEFAULT_WINDOW)?,
            max_duration: raw
                .max_duration
                .as_ref()
                .map(|d| self.duration(d, "max_duration"))
                .transpose()?,
            queries: self.abort_queries(&raw.prometheus)?,
        })
    }

    fn abort_queries(&self, raw: &[Spanned<RawAbortQuery>]) -> Checked<Vec<AbortQuery>> {
        let mut out: Vec<AbortQuery> = Vec::new();
        for q in raw {
            let r = q.get_ref();
            let name = r.name.get_ref();
            if name.trim().is_empty() {
                return self.err(r.name.span(), "abort rule name must not be empty");
            }
            if out.iter().any(|o| &o.name == name) {
                return self.err(
                    r.name.span(),
                    format!("abort rule name {name:?} is used twice"),
                );
            }
            let (above, below) = (
                r.above.as_ref().map(|v| *v.get_ref()),
                r.below.as_ref().map(|v| *v.get_ref()),
            );
            if above.is_none() && below.is_none() {
                return self.err(
                    q.span(),
                    format!("abort rule {name:?} needs above = or below = (or both): the value that fires it"),
                );
            }
            let interval =
                self.duration_or(r.interval.as_ref(), "interval", DEFAULT_RULE_INTERVAL)?;
            if interval < MIN_INTERVAL {
                let span = r.interval.as_ref().map_or(q.span(), Spanned::span);
                return self.err(
                    span,
                    format!(
                        "interval must be at least {}",
                        humantime::format_duration(MIN_INTERVAL)
                    ),
                );
            }
            out.push(AbortQuery {
                name: name.clone(),
                query: self.prom_query(
                    &r.prometheus,
                    Some(&r.query),
                    r.bearer_token_file.as_ref(),
                    r.ca_file.as_ref(),
                    q.span(),
                )?,
                above,
                below,
                interval,
                timeout: self.duration_or(r.timeout.as_ref(), "timeout", DEFAULT_TIMEOUT)?,
            });
        }
        Ok(out)
    }

    fn blast_radius(
        &self,
        raw: &RawBlastRadius,
        raw_steps: &[Spanned<RawStep>],
        steps: &[StepSpec],
    ) -> Checked<BlastRadius> {
        if let Some(max) = &raw.max_targets {
            let used: BTreeSet<&str> = steps
                .iter()
                .flat_map(|s| s.targets.iter().map(String::as_str))
                .collect();
            if used.len() > *max.get_ref() as usize {
                return self.err(
                    max.span(),
                    format!(
                        "the steps use {} targets ({}), above max_targets = {}",
                        used.len(),
                        used.into_iter().collect::<Vec<_>>().join(", "),
                        max.get_ref()
                    ),
                );
            }
        }
        if let Some(max) = &raw.max_concurrent_faults {
            for (i, step) in steps.iter().enumerate() {
                // Steps overlapping this one's start, itself included.
                let concurrent = steps
                    .iter()
                    .filter(|o| o.at <= step.at && step.at < o.end())
                    .count();
                if concurrent > *max.get_ref() as usize {
                    return self.err(
                        raw_steps[i].span(),
                        format!(
                            "step {:?} starts while {} faults are in force, above max_concurrent_faults = {} (declared at line {})",
                            step.name,
                            concurrent,
                            max.get_ref(),
                            ScenarioError::at(self.text, Some(max.span()), "").line
                        ),
                    );
                }
            }
        }
        Ok(BlastRadius {
            max_targets: raw.max_targets.as_ref().map(|m| *m.get_ref()),
            max_concurrent_faults: raw.max_concurrent_faults.as_ref().map(|m| *m.get_ref()),
        })
    }
}

struct ProbeDefaults {
    interval: Duration,
    timeout: Duration,
    tolerance: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid scenario; each malformed case changes one thing in it.
    const GOOD: &str = r#"title = "web survives loss"
description = "the demo service keeps answering"

[services.web]
http = "127.0.0.1:18080"

[targets.db]
cgroup = "/db"

[steady_state]
interval = "100ms"
tolerance = 10

[[steady_state.probe]]
name = "home"
http = "http://127.0.0.1:18080/"
expect_status = 200
max_latency = "300ms"

[[steady_state.probe]]
name = "port"
tcp = "127.0.0.1:18080"

[[step]]
name = "lossy"
kind = "net.loss"
params = { percent = 50, direction = "both" }
target = "web"
at = "1s"
duration = "3s"

[[step]]
kind = "process.pause"
targets = ["db"]
at = "2s"
duration = "1s"

[abort]
failure_rate = 80
window = "1s"

[blast_radius]
max_targets = 2
max_concurrent_faults = 2
"#;

    /// Line and column (1-based) where `needle` starts in `text`.
    fn place(text: &str, needle: &str) -> (usize, usize) {
        let at = text
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in the test text"));
        let e = ScenarioError::at(text, Some(at..at), "");
        (e.line, e.column)
    }

    /// Replaces `from` by `to` in the good scenario, parses, and checks the error points at
    /// `to`'s `point` and says `says`.
    fn refused(from: &str, to: &str, point: &str, says: &str) {
        assert!(GOOD.contains(from), "{from:?} not in GOOD");
        let text = GOOD.replacen(from, to, 1);
        let e = parse(&text).expect_err(&format!("accepted after {from:?} → {to:?}"));
        assert_eq!(
            (e.line, e.column),
            place(&text, point),
            "wrong place for {to:?}: {e}"
        );
        assert!(e.message.contains(says), "{e} does not say {says:?}");
    }

    #[test]
    fn the_good_scenario_parses() {
        let s = parse(GOOD).unwrap();
        assert_eq!(
            s.services[0].run,
            ServiceRun::Http("127.0.0.1:18080".parse().unwrap())
        );
        assert_eq!(s.targets["db"], TargetSelector::Cgroup("/db".into()));
        assert_eq!(s.steady_state.probes.len(), 2);
        assert_eq!(s.steady_state.probes[0].tolerance, 10.0);
        assert_eq!(
            s.steady_state.probes[1].interval,
            Duration::from_millis(100)
        );
        assert_eq!(s.steps[1].name, "step 2");
        assert!(matches!(s.steps[0].fault, FaultSpec::NetLoss(ref p) if p.percent == 50.0));
        assert_eq!(s.schedule_end(), Duration::from_secs(4));
        assert_eq!(s.abort.failure_rate, Some(80.0));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Scenario>(&json).unwrap(), s);
    }

    #[test]
    fn toml_syntax_error() {
        // The string runs to the end of the line, where the parser notices.
        refused(
            "title = \"web survives loss\"",
            "title = \"web survives",
            "\ndescription",
            "",
        );
    }

    #[test]
    fn unknown_field() {
        refused(
            "interval = \"100ms\"",
            "intervall = \"100ms\"",
            "intervall",
            "unknown field",
        );
    }

    #[test]
    fn bad_duration() {
        refused(
            "duration = \"3s\"",
            "duration = \"soon\"",
            "\"soon\"",
            "not a duration",
        );
    }

    #[test]
    fn unknown_fault_kind() {
        refused(
            "kind = \"net.loss\"",
            "kind = \"net.lose\"",
            "\"net.lose\"",
            "unknown fault kind",
        );
    }

    #[test]
    fn fault_parameter_out_of_range() {
        refused(
            "percent = 50,",
            "percent = 150,",
            "{ percent = 150",
            "percent",
        );
    }

    #[test]
    fn unknown_fault_parameter() {
        refused("percent = 50,", "percnt = 50,", "{ percnt", "percnt");
    }

    #[test]
    fn unknown_target() {
        refused(
            "target = \"web\"",
            "target = \"api\"",
            "\"api\"",
            "unknown target",
        );
    }

    #[test]
    fn probe_with_two_checks() {
        refused(
            "tcp = \"127.0.0.1:18080\"",
            "tcp = \"127.0.0.1:18080\"\ncommand = [\"true\"]",
            "[[steady_state.probe]]\nname = \"port\"",
            "exactly one of",
        );
    }

    #[test]
    fn ftp_url() {
        refused(
            "http = \"http://",
            "http = \"ftp://",
            "\"ftp://",
            "not an HTTP URL",
        );
    }

    #[test]
    fn https_url_with_a_ca_file() {
        let text = GOOD.replacen(
            "http = \"http://127.0.0.1:18080/\"",
            "http = \"https://localhost:8443/health\"\nca_file = \"/etc/ca.pem\"",
            1,
        );
        let s = parse(&text).unwrap();
        let ProbeCheck::Http {
            target, ca_file, ..
        } = &s.steady_state.probes[0].check
        else {
            panic!("not an http probe");
        };
        assert_eq!((target.https, target.port), (true, 8443));
        assert_eq!(
            ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
    }

    #[test]
    fn ca_file_on_plain_http() {
        refused(
            "expect_status = 200",
            "expect_status = 200\nca_file = \"/ca.pem\"",
            "\"/ca.pem\"",
            "https URLs only",
        );
    }

    const PROM_PROBE: &str = "[[steady_state.probe]]\nname = \"errors\"\nprometheus = \"http://127.0.0.1:9090\"\nquery = \"sum(rate(errors[30s]))\"\nmax = 0.05\n\n[[step]]";

    #[test]
    fn prometheus_probe_and_abort_rule() {
        let text = GOOD.replacen("[[step]]", PROM_PROBE, 1).replacen(
            "window = \"1s\"",
            "window = \"1s\"\n\n[[abort.prometheus]]\nname = \"error ratio\"\nprometheus = \"http://127.0.0.1:9090\"\nquery = \"x\"\nabove = 0.05\nbearer_token_file = \"/run/token\"",
            1,
        );
        let s = parse(&text).unwrap();
        let ProbeCheck::Prometheus { query, range } = &s.steady_state.probes[2].check else {
            panic!("not a prometheus probe");
        };
        assert_eq!(query.server.port, 9090);
        assert!(range.contains(0.05) && !range.contains(0.06));
        let rule = &s.abort.queries[0];
        assert_eq!(rule.interval, DEFAULT_RULE_INTERVAL);
        assert!(rule.fires(0.2).unwrap().contains("above 0.05"));
        assert_eq!(rule.fires(0.01), None);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Scenario>(&json).unwrap(), s);
    }

    #[test]
    fn prometheus_probe_without_range() {
        let text = GOOD.replacen("[[step]]", &PROM_PROBE.replace("max = 0.05\n", ""), 1);
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("min = or max ="), "{e}");
    }

    #[test]
    fn prometheus_url_with_a_path() {
        let text = GOOD.replacen(
            "[[step]]",
            &PROM_PROBE.replace(":9090\"", ":9090/api/v1/query\""),
            1,
        );
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("base URL"), "{e}");
    }

    #[test]
    fn query_on_an_http_probe() {
        refused(
            "expect_status = 200",
            "expect_status = 200\nquery = \"up\"",
            "\"up\"",
            "prometheus probes only",
        );
    }

    #[test]
    fn abort_rule_without_threshold() {
        let text = GOOD.replacen(
            "window = \"1s\"",
            "window = \"1s\"\n\n[[abort.prometheus]]\nname = \"r\"\nprometheus = \"http://127.0.0.1:9090\"\nquery = \"x\"",
            1,
        );
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("above = or below ="), "{e}");
    }

    #[test]
    fn status_out_of_range() {
        refused(
            "expect_status = 200",
            "expect_status = 700",
            "700",
            "100-599",
        );
    }

    #[test]
    fn tolerance_above_100() {
        refused("tolerance = 10", "tolerance = 150", "150", "percentage");
    }

    #[test]
    fn target_selector_of_unknown_type() {
        refused(
            "cgroup = \"/db\"",
            "node = \"/db\"",
            "node",
            "unknown variant",
        );
    }

    #[test]
    fn service_address_without_port() {
        refused(
            "http = \"127.0.0.1:18080\"",
            "http = \"127.0.0.1\"",
            "\"127.0.0.1\"",
            "IP:PORT",
        );
    }

    #[test]
    fn too_many_concurrent_faults() {
        refused(
            "max_concurrent_faults = 2",
            "max_concurrent_faults = 1",
            "[[step]]\nkind",
            "max_concurrent_faults = 1",
        );
    }

    #[test]
    fn too_many_targets() {
        refused(
            "max_targets = 2",
            "max_targets = 1",
            "1\nmax_concurrent",
            "max_targets = 1",
        );
    }

    #[test]
    fn step_without_target() {
        refused("target = \"web\"\n", "", "[[step]]\nname", "needs a target");
    }

    /// Every shipped example parses and validates (its steps' kinds and parameters too).
    #[test]
    fn every_example_scenario_is_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 6, "only {seen} examples in {}", dir.display());
    }
}
