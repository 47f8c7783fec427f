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

/// What the kernel counted for every live thread of `pid`: nanoseconds on a CPU
/// (`schedstat`, exact where tick-sampled utime+stime is not) and context switches (each one
/// a wake-up or a preemption).
#[derive(Clone, Copy, Default)]
struct ThreadCounts {
    cpu_ns: u64,
    switches: u64,
}

fn thread_counts(pid: u32) -> Result<ThreadCounts> {
    let mut total = ThreadCounts::default();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = task?.path();
        // A thread may exit between the listing and the read.
        let Ok(sched) = std::fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        total.cpu_ns += sched
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        total.switches += status
            .lines()
            .filter_map(|l| {
                l.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(total)
}

/// A process's CPU over a window, two ways: tick-sampled utime+stime (counts threads that
/// exited in the window) and per-thread schedstat (ns resolution, live threads only).
struct CpuWindow {
    ticks: u64,
    threads: ThreadCounts,
}

impl CpuWindow {
    fn open(pid: u32) -> Result<CpuWindow> {
        Ok(CpuWindow {
            ticks: cpu_ticks(pid)?,
            threads: thread_counts(pid)?,
        })
    }

    fn close(self, pid: u32, elapsed: Duration) -> Result<Value> {
        // SAFETY: sysconf with a constant name.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let secs = elapsed.as_secs_f64();
        let ticks = cpu_ticks(pid)?.saturating_sub(self.ticks);
        let now = thread_counts(pid)?;
        let cpu_ns = now.cpu_ns.saturating_sub(self.threads.cpu_ns);
        let switches = now.switches.saturating_sub(self.threads.switches);
        Ok(json!({
            "cpu_percent": round3(ticks as f64 / hz / secs * 100.0),
            "cpu_resolution_percent": round3(100.0 / hz / secs),
            "cpu_percent_schedstat": round3(cpu_ns as f64 / 1e9 / secs * 100.0),
            "context_switches_per_s": round3(switches as f64 / secs),
        }))
    }
}

/// Idle figures of a daemon that has done nothing yet: RSS, and CPU over `idle`, the
/// daemon's and its guardian's (a separate process that polls the daemon).
pub fn idle(daemon: &Daemon, idle: Duration) -> Result<Value> {
    let pid = daemon.pid();
    // Let start-up work (program probes, the first heartbeat) settle.
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(pid)?;
    let fds = open_fds(pid)?;
    let guardian = daemon.guardian_pid();
    let daemon_cpu = CpuWindow::open(pid)?;
    let guardian_cpu = guardian.map(CpuWindow::open).transpose()?;
    let t = Instant::now();
    std::thread::sleep(idle);
    let elapsed = t.elapsed();
    let daemon_cpu = daemon_cpu.close(pid, elapsed)?;
    let guardian_fig = match (guardian, guardian_cpu) {
        (Some(g), Some(w)) => json!({
            "pid": g,
            "rss_mib": round3(rss_kib(g)? as f64 / 1024.0),
            "cpu": w.close(g, elapsed)?,
        }),
        _ => Value::Null,
    };
    Ok(json!({
        "idle_rss_mib": round3(rss as f64 / 1024.0),
        "idle_fds": fds,
        "idle_cpu_percent": daemon_cpu["cpu_percent"],
        "idle_window_s": idle.as_secs(),
        "cpu_resolution_percent": daemon_cpu["cpu_resolution_percent"],
        "idle_cpu": daemon_cpu,
        "guardian": guardian_fig,
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
    // RSS halfway too: caches that fill up once (the ended list, SQLite's page cache) stop
    // growing, a leak grows as much in the second half as in the first.
    let mut rss_half = 0;
    for n in 0..cycles {
        let id = daemon.inject(loss.clone(), std::slice::from_ref(&target), "60s")?;
        daemon.recover(&id)?;
        if n + 1 == cycles / 2 {
            rss_half = rss_kib(pid)?;
        }
    }
    let took = t.elapsed();
    // Ended faults are kept for the history for a while; give freeing a moment.
    std::thread::sleep(Duration::from_secs(1));
    let (rss1, fds1) = (rss_kib(pid)?, open_fds(pid)?);
    let mib = |kib: u64| round3(kib as f64 / 1024.0);
    let growth = |from: u64, to: u64| round3((to as f64 - from as f64) / 1024.0);
    Ok(json!({
        "cycles": cycles,
        "cycles_s": round3(took.as_secs_f64()),
        "rss_mib_before": mib(rss0),
        "rss_mib_halfway": mib(rss_half),
        "rss_mib_after": mib(rss1),
        "rss_growth_mib": growth(rss0, rss1),
        "rss_growth_first_half_mib": growth(rss0, rss_half),
        "rss_growth_second_half_mib": growth(rss_half, rss1),
        "fds_before": fds0,
        "fds_after": fds1,
    }))
}
