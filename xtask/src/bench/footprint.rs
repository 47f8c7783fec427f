//! The daemon's own footprint (release build): resident memory and CPU while idle, start to
//! ready, and resident memory and descriptors after many inject/recover cycles next to the
//! idle baseline, read from /proc.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    cgroup::BenchCgroups,
    daemon::Daemon,
    stats::{median, round3},
};

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = text.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15.
    Ok(f.get(11).context("no utime")?.parse::<u64>()?
        + f.get(12).context("no stime")?.parse::<u64>()?)
}

fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Idle figures of a daemon that has done nothing yet: RSS, and CPU over `idle`.
pub fn idle(daemon: &Daemon, idle: Duration) -> Result<Value> {
    let pid = daemon.pid();
    // Let start-up work (program probes, the first heartbeat) settle.
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(pid)?;
    let fds = open_fds(pid)?;
    let ticks = cpu_ticks(pid)?;
    let t = Instant::now();
    std::thread::sleep(idle);
    let used = cpu_ticks(pid)?.saturating_sub(ticks);
    // SAFETY: sysconf with a constant name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_percent = used as f64 / hz / t.elapsed().as_secs_f64() * 100.0;
    Ok(json!({
        "idle_rss_mib": round3(rss as f64 / 1024.0),
        "idle_fds": fds,
        "idle_cpu_percent": round3(cpu_percent),
        "idle_window_s": idle.as_secs(),
        "cpu_resolution_percent": round3(100.0 / hz / idle.as_secs_f64()),
    }))
}

/// Start to ready (first answer on the socket) over `starts` fresh daemons.
pub fn start_to_ready(bin_dir: &std::path::Path, first: Duration, starts: usize) -> Result<Value> {
    let mut ms = vec![first.as_secs_f64() * 1e3];
    for _ in 1..starts {
        let d = Daemon::start(bin_dir)?;
        ms.push(d.ready_after.as_secs_f64() * 1e3);
    }
    Ok(json!({
        "start_to_ready_ms_median": round3(median(&ms)),
        "start_to_ready_ms_max": round3(ms.iter().copied().fold(0.0, f64::max)),
        "starts": ms.len(),
    }))
}

/// RSS and descriptors after `cycles` inject/recover cycles, next to before.
pub fn after_cycles(daemon: &Daemon, cgroups: &mut BenchCgroups, cycles: usize) -> Result<Value> {
    let pid = daemon.pid();
    let target = cgroups.child("footprint")?;
    let loss = json!({"kind": "net.loss", "params": {"percent": 10, "direction": "egress"}});
    // One cycle first: lazily loaded programs and maps belong to the baseline.
    let id = daemon.inject(loss.clone(), std::slice::from_ref(&target), "60s")?;
    daemon.recover(&id)?;
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, fds0) = (rss_kib(pid)?, open_fds(pid)?);
    let t = Instant::now();
    for _ in 0..cycles {
        let id = daemon.inject(loss.clone(), std::slice::from_ref(&target), "60s")?;
        daemon.recover(&id)?;
    }
    let took = t.elapsed();
    // Ended faults are kept for the history for a while; give freeing a moment.
    std::thread::sleep(Duration::from_secs(1));
    let (rss1, fds1) = (rss_kib(pid)?, open_fds(pid)?);
    Ok(json!({
        "cycles": cycles,
        "cycles_s": round3(took.as_secs_f64()),
        "rss_mib_before": round3(rss0 as f64 / 1024.0),
        "rss_mib_after": round3(rss1 as f64 / 1024.0),
        "rss_growth_mib": round3((rss1 as f64 - rss0 as f64) / 1024.0),
        "fds_before": fds0,
        "fds_after": fds1,
    }))
}
