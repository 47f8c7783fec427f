//! Human output: tables and detail views. `--json` bypasses all of this.

use std::time::SystemTime;

use chaosd::api::{DryRunInfo, FaultInfo, FaultSpec, NetFilter, Proto, StatusInfo};

pub fn fault_table(faults: &[FaultInfo]) {
    if faults.is_empty() {
        println!("no faults");
        return;
    }
    println!(
        "{:<10} {:<10} {:<9} {:<9} {:<11} {:>10} {:>10}  TARGETS",
        "ID", "KIND", "STATE", "DURATION", "REMAINING", "SEEN", "AFFECTED"
    );
    for f in faults {
        println!(
            "{:<10} {:<10} {:<9} {:<9} {:<11} {:>10} {:>10}  {}",
            f.id,
            f.kind,
            f.state.to_string(),
            duration(f),
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
    for ns in &f.netns {
        println!("netns:      {ns}");
    }
    for k in &f.knobs {
        println!(
            "knob:       {} {}: {} (was {})",
            k.cgroup, k.file, k.set, k.before
        );
    }
    for l in &f.limits {
        let was = if l.before == u64::MAX {
            "unlimited".to_string()
        } else {
            l.before.to_string()
        };
        println!(
            "limit:      process {} {}: {} (was {was}, hard {})",
            l.pid, l.resource, l.set, l.hard
        );
    }
    println!("duration:   {}", duration(f));
    println!("created:    {}", f.created_at);
    println!("expires:    {} ({} left)", f.expires_at, remaining(f));
    if let Some(end) = &f.ended_at {
        println!("ended:      {end}");
    }
    if let Some(outcome) = &f.outcome {
        println!("outcome:    {outcome}");
    }
    let share = if f.counters.seen > 0 {
        100.0 * f.counters.affected as f64 / f.counters.seen as f64
    } else {
        0.0
    };
    println!("seen:       {}", f.counters.seen);
    println!("affected:   {} ({share:.1} %)", f.counters.affected);
    for c in &f.op_counters {
        println!(
            "  {:<9} {} checked, {} failed",
            format!("{}:", c.op),
            c.checked,
            c.failed
        );
    }
}

/// A dry run: the cgroups a fault would act on and the processes in them; nothing changed.
pub fn dry_run(plan: &DryRunInfo) {
    let processes: usize = plan.targets.iter().map(|t| t.processes.len()).sum();
    println!(
        "dry run: {} would act on {} cgroup(s), {processes} process(es) now; nothing was changed",
        plan.kind,
        plan.targets.len()
    );
    println!("{:<8} {:<16} CGROUP", "PID", "COMM");
    for t in &plan.targets {
        if t.processes.is_empty() {
            println!("{:<8} {:<16} {}", "-", "(empty)", t.cgroup);
        }
        for p in &t.processes {
            println!("{:<8} {:<16} {}", p.pid, p.comm, p.cgroup);
        }
    }
    if !plan.excluded.is_empty() {
        println!("left out: {}", plan.excluded.join(", "));
    }
    for u in plan.uncovered.iter().filter(|u| !u.processes.is_empty()) {
        let names: Vec<String> = u
            .processes
            .iter()
            .map(|p| format!("{} {}", p.pid, p.comm))
            .collect();
        println!(
            "not covered: processes directly in {} (it holds a left-out cgroup): {}",
            u.cgroup,
            names.join(", ")
        );
    }
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
    use chaosd::api::{
        HttpAbortParams, HttpDelayParams, HttpStatusParams, TcpBandwidthParams, TcpDownParams,
        TcpLatencyParams, TcpLimitDataParams, TcpResetPeerParams, TcpSlicerParams,
        TcpSlowCloseParams, TcpTimeoutParams,
    };
    match spec {
        FaultSpec::TcpLatency(TcpLatencyParams { filter: f, .. })
        | FaultSpec::TcpDown(TcpDownParams { filter: f, .. })
        | FaultSpec::TcpResetPeer(TcpResetPeerParams { filter: f, .. })
        | FaultSpec::TcpLimitData(TcpLimitDataParams { filter: f, .. })
        | FaultSpec::TcpTimeout(TcpTimeoutParams { filter: f, .. })
        | FaultSpec::TcpBandwidth(TcpBandwidthParams { filter: f, .. })
        | FaultSpec::TcpSlowClose(TcpSlowCloseParams { filter: f, .. })
        | FaultSpec::TcpSlicer(TcpSlicerParams { filter: f, .. }) => format!(
            "{}{}",
            crate::tcp::TcpFault::describe(spec).unwrap_or_default(),
            filter(f)
        ),
        FaultSpec::HttpAbort(HttpAbortParams { filter: f, .. })
        | FaultSpec::HttpStatus(HttpStatusParams { filter: f, .. })
        | FaultSpec::HttpDelay(HttpDelayParams { filter: f, .. }) => format!(
            "{}{}",
            crate::http::HttpFault::describe(spec).unwrap_or_default(),
            filter(f)
        ),
        FaultSpec::IoErrno(p) => format!(
            "{} % of {} fail with {}{}",
            p.percent,
            if p.ops.is_empty() {
                "file operations".to_string()
            } else {
                p.ops.iter().map(|o| o.name()).collect::<Vec<_>>().join(",")
            },
            p.errno,
            p.path
                .as_deref()
                .map(|d| format!(" under {d}"))
                .unwrap_or_default()
        ),
        FaultSpec::IoThrottle(p) => crate::io::throttle_text(p),
        FaultSpec::NetLoss(p) => format!(
            "{} % of packets, {}{}",
            p.percent,
            format!("{:?}", p.direction).to_lowercase(),
            filter(&p.filter)
        ),
        FaultSpec::NetPartition(p) => format!("all packets, both directions{}", filter(&p.filter)),
        FaultSpec::NetCorrupt(p) => format!(
            "{} % of sent packets {}{}",
            p.percent,
            if p.payload {
                "get altered payload bytes"
            } else {
                "damaged (the receiver drops them)"
            },
            filter(&p.filter)
        ),
        FaultSpec::NetDuplicate(p) => {
            format!("{} % of sent packets twice{}", p.percent, filter(&p.filter))
        }
        FaultSpec::NetConnectError(p) => format!(
            "{} % of connects fail with {}{}",
            p.percent,
            p.errno,
            filter(&p.filter)
        ),
        FaultSpec::NetDelay(p) => format!(
            "sent packets {} later{}{}{}",
            p.delay,
            p.jitter
                .as_ref()
                .map(|j| format!(" ± {j}"))
                .unwrap_or_default(),
            filter(&p.filter),
            netns_param(p.netns.as_deref())
        ),
        FaultSpec::NetBandwidth(p) => format!(
            "sent packets paced to {}{}{}{}",
            p.rate,
            p.burst
                .as_ref()
                .map(|b| format!(", burst {b}"))
                .unwrap_or_default(),
            filter(&p.filter),
            netns_param(p.netns.as_deref())
        ),
        FaultSpec::StressCpu(_)
        | FaultSpec::StressMem(_)
        | FaultSpec::DiskFill(_)
        | FaultSpec::DiskIo(_)
        | FaultSpec::ProcessKill(_)
        | FaultSpec::ProcessPause(_) => crate::stress::params(spec),
        FaultSpec::CpuLimit(_)
        | FaultSpec::MemPressure(_)
        | FaultSpec::ProcessLimit(_)
        | FaultSpec::FdLimit(_) => crate::resource::params(spec),
        FaultSpec::DnsError(_)
        | FaultSpec::DnsTimeout(_)
        | FaultSpec::DnsAnswer(_)
        | FaultSpec::DnsDelay(_) => crate::dns::DnsFault::describe(spec).unwrap_or_default(),
        FaultSpec::ClockSkew(p) => format!(
            "{} on {}",
            crate::clock::what(p),
            p.clocks
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn netns_param(netns: Option<&str>) -> String {
    netns.map(|n| format!(", in netns {n}")).unwrap_or_default()
}

fn filter(f: &NetFilter) -> String {
    let mut parts = Vec::new();
    if let Some(d) = &f.dst {
        parts.push(format!("peer {d}"));
    }
    if let Some(s) = &f.src {
        parts.push(format!("local {s}"));
    }
    if let Some(p) = &f.port {
        parts.push(format!("port {p}"));
    }
    if f.proto != Proto::Any {
        parts.push(format!("{:?}", f.proto).to_lowercase());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(", {}", parts.join(", "))
    }
}

/// The target cgroups; for a kind that works on a path (`disk.fill`), the path.
fn targets(f: &FaultInfo) -> String {
    if let (FaultSpec::DiskFill(p), true) = (&f.fault, f.targets.is_empty()) {
        return p.path.clone();
    }
    f.targets
        .iter()
        .map(|t| t.cgroup.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// As the request wrote it; journals of older daemons have only the milliseconds.
fn duration(f: &FaultInfo) -> String {
    if f.duration.is_empty() {
        humantime::format_duration(std::time::Duration::from_millis(f.duration_ms)).to_string()
    } else {
        f.duration.clone()
    }
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
