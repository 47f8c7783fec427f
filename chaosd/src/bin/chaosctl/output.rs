//! Human output: tables and detail views. `--json` bypasses all of this.

use std::time::SystemTime;

use chaosd::api::{FaultInfo, FaultSpec, StatusInfo};

pub fn fault_table(faults: &[FaultInfo]) {
    if faults.is_empty() {
        println!("no faults");
        return;
    }
    println!(
        "{:<10} {:<10} {:<9} {:<11} {:>10} {:>10}  TARGETS",
        "ID", "KIND", "STATE", "REMAINING", "SEEN", "AFFECTED"
    );
    for f in faults {
        println!(
            "{:<10} {:<10} {:<9} {:<11} {:>10} {:>10}  {}",
            f.id,
            f.kind,
            f.state.to_string(),
            remaining(f),
            f.counters.seen,
            f.counters.affected,
            targets(f)
        );
    }
}

pub fn fault_detail(f: &FaultInfo) {
    println!("id:         {}", f.id);
    println!("kind:       {}", f.kind);
    println!("params:     {}", params(&f.fault));
    println!("state:      {}", f.state);
    println!("targets:    {}", targets(f));
    println!("created:    {}", f.created_at);
    println!("expires:    {} ({} left)", f.expires_at, remaining(f));
    if let Some(end) = &f.ended_at {
        println!("ended:      {end}");
    }
    let share = if f.counters.seen > 0 {
        100.0 * f.counters.affected as f64 / f.counters.seen as f64
    } else {
        0.0
    };
    println!("seen:       {}", f.counters.seen);
    println!("affected:   {} ({share:.1} %)", f.counters.affected);
}

pub fn status(s: &StatusInfo) {
    println!("chaosd {} (pid {}), up {}s", s.version, s.pid, s.uptime_s);
    println!("kernel:          {}", s.kernel);
    println!("cgroup2 mount:   {}", s.cgroup2_mount);
    println!("active faults:   {}", s.active_faults);
    println!("max duration:    {}s", s.max_duration_s);
    match s.default_duration_s {
        Some(d) => println!("default duration: {d}s"),
        None => println!("default duration: none (every fault must name one)"),
    }
    println!(
        "net programs:    {}",
        if s.net_programs_attached {
            "attached"
        } else {
            "detached (no network fault)"
        }
    );
}

fn params(spec: &FaultSpec) -> String {
    match spec {
        FaultSpec::NetLoss(p) => {
            format!("{} % of packets, {:?}", p.percent, p.direction).to_lowercase()
        }
    }
}

fn targets(f: &FaultInfo) -> String {
    f.targets
        .iter()
        .map(|t| t.cgroup.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn remaining(f: &FaultInfo) -> String {
    if f.ended_at.is_some() {
        return "-".into();
    }
    let Ok(expires) = humantime::parse_rfc3339(&f.expires_at) else {
        return "?".into();
    };
    let left = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    humantime::format_duration(std::time::Duration::from_secs(left.as_secs())).to_string()
}
