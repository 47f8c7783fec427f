//! The report of a run: verdict, timeline, per-probe success rate and latency percentiles per
//! phase, availability and recovery time; as JSON (the type itself) or Markdown ([`Report::markdown`]).

use std::{fmt::Write as _, time::Duration};

use serde::{Deserialize, Serialize};

use crate::scenario::{
    format::Scenario,
    wire::{Event, Phase, RunEvent, Verdict},
};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub ended_at: String,
    pub duration_ms: u64,
    pub verdict: Verdict,
    /// Why the verdict is what it is, in one sentence.
    pub reason: String,
    #[serde(default)]
    pub abort_reason: Option<String>,
    /// The `[[abort.prometheus]]` rule that aborted the run, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_rule: Option<AbortFired>,
    /// Whether the steady state held again after rollback; `None` when nothing was injected.
    #[serde(default)]
    pub recovered: Option<bool>,
    /// From the end of rollback to the first of the passes that confirmed recovery.
    #[serde(default)]
    pub recovery_ms: Option<u64>,
    /// Share of passed checks, all probes together, from the first injection to the end.
    #[serde(default)]
    pub availability_percent: Option<f64>,
    pub phases: Vec<PhaseSpan>,
    pub steps: Vec<StepReport>,
    pub probes: Vec<ProbeReport>,
    /// Every event but the periodic probe health lines.
    pub timeline: Vec<RunEvent>,
    /// The scenario as validated.
    pub scenario: Scenario,
}

