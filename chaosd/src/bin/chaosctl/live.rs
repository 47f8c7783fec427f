//! `chaosctl run` on a terminal: the phase and the time left in it, and each probe's state, on
//! lines that update in place (indicatif), with the run's other events printed above them.
//! Not on a terminal (or with --json) `run` prints one line per event instead.

use std::time::{Duration, Instant};

use chaosd::scenario::{
    format::Scenario,
    wire::{Event, Phase, RunEvent},
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Live {
    multi: MultiProgress,
    phase_bar: ProgressBar,
    probes: Vec<(String, ProgressBar)>,
    phase: Phase,
    /// When this client saw the phase begin.
    since: Instant,
    scenario: Scenario,
}

impl Live {
    pub fn new(scenario: Scenario) -> Live {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template("{spinner} {msg}")
            .expect("a valid template")
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ");
        let phase_bar = multi.add(ProgressBar::new_spinner().with_style(style));
        phase_bar.enable_steady_tick(Duration::from_millis(120));
        let line = ProgressStyle::with_template("  {msg}").expect("a valid template");
        let probes = scenario
            .steady_state
            .probes
            .iter()
            .map(|p| {
                let bar = multi.add(ProgressBar::new_spinner().with_style(line.clone()));
                bar.set_message(format!("… {}: waiting for a check", p.name));
                (p.name.clone(), bar)
            })
            .collect();
        let live = Live {
            multi,
            phase_bar,
            probes,
            phase: Phase::Preflight,
            since: Instant::now(),
            scenario,
        };
        live.tick();
        live
    }

    /// Takes one event: a probe's health updates its line, a phase the top line; the rest is
    /// printed above the lines.
    pub fn event(&mut self, e: &RunEvent) {
        match &e.event {
            Event::ProbeHealth {
                probe,
                passed,
                total,
                p99_ms,
                last_error,
            } => {
                if let Some((_, bar)) = self.probes.iter().find(|(n, _)| n == probe) {
                    let (mark, tail) = match last_error {
                        None => ("✓", String::new()),
                        Some(err) => ("✗", format!(" — {err}")),
                    };
                    bar.set_message(format!(
                        "{mark} {probe}: {passed}/{total} passed, p99 {p99_ms:.0} ms{tail}"
                    ));
                }
            }
            Event::Phase { phase } => {
                self.phase = *phase;
                self.since = Instant::now();
                let _ = self.multi.println(e.to_string());
            }
            _ => {
                let _ = self.multi.println(e.to_string());
            }
        }
        self.tick();
    }

    /// Redraws the phase line with the time left in the phase.
    pub fn tick(&self) {
        let ss = &self.scenario.steady_state;
        let planned = match self.phase {
            Phase::Preflight => Some(("services, targets, probes passing once", ss.warmup)),
            Phase::Baseline => Some(("measuring the steady state", ss.baseline)),
            Phase::Inject => Some(("faults in force", self.scenario.schedule_end())),
            Phase::Recovery => Some(("waiting for the steady state", ss.recovery_timeout)),
            Phase::Rollback | Phase::Done => None,
        };
        let msg = match planned {
            Some((what, limit)) => {
                let left = limit.saturating_sub(self.since.elapsed());
                let bound = if matches!(self.phase, Phase::Inject | Phase::Baseline) {
                    "left"
                } else {
                    "at most"
                };
                format!(
                    "{}: {what}, {:.1} s {bound}",
                    self.phase,
                    left.as_secs_f64()
                )
            }
            None => format!("{}", self.phase),
        };
        self.phase_bar.set_message(msg);
    }

    /// Removes the live lines, leaving the printed events.
    pub fn finish(self) {
        for (_, bar) in &self.probes {
            bar.finish_and_clear();
        }
        self.phase_bar.finish_and_clear();
    }
}
