//! `chaosctl validate`, `run`, `runs` and `report`: scenario files, run by the daemon.

use std::{
    io::IsTerminal as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use chaosd::{
    client::Client,
    scenario::{
        format::{self, ScenarioError},
        wire::{RunEvent, RunInfo, RunRequest, RunState, Verdict},
    },
};

use crate::{args::ReportFormat, live::Live};

fn read(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

/// `FILE:LINE:COLUMN: message`, then the line with a caret under the column.
fn explain(file: &Path, text: &str, e: &ScenarioError) -> String {
    let line = text.lines().nth(e.line - 1).unwrap_or_default();
    format!(
        "{}:{}:{}: {}\n  {line}\n  {}^",
        file.display(),
        e.line,
        e.column,
        e.message,
        " ".repeat(e.column.saturating_sub(1))
    )
}

/// The scenario in `text` (read from `file`), or its error with the place shown.
pub fn check(file: &Path, text: &str) -> Result<format::Scenario> {
    format::parse(text).map_err(|e| anyhow::anyhow!(explain(file, text, &e)))
}

/// Checks a file without the daemon: syntax, fields, fault parameters, blast radius.
pub fn validate(file: &Path) -> Result<()> {
    let text = read(file)?;
    let s = check(file, &text)?;
    println!(
        "{}: ok: {:?}, {} probe(s), {} step(s), faults from +0s to +{:.1}s",
        file.display(),
        s.title,
        s.steady_state.probes.len(),
        s.steps.len(),
        s.schedule_end().as_secs_f64()
    );
    Ok(())
}

/// Starts a run and follows it; Ctrl-C asks the daemon to abort (it rolls back either way).
pub async fn run(client: &Client, file: &Path, json: bool, detach: bool) -> Result<()> {
    let text = read(file)?;
    let scenario = check(file, &text)?;
    let info = client
        .start_run(&RunRequest {
            scenario: text,
            source: Some(file.display().to_string()),
        })
        .await?;
    if detach {
        println!("{}", info.id);
        return Ok(());
    }
    if !json {
        println!(
            "run {} started: {} (Ctrl-C aborts and rolls back; the run goes on if this client goes away)",
            info.id, info.title
        );
    }
    // In place on a terminal; one line per event otherwise (logs, pipes, --json).
    let live = (!json && std::io::stdout().is_terminal()).then(|| Live::new(scenario));
    follow(client, &info.id, json, live).await?;
    let report = client.run_report(&info.id).await?;
    if json {
        return verdict_result(&info.id, report.verdict, &report.reason);
    }
    println!("\nverdict: {} — {}", report.verdict, report.reason);
    if let Some(ms) = report.recovery_ms {
        println!("recovery time: {ms} ms");
    }
    if let Some(a) = report.availability_percent {
        println!("availability from injection to end: {a:.1} %");
    }
    println!("full report: chaosctl report {}", info.id);
    verdict_result(&info.id, report.verdict, &report.reason)
}

fn verdict_result(id: &str, verdict: Verdict, reason: &str) -> Result<()> {
    if verdict == Verdict::Passed {
        Ok(())
    } else {
        bail!("run {id} ended {verdict}: {reason}")
    }
}

/// Prints one event a line; an error when stdout is gone (e.g. `| head` ended): the client
/// then leaves and the run goes on in the daemon.
fn print_event(e: &RunEvent, json: bool) -> Result<()> {
    use std::io::Write as _;
    let line = if json {
        serde_json::to_string(e).expect("events serialise")
    } else {
        e.to_string()
    };
    writeln!(std::io::stdout(), "{line}")
        .context("writing to stdout; the run goes on in the daemon")
}

async fn follow(client: &Client, id: &str, json: bool, mut live: Option<Live>) -> Result<()> {
    // A live view redraws its time left between events.
    let wait = Duration::from_millis(if live.is_some() { 250 } else { 2000 });
    let mut after = 0;
    let mut aborting = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            page = client.run_events(id, after, wait) => {
                let page = page?;
                for e in &page.events {
                    match &mut live {
                        Some(l) => l.event(e),
                        None => print_event(e, json)?,
                    }
                }
                if let Some(l) = &live {
                    l.tick();
                }
                after = page.next;
                if page.finished {
                    if let Some(l) = live.take() {
                        l.finish();
                    }
                    return Ok(());
                }
            }
            _ = &mut ctrl_c, if !aborting => {
                aborting = true;
                client.abort_run(id).await?;
                eprintln!("aborting run {id}: rolling back (Ctrl-C again leaves; the daemon finishes the rollback)");
                let again = tokio::signal::ctrl_c();
                tokio::spawn(async move {
                    if again.await.is_ok() {
                        std::process::exit(130);
                    }
                });
            }
        }
    }
}

pub async fn runs(client: &Client, json: bool) -> Result<()> {
    let runs = client.runs().await?;
    if json {
        crate::print_json(&runs);
        return Ok(());
    }
    if runs.is_empty() {
        println!("no runs");
        return Ok(());
    }
    println!(
        "{:<10} {:<9} {:<10} {:<17} {:<25} TITLE",
        "ID", "STATE", "PHASE", "VERDICT", "STARTED"
    );
    for r in &runs {
        println!(
            "{:<10} {:<9} {:<10} {:<17} {:<25} {}",
            r.id,
            state(r),
            r.phase.to_string(),
            r.verdict.map_or("-".into(), |v| v.to_string()),
            r.started_at,
            r.title
        );
    }
    Ok(())
}

fn state(r: &RunInfo) -> &'static str {
    match r.state {
        RunState::Running => "running",
        RunState::Finished => "finished",
    }
}

pub async fn report(client: &Client, id: &str, format: ReportFormat, json: bool) -> Result<()> {
    let report = client.run_report(id).await?;
    match (format, json) {
        (ReportFormat::Json, _) | (_, true) => crate::print_json(&report),
        (ReportFormat::Md, false) => print!("{}", report.markdown()),
    }
    Ok(())
}

/// Writes the report as one HTML page; prints where.
pub async fn report_html(client: &Client, id: &str, output: Option<PathBuf>) -> Result<()> {
    let report = client.run_report(id).await?;
    let path = output.unwrap_or_else(|| PathBuf::from(format!("chaosd-report-{id}.html")));
    std::fs::write(&path, report.html()).with_context(|| format!("writing {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}
