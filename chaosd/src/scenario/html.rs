//! The report as one self-contained HTML page (`chaosctl report ID --html`): inline CSS and an
//! inline SVG timeline, no script and nothing fetched, so it opens anywhere and can be mailed.
//!
//! The timeline has a row of phases, a row of fault windows (each step while in force), and a
//! row per probe: a tick per check (pass or fail) above its latency line; vertical markers for
//! the abort, the end of rollback and recovery.

use std::fmt::Write as _;

use crate::scenario::{
    report::{ProbeReport, Report},
    wire::{Event, Phase},
};

/// The fill of fault windows; tests look for this colour in a rendering.
pub const FAULT_FILL: &str = "#d7263d";
const PASS: &str = "#2a9d4b";
const FAIL: &str = "#f28e2b";
const LATENCY: &str = "#1f5fa8";

const WIDTH: f64 = 960.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 20.0;
const ROW: f64 = 28.0;
const PROBE_ROW: f64 = 64.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn phase_fill(p: Phase) -> &'static str {
    match p {
        Phase::Preflight => "#e4e4e4",
        Phase::Baseline => "#cfe3f3",
        Phase::Inject => "#fde0c5",
        Phase::Rollback => "#e9d5f0",
        Phase::Recovery => "#d5f0dc",
        Phase::Done => "#ffffff",
    }
}

/// Maps run milliseconds to x.
struct Scale {
    end_ms: f64,
}

impl Scale {
    fn x(&self, ms: u64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * (ms as f64 / self.end_ms).clamp(0.0, 1.0)
    }
}

