//! Prometheus exposition of the daemon's faults: `GET /metrics` on the API socket and, when
//! configured, on a loopback TCP address.
//!
//! Gauges and counters are read from the registry at scrape time (the kernel counters are the
//! source of truth, so nothing is cached here); the inject/recover latency histograms are kept
//! across scrapes in [`Metrics`].
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `chaosd_faults_active` | `kind` | faults in force now, one series per known kind |
//! | `chaosd_fault_packets_total` | `fault`, `kind`, `outcome` | packets a network fault saw / dropped |
//! | `chaosd_fault_syscalls_total` | `fault`, `kind`, `outcome` | calls an I/O or connect fault saw / failed |
//! | `chaosd_inject_duration_seconds` | `kind` | time to validate, journal and apply a fault |
//! | `chaosd_recover_duration_seconds` | `kind`, `reason` | time to revert a fault |
//! | `chaosd_scenario_runs_active` | | scenario runs going now (0 or 1) |
//! | `chaosd_scenario_runs_total` | `verdict` | scenario runs finished since the daemon started |
//! | `chaosd_build_info` | `version` | always 1 |
//!
//! Counters of recently ended faults stay (frozen) while the registry keeps them for `show`.

use std::{net::SocketAddr, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::Registry as PromRegistry,
};

use crate::api::{FaultInfo, FaultState};

/// What a scrape response declares; prometheus-client writes OpenMetrics text, which
/// Prometheus reads natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecoverLabels {
    kind: String,
    /// How the fault ended: recovered, expired, stopped.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    fault: String,
    kind: String,
    /// "seen" (matched the fault) or "affected" (the fault acted on it).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// Latency histograms kept for the daemon's life.
#[derive(Clone)]
pub struct Metrics {
    inject: Family<KindLabel, Histogram, fn() -> Histogram>,
    recover: Family<RecoverLabels, Histogram, fn() -> Histogram>,
    runs_active: Gauge,
    runs: Family<VerdictLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            inject: Family::new_with_constructor(latency_histogram),
            recover: Family::new_with_constructor(latency_histogram),
            runs_active: Gauge::default(),
            runs: Family::default(),
        }
    }
}

/// 50 µs to about 6.5 s in ×2 steps: applying a kernel rule takes well under a millisecond,
/// stopping stress workers can take seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 18))
}

/// Which counter family a kind's `seen`/`affected` counters belong to; None: it keeps none.
fn counter_unit(kind: &str) -> Option<&'static str> {
    crate::faults::kinds::named(kind).and_then(|k| k.counter_unit)
}

