//! Per-packet cost of chaosd's programs from the kernel's own accounting: with BPF run-time
//! statistics on (`BPF_ENABLE_STATS`, held by an fd: they go off when it closes, also if the
//! bench dies, and `kernel.bpf_stats_enabled` is never written), each program's `run_time_ns`
//! and `run_cnt` before and after a traffic window give its mean cost per run. Only the
//! daemon's own programs count: their ids are read from the descriptors it holds
//! (`/proc/PID/fdinfo`), so other eBPF users on the host do not blur the figure.
//!
//! Next to it, one packet's time through the veth pair itself: the window's length over the
//! packets the veth end sent in it, at the rate the bench's TCP stream reaches.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    cgroup::BenchCgroups,
    daemon::Daemon,
    datapath::throughput_once,
    netns::{NetNs, VETH_A},
    probe::{Receiver, Sender},
    stats::{median, round3},
    test_run,
};

/// Turns run-time statistics on; they stay on while the returned fd is open.
pub fn enable() -> Result<OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("BPF_ENABLE_STATS (run-time statistics, Linux 5.8+)")
}

/// One program's counters.
#[derive(Clone, Copy, Default)]
struct Counts {
    ns: u64,
    runs: u64,
}

/// The daemon's programs (by kernel name, cut at 15 bytes) and their counters, summed over
/// programs of one name.
fn snapshot(ids: &BTreeSet<u32>) -> Result<BTreeMap<String, Counts>> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for info in aya::programs::loaded_programs() {
        let Ok(info) = info else { continue };
        if !ids.contains(&info.id()) {
            continue;
        }
        let name = info.name_as_str().unwrap_or("?").to_string();
        let c = out.entry(name).or_default();
        c.ns += info.run_time().as_nanos() as u64;
        c.runs += info.run_count();
    }
    Ok(out)
}

/// The ids of the eBPF programs `pid` holds descriptors of.
fn program_ids(pid: u32) -> Result<BTreeSet<u32>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse().ok())
        {
            ids.insert(id);
        }
    }
    Ok(ids)
}

/// ns per run of each program that ran between `before` and `after`.
fn per_run(before: &BTreeMap<String, Counts>, after: &BTreeMap<String, Counts>) -> Value {
    let mut out = serde_json::Map::new();
    for (name, a) in after {
        let b = before.get(name).copied().unwrap_or_default();
        let runs = a.runs.saturating_sub(b.runs);
        if runs == 0 {
            continue;
        }
        let ns = a.ns.saturating_sub(b.ns) as f64 / runs as f64;
        out.insert(
            name.clone(),
            json!({"runs": runs, "ns_per_run": round3(ns)}),
        );
    }
    Value::Object(out)
}

/// Packets the veth end in `a` has sent so far.
fn tx_packets(a: &NetNs) -> Result<u64> {
    // /sys/class/net shows the mounter's namespace; /proc/thread-self/net the thread's.
    a.run(|| {
        let text = std::fs::read_to_string("/proc/thread-self/net/dev")
            .context("reading /proc/thread-self/net/dev")?;
        let prefix = format!("{VETH_A}:");
        let line = text
            .lines()
            .find_map(|l| {
                l.trim_start()
                    .strip_prefix(prefix.as_str())
                    .map(str::to_string)
            })
            .context("the bench veth is not in /proc/net/dev")?;
        // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets ...
        let tx = line
            .split_whitespace()
            .nth(9)
            .context("no tx_packets column")?;
        Ok(tx.parse()?)
    })
}

/// What one untargeted window measured.
struct Window {
    programs: Value,
    veth_ns_per_packet: f64,
}

/// One TCP stream from the bench's cgroup (no rule targets it) over the veth.
fn untargeted_window(
    daemon_ids: &BTreeSet<u32>,
    a: &NetNs,
    b: &NetNs,
    run: Duration,
) -> Result<Window> {
    let before = snapshot(daemon_ids)?;
    let packets_before = tx_packets(a)?;
    let started = Instant::now();
    throughput_once(a, b, run)?;
    let elapsed = started.elapsed();
    let packets = tx_packets(a)?.saturating_sub(packets_before).max(1);
    let after = snapshot(daemon_ids)?;
    Ok(Window {
        programs: per_run(&before, &after),
        veth_ns_per_packet: elapsed.as_nanos() as f64 / packets as f64,
    })
}