impl Report {
    /// The report as a self-contained HTML page.
    pub fn html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{}</style></head><body>",
            esc(&self.title),
            CSS
        );
        let _ = write!(
            h,
            "<h1>{}</h1><p class=\"verdict {}\">{} — {}</p>",
            esc(&self.title),
            esc(&self.verdict.to_string().replace(' ', "-")),
            esc(&self.verdict.to_string()),
            esc(&self.reason)
        );
        self.summary_html(&mut h);
        h.push_str("<h2>Timeline</h2>");
        h.push_str(&self.svg());
        self.steps_html(&mut h);
        self.probes_html(&mut h);
        h.push_str("<h2>Events</h2><ul class=\"events\">");
        for e in &self.timeline {
            let _ = write!(h, "<li><code>{}</code></li>", esc(&e.to_string()));
        }
        h.push_str("</ul></body></html>\n");
        h
    }

    fn summary_html(&self, h: &mut String) {
        let mut rows: Vec<(&str, String)> = vec![
            ("run", self.id.clone()),
            ("started", self.started_at.clone()),
            (
                "duration",
                format!("{:.1} s", self.duration_ms as f64 / 1e3),
            ),
        ];
        if let Some(s) = &self.source {
            rows.push(("scenario file", s.clone()));
        }
        let mttr = match (self.recovered, self.recovery_ms) {
            (Some(true), Some(ms)) => format!("{ms} ms (end of rollback to steady state)"),
            (Some(false), _) => "did not recover".into(),
            _ => "- (nothing injected)".into(),
        };
        rows.push(("time to recover (MTTR)", mttr));
        if let Some(a) = self.availability_percent {
            rows.push(("availability (injection to end)", format!("{a:.2} %")));
        }
        if let Some(a) = &self.abort_reason {
            rows.push(("aborted", a.clone()));
        }
        if let Some(f) = &self.abort_rule {
            rows.push((
                "abort rule",
                format!(
                    "{} fired at +{:.1} s: {} = {}",
                    f.rule,
                    f.at_ms as f64 / 1e3,
                    f.query,
                    f.value
                ),
            ));
        }
        h.push_str("<table class=\"summary\">");
        for (k, v) in rows {
            let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
        }
        h.push_str("</table>");
        if let Some(d) = &self.description {
            let _ = write!(h, "<p>{}</p>", esc(d.trim()));
        }
    }

    /// The SVG timeline.
    fn svg(&self) -> String {
        let scale = Scale {
            end_ms: self.duration_ms.max(1) as f64,
        };
        let height = 30.0 + 2.0 * ROW + PROBE_ROW * self.probes.len() as f64 + 40.0;
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"11\">"
        );
        let mut y = 10.0;
        label(&mut s, y, ROW, "phases");
        for p in &self.phases {
            let (x0, x1) = (scale.x(p.start_ms), scale.x(p.end_ms));
            let _ = write!(
                s,
                "<rect x=\"{x0:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\"><title>{} {}–{} ms</title></rect>",
                (x1 - x0).max(0.5),
                ROW - 4.0,
                phase_fill(p.phase),
                p.phase,
                p.start_ms,
                p.end_ms
            );
            if x1 - x0 > 40.0 {
                let _ = write!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                    x0 + 3.0,
                    y + 16.0,
                    p.phase
                );
            }
        }
        y += ROW;
        label(&mut s, y, ROW, "faults");
        for step in &self.steps {
            let (Some(a), Some(b)) = (
                step.injected_ms,
                step.reverted_ms.or(Some(self.duration_ms)),
            ) else {
                continue;
            };
            let (x0, x1) = (scale.x(a), scale.x(b));
            let _ = write!(
                s,
                "<rect class=\"fault\" x=\"{x0:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{FAULT_FILL}\"><title>{} ({}) {a}–{b} ms</title></rect>",
                (x1 - x0).max(1.0),
                ROW - 4.0,
                esc(&step.name),
                esc(&step.kind)
            );
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#fff\">{}</text>",
                x0 + 3.0,
                y + 16.0,
                esc(&step.name)
            );
        }
        y += ROW;
        for p in &self.probes {
            probe_row(&mut s, &scale, y, p);
            y += PROBE_ROW;
        }
        self.markers(&mut s, &scale, y);
        axis(&mut s, &scale, y);
        s.push_str("</svg>");
        s
    }

    /// Vertical lines: abort, end of rollback, recovery.
    fn markers(&self, s: &mut String, scale: &Scale, bottom: f64) {
        // (when, colour, label, hover text)
        let mut marks: Vec<(u64, &str, String, String)> = Vec::new();
        for e in &self.timeline {
            if let Event::Abort { reason } = &e.event {
                marks.push((e.at_ms, "#000", "abort".into(), format!("abort: {reason}")));
            }
        }
        let rollback_end = self
            .phases
            .iter()
            .find(|p| p.phase == Phase::Rollback)
            .map(|p| p.end_ms);
        if let Some(end) = rollback_end {
            marks.push((
                end,
                "#7b3294",
                "rolled back".into(),
                "end of rollback".into(),
            ));
            if let (Some(true), Some(ms)) = (self.recovered, self.recovery_ms) {
                let text = format!("recovered +{ms} ms");
                marks.push((end + ms, PASS, text.clone(), text));
            }
        }
        for (i, (at, colour, short, text)) in marks.iter().enumerate() {
            let x = scale.x(*at);
            let _ = write!(
                s,
                "<line x1=\"{x:.1}\" y1=\"8\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"{colour}\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"><title>{}</title></line>",
                esc(text)
            );
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{}</text>",
                x + 3.0,
                bottom + 14.0 + 11.0 * (i % 3) as f64,
                esc(short)
            );
        }
    }
}

fn label(s: &mut String, y: f64, h: f64, text: &str) {
    let _ = write!(
        s,
        "<text x=\"4\" y=\"{:.1}\" font-weight=\"bold\">{}</text>",
        y + h / 2.0 + 2.0,
        esc(text)
    );
}