impl Metrics {
    pub fn observe_inject(&self, kind: &str, took: Duration) {
        self.inject
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn observe_recover(&self, kind: &str, reason: FaultState, took: Duration) {
        self.recover
            .get_or_create(&RecoverLabels {
                kind: kind.to_string(),
                reason: reason.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// A scenario run started; [`Metrics::run_finished`] follows.
    pub fn run_started(&self) {
        self.runs_active.inc();
    }

    /// A scenario run ended with `verdict` (its wire name).
    pub fn run_finished(&self, verdict: &str) {
        self.runs_active.dec();
        self.runs
            .get_or_create(&VerdictLabel {
                verdict: verdict.to_string(),
            })
            .inc();
    }

    /// The exposition text for `faults` (active and recently ended ones).
    pub fn render(&self, faults: &[FaultInfo]) -> String {
        let mut reg = PromRegistry::with_prefix("chaosd");
        reg.register(
            "faults_active",
            "Faults in force now",
            active_gauges(faults),
        );
        for unit in ["packets", "syscalls", "connections", "queries", "requests"] {
            reg.register(
                format!("fault_{unit}"),
                format!(
                    "The {unit} a fault matched (outcome=seen) and acted on (outcome=affected)"
                ),
                fault_counters(faults, unit),
            );
        }
        reg.register(
            "inject_duration_seconds",
            "Time to validate, journal and apply a fault",
            self.inject.clone(),
        );
        reg.register(
            "recover_duration_seconds",
            "Time to revert a fault, by how it ended",
            self.recover.clone(),
        );
        reg.register(
            "scenario_runs_active",
            "Scenario runs going now",
            self.runs_active.clone(),
        );
        reg.register(
            "scenario_runs",
            "Scenario runs finished since the daemon started, by verdict",
            self.runs.clone(),
        );
        reg.register(
            "build",
            "chaosd build information",
            Info::new(VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let mut out = String::new();
        encode(&mut out, &reg).expect("writing to a String cannot fail");
        out
    }
}

/// One series per known kind, zero when none is active, so dashboards see a 0 and not a gap.
fn active_gauges(faults: &[FaultInfo]) -> Family<KindLabel, Gauge> {
    let family = Family::<KindLabel, Gauge>::default();
    for row in crate::faults::kinds::KINDS {
        family.get_or_create_owned(&KindLabel {
            kind: row.name.to_string(),
        });
    }
    for f in faults.iter().filter(|f| f.state == FaultState::Active) {
        family
            .get_or_create(&KindLabel {
                kind: f.kind.clone(),
            })
            .inc();
    }
    family
}

/// Each fault's kernel counters, read just now; a fresh family per scrape holds them.
fn fault_counters(faults: &[FaultInfo], unit: &str) -> Family<FaultLabels, Counter> {
    let family = Family::<FaultLabels, Counter>::default();
    for f in faults
        .iter()
        .filter(|f| counter_unit(&f.kind) == Some(unit))
    {
        for (outcome, value) in [("seen", f.counters.seen), ("affected", f.counters.affected)] {
            let labels = FaultLabels {
                fault: f.id.clone(),
                kind: f.kind.clone(),
                outcome,
            };
            family.get_or_create(&labels).inc_by(value);
        }
    }
    family
}

/// Checks a `metrics_listen` address: /metrics has no authentication, so loopback only.
pub fn check_listen_addr(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(format!(
            "metrics_listen = \"{addr}\" is not a loopback address: /metrics has no \
             authentication, so chaosd serves it on 127.0.0.0/8 or [::1] only \
             (e.g. \"127.0.0.1:9464\"); scrape other hosts through a local agent"
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::{Counters, FaultSpec, NetLossParams};

    pub(crate) fn loss_fault(id: &str, state: FaultState, seen: u64, affected: u64) -> FaultInfo {
        FaultInfo {
            id: id.into(),
            kind: "net.loss".into(),
            fault: FaultSpec::NetLoss(NetLossParams {
                percent: 10.0,
                direction: Default::default(),
                filter: Default::default(),
            }),
            targets: vec![],
            state,
            duration: "1s".into(),
            duration_ms: 1000,
            created_at: String::new(),
            expires_at: String::new(),
            ended_at: None,
            counters: Counters { seen, affected },
            op_counters: vec![],
            netns: vec![],
            knobs: vec![],
            limits: vec![],
            outcome: None,
        }
    }

    #[test]
    fn renders_gauges_counters_histograms_and_build_info() {
        let m = Metrics::default();
        m.observe_inject("net.loss", Duration::from_micros(300));
        let text = m.render(&[
            loss_fault("aaaa", FaultState::Active, 10, 3),
            loss_fault("bbbb", FaultState::Recovered, 5, 5),
        ]);
        for line in [
            "chaosd_faults_active{kind=\"net.loss\"} 1",
            "chaosd_faults_active{kind=\"io.errno\"} 0",
            "chaosd_fault_packets_total{fault=\"aaaa\",kind=\"net.loss\",outcome=\"seen\"} 10",
            "chaosd_fault_packets_total{fault=\"aaaa\",kind=\"net.loss\",outcome=\"affected\"} 3",
            "chaosd_fault_packets_total{fault=\"bbbb\",kind=\"net.loss\",outcome=\"affected\"} 5",
            "chaosd_inject_duration_seconds_count{kind=\"net.loss\"} 1",
            "chaosd_build_info{version=\"",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("chaosd_fault_syscalls_total{"), "{text}");
    }

    #[test]
    fn kinds_count_packets_or_syscalls() {
        assert_eq!(counter_unit("net.loss"), Some("packets"));
        assert_eq!(counter_unit("net.corrupt"), Some("packets"));
        assert_eq!(counter_unit("net.connect_error"), Some("syscalls"));
        assert_eq!(counter_unit("io.errno"), Some("syscalls"));
        assert_eq!(counter_unit("tcp.latency"), Some("connections"));
        assert_eq!(counter_unit("dns.error"), Some("queries"));
        assert_eq!(counter_unit("http.status"), Some("requests"));
        assert_eq!(counter_unit("stress.cpu"), None);
    }

    #[test]
    fn metrics_listen_must_be_loopback() {
        assert!(check_listen_addr("127.0.0.1:9464".parse().unwrap()).is_ok());
        assert!(check_listen_addr("[::1]:9464".parse().unwrap()).is_ok());
        let e = check_listen_addr("0.0.0.0:9464".parse().unwrap()).unwrap_err();
        assert!(e.contains("not a loopback address"), "{e}");
    }
}
