//! `chaosctl schedule add|list|show|pause|resume|remove`: experiments the daemon starts on a
//! cron schedule.

use std::path::Path;

use anyhow::{Context as _, Result};
use chaosd::{
    api::{
        InjectRequest,
        schedule::{ScheduleInfo, ScheduleRequest},
    },
    client::Client,
};

use crate::args::ScheduleCommand;

pub async fn run(client: &Client, cmd: ScheduleCommand, json: bool) -> Result<()> {
    let info = match cmd {
        ScheduleCommand::Add { cron, file } => client.add_schedule(&request(&cron, &file)?).await?,
        ScheduleCommand::List => {
            let all = client.schedules().await?;
            if json {
                crate::print_json(&all);
            } else {
                table(&all);
            }
            return Ok(());
        }
        ScheduleCommand::Show { id } => client.schedule(&id).await?,
        ScheduleCommand::Pause { id } => client.schedule_set(&id, "pause").await?,
        ScheduleCommand::Resume { id } => client.schedule_set(&id, "resume").await?,
        ScheduleCommand::Remove { id } => client.remove_schedule(&id).await?,
    };
    if json {
        crate::print_json(&info);
    } else {
        detail(&info);
    }
    Ok(())
}

/// A `.json` file is one fault as `POST /v1/faults` takes it; anything else a scenario file,
/// checked here first so its errors show with their place.
fn request(cron: &str, file: &Path) -> Result<ScheduleRequest> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let source = Some(file.display().to_string());
    if file.extension().is_some_and(|e| e == "json") {
        let fault: InjectRequest = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a fault as POST /v1/faults takes it ({{\"fault\": {{\"kind\": ..}}, \"targets\": [..], \"duration\": \"30s\"}})",
                file.display()
            )
        })?;
        return Ok(ScheduleRequest {
            cron: cron.into(),
            scenario: None,
            fault: Some(fault),
            source,
        });
    }
    crate::scenario::check(file, &text)?;
    Ok(ScheduleRequest {
        cron: cron.into(),
        scenario: Some(text),
        fault: None,
        source,
    })
}

fn table(all: &[ScheduleInfo]) {
    if all.is_empty() {
        println!("no schedules");
        return;
    }
    println!(
        "{:<10} {:<18} {:<8} {:<7} {:<25} {:<8} TITLE",
        "ID", "CRON", "WHAT", "STATE", "NEXT (UTC)", "LAST"
    );
    for s in all {
        println!(
            "{:<10} {:<18} {:<8} {:<7} {:<25} {:<8} {}",
            s.id,
            s.cron,
            s.what,
            if s.paused { "paused" } else { "active" },
            s.next_due.as_deref().unwrap_or("-"),
            s.fires
                .first()
                .map_or("-".into(), |f| f.outcome.to_string()),
            s.title
        );
    }
}

fn detail(s: &ScheduleInfo) {
    println!("schedule {}: {} {:?}", s.id, s.what, s.title);
    println!("  cron      {} (UTC)", s.cron);
    if let Some(src) = &s.source {
        println!("  file      {src}");
    }
    println!("  state     {}", if s.paused { "paused" } else { "active" });
    println!("  next      {}", s.next_due.as_deref().unwrap_or("-"));
    println!("  runs as   uid {}", s.uid);
    if s.fires.is_empty() {
        println!("  no fires yet");
    }
    for f in &s.fires {
        println!("  {}  {:<8} {}", f.due_at, f.outcome.to_string(), f.detail);
    }
}
