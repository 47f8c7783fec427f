//! `cargo xtask bench`: figures for the README's claims, all from one run on this host.
//!
//! It builds chaosd (release), starts it on a temp socket, and measures:
//! 1. datapath overhead for untargeted traffic (veth between two namespaces of its own):
//!    programs detached vs. attached with 1 and with 1,000 rules on other cgroups;
//! 2. control latency, inject → active and recover → inactive, seen from the datapath;
//! 3. accuracy: loss 1/10/50 % over 10,000 packets, io.errno where it loads, CPU stress load.
//!
//! Every figure is a median, a percentile or a ratio of medians. What this kernel cannot run
//! is recorded as "not measured on this kernel: <reason>". It writes JSON (`--out`, default
//! `target/bench/bench.json`) and prints a table. Everything it creates (namespaces, veth,
//! cgroups, processes, the daemon) is removed when it ends, also on error.

mod accuracy;
mod cgroup;
mod control;
mod daemon;
mod datapath;
mod netns;
pub mod probe;
mod stats;

use std::{path::PathBuf, time::Duration, time::Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::util::workspace_root;
use cgroup::BenchCgroups;
use daemon::Daemon;

/// Rules on other cgroups for the "many rules" datapath figure.
const MANY_RULES: usize = 1_000;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Where to write the JSON figures [default: <target dir>/bench/bench.json]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Fewer runs, cycles and windows (about a minute); the full run takes a few minutes.
    #[arg(long)]
    quick: bool,
    /// inject/recover cycles for control latency [default: 1000, 200 with --quick]
    #[arg(long)]
    cycles: Option<usize>,
    /// Use the chaosd binary in this directory instead of building a release one.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// Sizes of one run.
struct Plan {
    datapath: datapath::Plan,
    cycles: usize,
    cpu_windows: usize,
    cpu_window: Duration,
}

impl Plan {
    fn new(args: &BenchArgs) -> Plan {
        let quick = args.quick;
        Plan {
            datapath: datapath::Plan {
                rounds: if quick { 3 } else { 7 },
                throughput_run: Duration::from_millis(if quick { 500 } else { 1500 }),
                round_trips_per_round: if quick { 2_000 } else { 5_000 },
            },
            cycles: args.cycles.unwrap_or(if quick { 200 } else { 1_000 }),
            cpu_windows: if quick { 3 } else { 5 },
            cpu_window: Duration::from_millis(if quick { 1000 } else { 2000 }),
        }
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the bench loads eBPF programs and makes namespaces and cgroups: run it as root");
    }
    let plan = Plan::new(args);
    let out = args.out.clone().unwrap_or_else(default_out);
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => daemon::build()?,
    };
    let started = Instant::now();
    let load_before = loadavg();
    // Declared before the daemon so they are removed after it reverted its faults.
    let mut cgroups = BenchCgroups::new()?;
    let daemon = Daemon::start(&bin_dir)?;
    let result = measure(&daemon, &mut cgroups, &plan);
    let report = match result {
        Ok(figures) => figures,
        Err(e) => bail!("{e:#}\nchaosd's log:\n{}", daemon.log()),
    };
    let report = json!({
        "mode": if args.quick { "quick" } else { "full" },
        "chaosd_binary": bin_dir.join("chaosd").display().to_string(),
        "machine": machine(),
        "duration_s": stats::round3(started.elapsed().as_secs_f64()),
        // Other work on the host skews every figure: say how busy it was.
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "figures": report,
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    print_table(&report["figures"], "");
    println!("\nwritten to {}", out.display());
    Ok(())
}

fn default_out() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("bench/bench.json")
}

fn measure(daemon: &Daemon, cgroups: &mut BenchCgroups, plan: &Plan) -> Result<Value> {
    eprintln!("bench: datapath overhead");
    let datapath = datapath_figures(daemon, cgroups, &plan.datapath)?;
    eprintln!("bench: control latency ({} cycles)", plan.cycles);
    let control = control::measure(daemon, cgroups, plan.cycles)?;
    eprintln!("bench: accuracy");
    let loss = accuracy::loss(daemon, cgroups, &[1.0, 10.0, 50.0], 10_000)?;
    let cpu = accuracy::cpu(
        daemon,
        cgroups,
        &[25.0, 50.0, 90.0],
        plan.cpu_windows,
        plan.cpu_window,
    )?;
    Ok(json!({
        "datapath": datapath,
        "control_latency": control,
        "accuracy": {
            "loss": loss,
            "io_errno": accuracy::io_errno(daemon)?,
            "cpu_load": cpu,
            "delay": NO_NETEM,
            "clock_offset": NO_CLOCK,
        },
        "peer_netem_per_cgroup": NO_NETEM,
        "clock_gettime_patched_vs_native": NO_CLOCK,
    }))
}

const NO_NETEM: &str = "not measured on this kernel: it has neither sch_netem nor sch_fq \
    (delay is EDT + sch_fq, and the peer approach is netem); needs the distro-kernel VM harness";
const NO_CLOCK: &str = "not measured on this kernel: the clock figures (patched vs. native \
    clock_gettime, offset) are left to the distro-kernel VM harness for now";

/// Programs detached, 1 rule, `MANY_RULES` rules (each on an otherwise empty cgroup), taking
/// turns round by round.
fn datapath_figures(
    daemon: &Daemon,
    cgroups: &mut BenchCgroups,
    plan: &datapath::Plan,
) -> Result<Value> {
    let (a, b) = netns::veth_pair()?;
    let others = (0..MANY_RULES)
        .map(|n| cgroups.child(&format!("other-{n}")))
        .collect::<Result<Vec<_>>>()?;
    let half_loss = json!({"kind": "net.loss", "params": {"percent": 50, "direction": "both"}});
    let (mut detached, mut one, mut many) = Default::default();
    let mut many_inject_s = Vec::new();
    for _ in 0..plan.rounds {
        if daemon.get("/v1/status")?["net_programs_attached"] != false {
            bail!("chaosd's packet programs are attached with no fault active");
        }
        datapath::Samples::add_round(&mut detached, &a, &b, plan)?;
        daemon.inject(half_loss.clone(), &others[..1], "1h")?;
        datapath::Samples::add_round(&mut one, &a, &b, plan)?;
        // One more fault over the other cgroups: one rule in each of their sets. (As separate
        // faults the same map took minutes to build: each inject rewrites every set.)
        let t = Instant::now();
        daemon.inject(half_loss.clone(), &others[1..], "1h")?;
        many_inject_s.push(t.elapsed().as_secs_f64());
        datapath::Samples::add_round(&mut many, &a, &b, plan)?;
        daemon.delete("/v1/faults")?;
    }
    let (detached, one, many) = (detached.figures(), one.figures(), many.figures());
    Ok(json!({
        "link": "veth between two network namespaces made by the bench, 10.201.0.1 -> 10.201.0.2",
        "traffic": "TCP from the bench's own cgroup, which no rule targets",
        "rounds": plan.rounds,
        "programs_detached": detached.json(),
        "attached_1_rule": merge(one.json(), one.ratios(&detached)),
        format!("attached_{MANY_RULES}_rules"): merge(many.json(), many.ratios(&detached)),
        "rules_note": format!("{MANY_RULES} empty cgroups with one net.loss rule each (2 faults: \
            one on 1 cgroup, one on {}); the rule map holds up to 4096 cgroups",
            MANY_RULES - 1),
        "inject_999_targets_s_median": stats::round3(stats::median(&many_inject_s)),
    }))
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// /proc/loadavg's 1, 5 and 15 minute averages.
fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The host the figures come from.
fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|x| x.1.trim())
        })
        .unwrap_or("unknown");
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0);
    json!({
        "kernel": nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": model,
        "memory_gib": stats::round3(mem_kib as f64 / (1024.0 * 1024.0)),
    })
}

/// One line per leaf figure: `path.to.figure  value`.
fn print_table(v: &Value, path: &str) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                print_table(v, &p);
            }
        }
        Value::Array(rows) => {
            for (i, row) in rows.iter().enumerate() {
                print_table(row, &format!("{path}[{i}]"));
            }
        }
        leaf => println!("{path:<62} {}", leaf.to_string().trim_matches('"')),
    }
}
