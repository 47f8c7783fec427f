//! `chaosctl doctor`: which fault kinds this host supports, and for the others why not and how
//! to fix it (from the daemon's `GET /v1/capabilities`).

use chaosd::{client::Client, faults::capabilities::CapabilitiesInfo};

pub async fn run(client: &Client, json: bool) -> anyhow::Result<()> {
    let caps = client.capabilities().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&caps)?);
    } else {
        print(&caps);
    }
    Ok(())
}

fn print(c: &CapabilitiesInfo) {
    println!("kernel {}", c.kernel);
    println!();
    println!("{:<20} {:<10} DETAILS", "KIND", "SUPPORTED");
    for k in &c.kinds {
        if let (true, Some(limit)) = (k.supported, &k.limit) {
            println!("{:<20} {:<10} {}", k.kind, "limited", limit.reason);
            println!("{:<20} {:<10} fix: {}", "", "", limit.fix);
        } else if k.supported {
            println!("{:<20} {:<10} {}", k.kind, "yes", k.summary);
        } else {
            println!(
                "{:<20} {:<10} {}",
                k.kind,
                "NO",
                k.reason.as_deref().unwrap_or("")
            );
            if let Some(fix) = &k.fix {
                println!("{:<20} {:<10} fix: {fix}", "", "");
            }
        }
    }
    println!();
    println!("{:<20} {:<10} DETAILS", "HOST CHECK", "OK");
    for h in &c.host {
        println!(
            "{:<20} {:<10} {}",
            h.name,
            if h.ok { "yes" } else { "no" },
            h.detail
        );
    }
}
