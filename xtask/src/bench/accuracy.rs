//! Accuracy: what a fault does against what was asked, measured from outside.

use std::{path::Path, process::Command, thread, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    cgroup::BenchCgroups,
    daemon::Daemon,
    probe::{Receiver, Sender},
    stats::{median, round3, spread},
};

/// Loss: `packets` datagrams from a sender in the target cgroup; the share that did not
/// arrive, and the share the fault's own counters say it dropped.
pub fn loss(
    daemon: &Daemon,
    cgroups: &mut BenchCgroups,
    percents: &[f64],
    packets: u32,
) -> Result<Value> {
    let mut rows = Vec::new();
    for &percent in percents {
        let target = cgroups.child(&format!("loss-{percent}"))?;
        let fault =
            json!({"kind": "net.loss", "params": {"percent": percent, "direction": "egress"}});
        let id = daemon.inject(fault, std::slice::from_ref(&target), "300s")?;
        let rx = Receiver::bind()?;
        let mut sender = Sender::start(&cgroups.dir_of(&target), rx.addr(), Some(packets), 20)?;
        let got = rx.count_until_done(&mut sender, Duration::from_millis(300))?;
        let info = daemon.recover(&id)?;
        let seen = info["counters"]["seen"].as_f64().unwrap_or(0.0);
        rows.push(json!({
            "asked_percent": percent,
            "packets": packets,
            "measured_loss_percent": round3(100.0 * (1.0 - f64::from(got) / f64::from(packets))),
            "counter_loss_percent": round3(100.0 * counter_share(&info)),
            "counter_seen": seen,
        }));
    }
    Ok(Value::Array(rows))
}

/// `io.errno` (needs BPF LSM, so measured in the VM part): `reads` reads of one file by a
/// process in the target cgroup, EIO asked for `percent` of them; the share that failed, and
/// the share the fault's own counters say it failed.
pub fn io_errno(
    daemon: &Daemon,
    cgroups: &mut BenchCgroups,
    percents: &[f64],
    reads: u32,
) -> Result<Value> {
    if let Some(reason) = daemon.unsupported_reason("io.errno")? {
        return Ok(json!(reason));
    }
    let dir = tempfile::Builder::new()
        .prefix("chaosd-bench-io-")
        .tempdir_in("/tmp")?;
    let file = dir.path().join("data");
    std::fs::write(&file, [0x5au8; 4096])?;
    let mut rows = Vec::new();
    for &percent in percents {
        let target = cgroups.child(&format!("io-{percent}"))?;
        let fault = json!({"kind": "io.errno", "params": {"errno": "EIO", "ops": ["read"],
            "path": dir.path(), "percent": percent}});
        let id = daemon.inject(fault, std::slice::from_ref(&target), "300s")?;
        let counts = file_reads(&cgroups.dir_of(&target), &file, reads);
        let info = daemon.recover(&id)?;
        let counts = counts?;
        let failed = counts["eio"].as_f64().unwrap_or(0.0);
        if counts["other"] != 0 {
            bail!("reads failed with another errno than EIO: {counts}");
        }
        rows.push(json!({
            "asked_percent": percent,
            "reads": reads,
            "measured_failed_percent": round3(100.0 * failed / f64::from(reads)),
            "counter_failed_percent": round3(100.0 * counter_share(&info)),
        }));
    }
    Ok(Value::Array(rows))
}

/// affected / seen of a fault's counters.
fn counter_share(info: &Value) -> f64 {
    info["counters"]["affected"].as_f64().unwrap_or(0.0)
        / info["counters"]["seen"].as_f64().unwrap_or(0.0).max(1.0)
}

/// Runs the file-reads probe in `cgroup`; its counts.
fn file_reads(cgroup: &Path, file: &Path, count: u32) -> Result<Value> {
    let out = Command::new(std::env::current_exe()?)
        .arg("__bench-file-reads")
        .arg("--cgroup")
        .arg(cgroup)
        .arg("--file")
        .arg(file)
        .args(["--count", &count.to_string()])
        .output()
        .context("running the file-reads probe")?;
    if !out.status.success() {
        bail!(
            "the file-reads probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// CPU stress: one worker at each load; the CPU time its cgroup used per wall second,
/// median over `windows` windows of `window` each.
pub fn cpu(
    daemon: &Daemon,
    cgroups: &mut BenchCgroups,
    loads: &[f64],
    windows: usize,
    window: Duration,
) -> Result<Value> {
    let mut rows = Vec::new();
    for &load in loads {
        let target = cgroups.child(&format!("cpu-{load}"))?;
        let fault = json!({"kind": "stress.cpu", "params": {"load": load, "workers": 1}});
        let id = daemon.inject(fault, std::slice::from_ref(&target), "300s")?;
        let measured = cpu_windows(cgroups, &target, windows, window);
        let info = daemon.recover(&id)?;
        let measured = measured?;
        // The fault's own view: CPU ms used over worker ms of wall time.
        let counter = 100.0 * counter_share(&info);
        rows.push(json!({
            "asked_load_percent": load,
            "workers": 1,
            "measured_load_percent_median": round3(median(&measured)),
            "measured_load_percent_spread": spread(&measured),
            "counter_load_percent": round3(counter),
            "windows": windows,
            "window_s": window.as_secs_f64(),
        }));
    }
    Ok(Value::Array(rows))
}

fn cpu_windows(
    cgroups: &BenchCgroups,
    target: &str,
    windows: usize,
    window: Duration,
) -> Result<Vec<f64>> {
    let mut waited = 0;
    while cgroups.pids(target).is_empty() {
        waited += 1;
        if waited > 250 {
            bail!("no stress worker appeared in {target}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));
    let tick = clock_tick();
    let mut loads = Vec::new();
    for _ in 0..windows {
        let pids = cgroups.pids(target);
        let before = cpu_ticks(&pids);
        let started = std::time::Instant::now();
        thread::sleep(window);
        let used = cpu_ticks(&pids).saturating_sub(before) as f64 / tick;
        loads.push(100.0 * used / started.elapsed().as_secs_f64());
    }
    Ok(loads)
}

fn clock_tick() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of `pids`, in clock ticks.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name's closing parenthesis; utime and stime are 14, 15.
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}