/// A UDP sender in a target cgroup, as fast as it can for `run`.
fn targeted_window(
    daemon_ids: &BTreeSet<u32>,
    cgroups: &BenchCgroups,
    target: &str,
    run: Duration,
) -> Result<Value> {
    let rx = Receiver::bind()?;
    let before = snapshot(daemon_ids)?;
    let sender = Sender::start(&cgroups.dir_of(target), rx.addr(), None, 0)?;
    std::thread::sleep(run);
    drop(sender);
    let after = snapshot(daemon_ids)?;
    Ok(per_run(&before, &after))
}

/// The figures: untargeted packets with 1 and with `many` rules on other cgroups, targeted
/// packets under a rule that matches them (loss 0.001 %), and the veth's own time per packet.
pub fn measure(
    daemon: &Daemon,
    cgroups: &mut BenchCgroups,
    a: &NetNs,
    b: &NetNs,
    others: &[String],
    rounds: usize,
    run: Duration,
) -> Result<Value> {
    let _stats = enable()?;
    let half_loss = json!({"kind": "net.loss", "params": {"percent": 50, "direction": "both"}});
    let tiny_loss = json!({"kind": "net.loss", "params": {"percent": 0.001, "direction": "both"}});
    let target = cgroups.child("bpf-stats-target")?;
    let bystander = cgroups.child("bpf-stats-bystander")?;
    let mut windows: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut test_runs: Vec<BTreeMap<String, f64>> = Vec::new();
    let mut veth_ns = Vec::new();
    for _ in 0..rounds {
        daemon.inject(half_loss.clone(), &others[..1], "1h")?;
        let ids = program_ids(daemon.pid())?;
        let w = untargeted_window(&ids, a, b, run)?;
        veth_ns.push(w.veth_ns_per_packet);
        windows
            .entry("untargeted_1_rule")
            .or_default()
            .push(w.programs);
        daemon.inject(half_loss.clone(), &others[1..], "1h")?;
        let w = untargeted_window(&ids, a, b, run)?;
        veth_ns.push(w.veth_ns_per_packet);
        windows
            .entry("untargeted_many_rules")
            .or_default()
            .push(w.programs);
        daemon.inject(tiny_loss.clone(), std::slice::from_ref(&target), "1h")?;
        let ids = program_ids(daemon.pid())?;
        windows
            .entry("targeted")
            .or_default()
            .push(targeted_window(&ids, cgroups, &target, run)?);
        test_runs.push(test_run_round(&ids, cgroups, &bystander, &target)?);
        daemon.delete("/v1/faults")?;
    }
    let summary: serde_json::Map<String, Value> = windows
        .into_iter()
        .map(|(k, rounds)| (k.to_string(), medians(&rounds)))
        .collect();
    Ok(json!({
        "source": "BPF_ENABLE_STATS run_time_ns / run_cnt of the daemon's own programs (ids \
            from its fdinfo), per program, median over rounds",
        "rounds": rounds,
        "window_s": run.as_secs_f64(),
        "many_rules": others.len(),
        "no_rules": "no fault: the packet programs are detached, no chaosd code runs per packet",
        "ns_per_run": summary,
        "veth_ns_per_packet_median": round3(median(&veth_ns)),
        "test_run": test_run_summary(&test_runs),
        "veth_note": "the bench's TCP stream over the veth: window length / packets sent \
            (GSO segments, each up to 64 KiB); the programs run once per such packet",
    }))
}

/// Per program: the median ns per run over rounds, and the runs of the last round.
fn medians(rounds: &[Value]) -> Value {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for r in rounds {
        if let Some(m) = r.as_object() {
            names.extend(m.keys().cloned());
        }
    }
    let mut out = serde_json::Map::new();
    for name in names {
        let ns: Vec<f64> = rounds
            .iter()
            .filter_map(|r| r[&name]["ns_per_run"].as_f64())
            .collect();
        let runs: Vec<f64> = rounds
            .iter()
            .filter_map(|r| r[&name]["runs"].as_f64())
            .collect();
        out.insert(
            name,
            json!({
                "ns_per_run_median": round3(median(&ns)),
                "ns_per_run_min": round3(ns.iter().copied().fold(f64::INFINITY, f64::min)),
                "ns_per_run_max": round3(ns.iter().copied().fold(0.0, f64::max)),
                "runs_median": median(&runs),
            }),
        );
    }
    Value::Object(out)
}