/// Ticks per check (pass/fail) over a latency line scaled to the probe's slowest check.
fn probe_row(s: &mut String, scale: &Scale, y: f64, p: &ProbeReport) {
    label(s, y, 20.0, &p.name);
    let _ = write!(
        s,
        "<text x=\"4\" y=\"{:.1}\" fill=\"#555\">latency</text>",
        y + 44.0
    );
    for c in &p.series {
        let x = scale.x(c.at_ms);
        let _ = write!(
            s,
            "<rect x=\"{x:.1}\" y=\"{y}\" width=\"2\" height=\"14\" fill=\"{}\"/>",
            if c.ok { PASS } else { FAIL }
        );
    }
    let max = p.series.iter().map(|c| c.latency_ms).fold(1.0, f64::max);
    let (top, h) = (y + 20.0, PROBE_ROW - 28.0);
    let points: Vec<String> = p
        .series
        .iter()
        .map(|c| {
            format!(
                "{:.1},{:.1}",
                scale.x(c.at_ms),
                top + h - h * (c.latency_ms / max)
            )
        })
        .collect();
    let _ = write!(
        s,
        "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{}\" height=\"{h}\" fill=\"#f7f7f7\"/>",
        WIDTH - LEFT - RIGHT
    );
    if !points.is_empty() {
        let _ = write!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{LATENCY}\" stroke-width=\"1.2\"/>",
            points.join(" ")
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#555\" text-anchor=\"end\">{max:.0} ms</text>",
        LEFT - 4.0,
        top + 9.0
    );
}

/// Seconds along the bottom, about ten ticks.
fn axis(s: &mut String, scale: &Scale, y: f64) {
    let total_s = scale.end_ms / 1e3;
    let step = [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|st| total_s / st <= 10.0)
        .unwrap_or(1800.0);
    let mut t = 0.0;
    while t <= total_s {
        let x = scale.x((t * 1e3) as u64);
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{y}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#999\"/><text x=\"{x:.1}\" y=\"{:.1}\" fill=\"#777\" text-anchor=\"middle\" font-size=\"9\">{t}s</text>",
            y + 4.0,
            y - 2.0
        );
        t += step;
    }
}

impl Report {
    fn steps_html(&self, h: &mut String) {
        h.push_str("<h2>Steps</h2><table><tr><th>step</th><th>kind</th><th>cgroups</th><th>planned</th><th>in force</th><th>outcome</th></tr>");
        for st in &self.steps {
            let ms = |v: Option<u64>| v.map_or("-".into(), |v| format!("{:.1} s", v as f64 / 1e3));
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>+{:.1} s for {:.1} s</td><td>{} → {}</td><td>{}</td></tr>",
                esc(&st.name),
                esc(&st.kind),
                esc(&st.cgroups.join(", ")),
                st.planned_at_ms as f64 / 1e3,
                st.planned_duration_ms as f64 / 1e3,
                ms(st.injected_ms),
                ms(st.reverted_ms),
                esc(&st.outcome)
            );
        }
        h.push_str("</table>");
    }

    fn probes_html(&self, h: &mut String) {
        h.push_str("<h2>Probes</h2>");
        for p in &self.probes {
            let _ = write!(
                h,
                "<h3>{} <code>{}</code></h3><p>Hypothesis {} (tolerance {} % failures){}.</p>",
                esc(&p.name),
                esc(&p.check),
                if p.hypothesis_held {
                    "held"
                } else {
                    "did not hold"
                },
                p.tolerance_percent,
                p.availability_percent
                    .map_or(String::new(), |a| format!(", availability {a:.2} %"))
            );
            h.push_str("<table><tr><th>phase</th><th>checks</th><th>passed</th><th>success</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>");
            for s in &p.phases {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1} %</td><td>{:.1} ms</td><td>{:.1} ms</td><td>{:.1} ms</td><td>{:.1} ms</td></tr>",
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
            h.push_str("</table>");
        }
    }
}

const CSS: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}\
th{background:#f2f2f2}.verdict{font-size:18px;padding:6px 10px;border-radius:4px;background:#eee}\
.verdict.passed{background:#d5f0dc}.verdict.failed,.verdict.not-recovered,.verdict.error{background:#fbd5d5}\
.verdict.aborted{background:#fde0c5}.events{font-size:12px}svg{border:1px solid #ddd;background:#fff}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_fetches_nothing() {
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
        let s = Scale { end_ms: 1000.0 };
        assert_eq!(s.x(0), LEFT);
        assert_eq!(s.x(5000), WIDTH - RIGHT);
        // The CSS names no URL; the page's only URL is the SVG namespace.
        assert!(!CSS.contains("url(") && !CSS.contains("@import"));
    }
}
