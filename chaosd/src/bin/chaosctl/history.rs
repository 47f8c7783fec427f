//! `chaosctl history`: the daemon's audit trail of mutations, newest first.

use anyhow::Result;
use chaosd::{client::Client, daemon::audit::HistoryEntry};

pub async fn run(client: &Client, limit: u32, json: bool) -> Result<()> {
    let entries = client.history(limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        table(&entries);
    }
    Ok(())
}

fn table(entries: &[HistoryEntry]) {
    if entries.is_empty() {
        println!("no recorded changes");
        return;
    }
    println!(
        "{:<24} {:>6} {:>8} {:<16} {:<6} {:<22} {:>6}  OUTCOME",
        "AT", "UID", "PID", "COMMAND", "METHOD", "PATH", "STATUS"
    );
    for e in entries {
        println!(
            "{:<24} {:>6} {:>8} {:<16} {:<6} {:<22} {:>6}  {}",
            e.at,
            // A remote call has no local user: the certificate subject stands for it.
            if e.peer.is_some() {
                "remote".to_string()
            } else {
                e.uid.to_string()
            },
            e.pid.map_or("-".to_string(), |p| p.to_string()),
            e.peer.as_deref().or(e.comm.as_deref()).unwrap_or("-"),
            e.method,
            e.path,
            e.status,
            e.outcome
        );
    }
}