/// The daemon's program whose kernel name (cut at 15 bytes) starts with `prefix`.
fn program_named(ids: &BTreeSet<u32>, prefix: &str) -> Result<u32> {
    aya::programs::loaded_programs()
        .filter_map(|i| i.ok())
        .find(|i| ids.contains(&i.id()) && i.name_as_str().is_some_and(|n| n.starts_with(prefix)))
        .map(|i| i.id())
        .with_context(|| format!("the daemon holds no program named {prefix}*"))
}

/// One round of test runs (see [`test_run`]): the empty floor, then chaosd's egress and
/// ingress programs from the bench's own cgroup (the root: no ancestor to look up), from an
/// untargeted cgroup two levels down (a lookup per level), and from the target cgroup.
fn test_run_round(
    ids: &BTreeSet<u32>,
    cgroups: &BenchCgroups,
    bystander: &str,
    target: &str,
) -> Result<BTreeMap<String, f64>> {
    let packet = test_run::tcp_packet();
    let mut out = BTreeMap::new();
    let empty = test_run::empty_cgroup_skb()?;
    let progs = [
        (
            "egress",
            test_run::program_by_id(program_named(ids, "chaosd_net_egr")?)?,
        ),
        (
            "ingress",
            test_run::program_by_id(program_named(ids, "chaosd_net_ing")?)?,
        ),
    ];
    let run_all = |place: &str, out: &mut BTreeMap<String, f64>| -> Result<()> {
        let (ns, _) = test_run::ns_per_run(&empty, &packet, test_run::REPEAT)?;
        out.insert(format!("empty_program_{place}"), f64::from(ns));
        for (name, fd) in &progs {
            let (ns, _) = test_run::ns_per_run(fd, &packet, test_run::REPEAT)?;
            out.insert(format!("{name}_{place}"), f64::from(ns));
        }
        Ok(())
    };
    run_all("root_cgroup", &mut out)?;
    {
        let _in = test_run::InCgroup::enter(&cgroups.dir_of(bystander))?;
        run_all("untargeted_cgroup", &mut out)?;
    }
    {
        let _in = test_run::InCgroup::enter(&cgroups.dir_of(target))?;
        run_all("targeted_cgroup", &mut out)?;
    }
    // The test runs went through the same accounting: the empty program's own figure there is
    // what the accounting charges a program that does nothing.
    if let Some(info) = aya::programs::loaded_programs()
        .filter_map(|i| i.ok())
        .find(|i| i.name_as_str() == Some(test_run::EMPTY_PROGRAM_NAME))
        && info.run_count() > 0
    {
        let ns = info.run_time().as_nanos() as f64 / info.run_count() as f64;
        out.insert("empty_program_accounted".into(), round3(ns));
    }
    drop(empty);
    Ok(out)
}

/// Per figure: median over rounds with min and max, and chaosd's programs net of the floor.
fn test_run_summary(rounds: &[BTreeMap<String, f64>]) -> Value {
    let mut figures = serde_json::Map::new();
    let Some(first) = rounds.first() else {
        return Value::Null;
    };
    let med = |key: &str| {
        let v: Vec<f64> = rounds.iter().filter_map(|r| r.get(key).copied()).collect();
        (
            median(&v),
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(0.0, f64::max),
        )
    };
    for key in first.keys() {
        let (m, lo, hi) = med(key);
        let mut f = json!({"ns_per_run_median": m, "min": lo, "max": hi});
        if key.contains('_') && !key.starts_with("empty_program") {
            let place = key.split_once('_').map(|(_, p)| p).unwrap_or_default();
            let (floor, _, _) = med(&format!("empty_program_{place}"));
            f["ns_over_empty_program"] = json!(round3(m - floor));
        }
        figures.insert(key.clone(), f);
    }
    json!({
        "source": "BPF_PROG_TEST_RUN, repeat 1,000,000 on one 104-byte IPv4 TCP packet, per \
            round; the empty program is a cgroup_skb returning pass, loaded and run the same \
            way: the floor of one run; empty_program_accounted is that program's run_time_ns / \
            run_cnt from the same test runs, what the run-time accounting charges a program \
            that does nothing",
        "rounds": rounds.len(),
        "figures": Value::Object(figures),
    })
}