/// A Prometheus abort rule that fired: which, on what value, when.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AbortFired {
    pub rule: String,
    pub query: String,
    pub value: f64,
    /// When the query that fired was asked, from the run's start.
    pub at_ms: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PhaseSpan {
    pub phase: Phase,
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepReport {
    pub name: String,
    pub kind: String,
    /// Resolved cgroups.
    pub cgroups: Vec<String>,
    pub planned_at_ms: u64,
    pub planned_duration_ms: u64,
    #[serde(default)]
    pub fault_id: Option<String>,
    /// When the fault was in force, from the run's start.
    #[serde(default)]
    pub injected_ms: Option<u64>,
    #[serde(default)]
    pub reverted_ms: Option<u64>,
    /// "reverted", "not started", or the injection error.
    pub outcome: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProbeReport {
    pub name: String,
    pub check: String,
    pub tolerance_percent: f64,
    /// Its share of passes under the faults met the tolerance.
    pub hypothesis_held: bool,
    #[serde(default)]
    pub availability_percent: Option<f64>,
    pub phases: Vec<PhaseStats>,
    /// Its checks over time (merged into at most [`MAX_SERIES`] points on long runs), for
    /// the HTML report's timeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<CheckPoint>,
}

/// Points kept per probe in a report; a long run's checks are merged, a failure winning.
pub const MAX_SERIES: usize = 2_000;

/// One check (or merged checks) of a probe.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckPoint {
    /// When it started, from the run's start.
    pub at_ms: u64,
    /// The slowest of the merged checks.
    pub latency_ms: f64,
    /// Every merged check passed.
    pub ok: bool,
}

impl CheckPoint {
    /// `points` merged into at most `max` (consecutive buckets of equal size).
    pub fn merged(points: &[CheckPoint], max: usize) -> Vec<CheckPoint> {
        if points.len() <= max || max == 0 {
            return points.to_vec();
        }
        let per = points.len().div_ceil(max);
        points
            .chunks(per)
            .map(|c| CheckPoint {
                at_ms: c[0].at_ms,
                latency_ms: c.iter().map(|p| p.latency_ms).fold(0.0, f64::max),
                ok: c.iter().all(|p| p.ok),
            })
            .collect()
    }
}

/// One probe's checks started in one phase. Latencies count failed checks too (a timeout
/// counts as the timeout).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PhaseStats {
    pub phase: Phase,
    pub checks: u64,
    pub passed: u64,
    pub success_percent: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl PhaseStats {
    /// Stats of `(latency, passed)` checks; `None` without checks.
    pub fn of(phase: Phase, checks: &[(Duration, bool)]) -> Option<PhaseStats> {
        if checks.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = checks.iter().map(|(l, _)| l.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let passed = checks.iter().filter(|(_, ok)| *ok).count() as u64;
        Some(PhaseStats {
            phase,
            checks: checks.len() as u64,
            passed,
            success_percent: percent(passed, checks.len() as u64),
            p50_ms: percentile(&ms, 50.0),
            p90_ms: percentile(&ms, 90.0),
            p99_ms: percentile(&ms, 99.0),
            max_ms: ms[ms.len() - 1],
        })
    }
}

pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Nearest-rank percentile of sorted values (`sorted` must not be empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Report {
    /// The report as Markdown, for people.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# {}\n", self.title);
        if let Some(d) = &self.description {
            let _ = writeln!(md, "{}\n", d.trim());
        }
        let _ = writeln!(md, "**Verdict: {}** — {}\n", self.verdict, self.reason);
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(md, "| run | `{}` |", self.id);
        if let Some(s) = &self.source {
            let _ = writeln!(md, "| scenario file | `{s}` |");
        }
        let _ = writeln!(md, "| started | {} |", self.started_at);
        let _ = writeln!(md, "| duration | {:.1} s |", self.duration_ms as f64 / 1e3);
        if let Some(a) = &self.abort_reason {
            let _ = writeln!(md, "| aborted | {a} |");
        }
        if let Some(f) = &self.abort_rule {
            let _ = writeln!(
                md,
                "| abort rule | `{}` fired at +{:.1} s: `{}` = {} |",
                f.rule,
                f.at_ms as f64 / 1e3,
                f.query,
                f.value
            );
        }
        let recovery = match (self.recovered, self.recovery_ms) {
            (Some(true), Some(ms)) => format!("{ms} ms"),
            (Some(false), _) => "did not recover".into(),
            _ => "- (nothing injected)".into(),
        };
        let _ = writeln!(md, "| recovery time | {recovery} |");
        if let Some(a) = self.availability_percent {
            let _ = writeln!(md, "| availability (injection to end) | {a:.1} % |");
        }
        self.steps_md(&mut md);
        self.probes_md(&mut md);
        let _ = writeln!(md, "\n## Timeline\n");
        for e in &self.timeline {
            let _ = writeln!(md, "- `{e}`");
        }
        md
    }

    fn steps_md(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "\n## Steps\n\n| step | kind | cgroups | planned | in force | outcome |\n|---|---|---|---|---|---|"
        );
        for s in &self.steps {
            let ms = |v: Option<u64>| v.map_or("-".into(), |v| format!("{:.1}s", v as f64 / 1e3));
            let _ = writeln!(
                md,
                "| {} | {} | {} | +{:.1}s for {:.1}s | {} → {} | {} |",
                s.name,
                s.kind,
                s.cgroups.join(", "),
                s.planned_at_ms as f64 / 1e3,
                s.planned_duration_ms as f64 / 1e3,
                ms(s.injected_ms),
                ms(s.reverted_ms),
                s.outcome
            );
        }
    }

    fn probes_md(&self, md: &mut String) {
        let _ = writeln!(md, "\n## Probes\n");
        for p in &self.probes {
            let held = if p.hypothesis_held {
                "held"
            } else {
                "did not hold"
            };
            let avail = p
                .availability_percent
                .map_or(String::new(), |a| format!(", availability {a:.1} %"));
            let _ = writeln!(
                md,
                "### {} — `{}`\n\nHypothesis {held} (tolerance {} % failures){avail}.\n",
                p.name, p.check, p.tolerance_percent
            );
            let _ = writeln!(
                md,
                "| phase | checks | passed | success | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|---|---|"
            );
            for s in &p.phases {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {:.1} % | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
                    s.phase,
                    s.checks,
                    s.passed,
                    s.success_percent,
                    s.p50_ms,
                    s.p90_ms,
                    s.p99_ms,
                    s.max_ms
                );
            }
            let _ = writeln!(md);
        }
    }

    /// The timeline without the periodic health lines.
    pub fn timeline_of(events: &[RunEvent]) -> Vec<RunEvent> {
        events
            .iter()
            .filter(|e| !matches!(e.event, Event::ProbeHealth { .. }))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        let checks = [
            (Duration::from_millis(10), true),
            (Duration::from_millis(30), false),
            (Duration::from_millis(20), true),
        ];
        let s = PhaseStats::of(Phase::Inject, &checks).unwrap();
        assert_eq!((s.checks, s.passed), (3, 2));
        assert!((s.success_percent - 66.666).abs() < 0.01);
        assert_eq!((s.p50_ms, s.max_ms), (20.0, 30.0));
        assert!(PhaseStats::of(Phase::Inject, &[]).is_none());
    }
}
