//! `cargo xtask bench`: figures for the README's claims, all from one run.
//!
//! It builds chaosd (release), starts it on a temp socket, and measures on this host:
//! 1. datapath overhead for untargeted traffic (veth between two namespaces of its own):
//!    programs detached vs. attached with 1 and with 1,000 rules on other cgroups;
//! 2. control latency, inject → active and recover → inactive, seen from the datapath;
//! 3. accuracy: loss 1/10/50 % over 10,000 packets, CPU stress load, clock offset;
//! 4. a patched `clock_gettime` against the native one;
//! 5. DNS resolution through chaosd's resolver for a name no fault matches, next to direct;
//! 6. the transparent TCP proxy (`tcp.*`, a zero-effect fault) next to a direct connection and
//!    next to `fault` (crates.io's fault-cli proxy): added round-trip latency and throughput.
//! 7. stress accuracy next to stress-ng in the same cgroup: CPU 25/50/90 %, 512 MiB resident.
//!
//! Then ([`vm_part`]) it boots Debian's 6.12 kernel in the VM harness for what this kernel
//! cannot run: delay 10/100 ms next to `tc netem` on the same link, the peer approach
//! (prio + netem + filter) against chaosd (overhead and set-up latency), io.errno accuracy,
//! net.bandwidth accuracy with a sibling cgroup alongside; and Debian's 6.1 for the last alone.
//!
//! Every figure is a median, a percentile or a ratio of medians. What a kernel cannot run
//! is recorded as "not measured ...: <reason>". It writes JSON (`--out`, default
//! `target/bench/bench.json`) and prints a table. Everything it creates (namespaces, veth,
//! qdiscs, cgroups, processes, the daemon, the VM's work dir) is removed when it ends, also on
//! error.

mod accuracy;
mod bpf_stats;
mod cgroup;
mod clock;
mod control;
mod daemon;
mod datapath;
mod delay;
pub mod dns;
mod footprint;
mod iperf;
mod netem;
mod netns;
mod peer;
pub mod probe;
pub mod proxy;
pub mod shaping;
mod stats;
mod stress;
pub mod syscall_probe;
mod test_run;
pub mod vm_part;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

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
    /// Skip the VM part (delay vs. netem, the peer approach, io.errno in Debian 6.12).
    #[arg(long, conflicts_with = "vm_only")]
    no_vm: bool,
    /// Only the VM part (a few minutes of emulation), no host figures.
    #[arg(long)]
    vm_only: bool,
    /// Only this part (with a daemon of its own; no other host figure, no other VM figure).
    #[arg(long, value_enum, conflicts_with_all = ["vm_only", "no_vm"])]
    only: Option<Part>,
}

/// A part of the figures that `--only` runs alone.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Part {
    /// The TCP proxy next to a direct connection and to `fault` (figures.tcp_proxy).
    Proxy,
    /// Stress accuracy next to stress-ng, on this host (figures.stress_accuracy).
    Stress,
    /// net.bandwidth accuracy and isolation rounds with a sibling, in the 6.12 and 6.1 guests
    /// (figures.vm_6_12.figures.shaping, figures.vm_6_1.figures.shaping).
    Shaping,
    /// The daemon's own footprint: idle RSS and CPU (its guardian's too), start to ready,
    /// RSS and fds after many cycles (figures.footprint).
    Footprint,
    /// The control path: inject/recover latency and 1,000 faults at once
    /// (figures.control_latency, figures.concurrent_faults).
    Control,
    /// iperf3 with chaosd's programs detached, an empty program at their hooks, and chaosd's
    /// programs attached with 1,000 rules elsewhere (figures.iperf3).
    Iperf,
}

/// Programs the bench drives beside chaosd: `(program on PATH, Debian package)`.
const BENCH_TOOLS: &[(&str, &str)] = &[("iperf3", "iperf3"), ("stress-ng", "stress-ng")];

/// Sizes of one run.
struct Plan {
    datapath: datapath::Plan,
    cycles: usize,
    cpu_windows: usize,
    cpu_window: Duration,
    clock_rounds: usize,
    /// Idle CPU window for the footprint.
    idle: Duration,
    /// inject/recover cycles before the footprint is read again.
    footprint_cycles: usize,
    iperf_rounds: usize,
    proxy: proxy::Plan,
    stress: stress::Plan,
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
            clock_rounds: if quick { 3 } else { 7 },
            idle: Duration::from_secs(if quick { 10 } else { 60 }),
            footprint_cycles: if quick { 1_000 } else { 10_000 },
            iperf_rounds: if quick { 3 } else { 7 },
            proxy: proxy::Plan {
                rounds: if quick { 3 } else { 7 },
                trips_per_round: if quick { 5_000 } else { 10_000 },
                bulk: Duration::from_secs(if quick { 2 } else { 3 }),
            },
            stress: stress::Plan {
                rounds: if quick { 3 } else { 5 },
                warmup: Duration::from_secs(1),
                window: Duration::from_secs(if quick { 3 } else { 5 }),
            },
        }
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the bench loads eBPF programs and makes namespaces and cgroups: run it as root");
    }
    let plan = Plan::new(args);
    crate::test_tools::install_missing(BENCH_TOOLS)?;
    let out = args.out.clone().unwrap_or_else(default_out);
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => daemon::build()?,
    };
    let started = Instant::now();
    let load_before = loadavg();
    let mut report = match args.only {
        _ if args.vm_only => json!({}),
        Some(Part::Shaping) => json!({}),
        Some(part) => only_part(part, &plan, &bin_dir)?,
        None => host_figures(&plan, &bin_dir)?,
    };
    for (key, series) in [("vm_6_12", "6.12"), ("vm_6_1", "6.1")] {
        report[key] = match args.only {
            _ if args.no_vm => json!("not measured: --no-vm"),
            Some(Part::Shaping) => {
                eprintln!("bench: shaping in Debian {series} under qemu");
                vm_part::run(&bin_dir, args.quick, series, true)
            }
            Some(part) => json!(format!("not measured: --only {part:?}").to_lowercase()),
            None => {
                eprintln!("bench: VM part (Debian {series} under qemu)");
                // 6.12 runs every VM figure, 6.1 the shaping one.
                vm_part::run(&bin_dir, args.quick, series, series != "6.12")
            }
        };
    }
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

/// The host's figures, with a daemon of their own (stopped before the guest boots: it needs
/// the cores).
fn host_figures(plan: &Plan, bin_dir: &Path) -> Result<Value> {
    // Declared before the daemon so they are removed after it reverted its faults.
    let mut cgroups = BenchCgroups::new()?;
    let daemon = Daemon::start(bin_dir)?;
    match measure(&daemon, &mut cgroups, plan, bin_dir) {
        Ok(figures) => Ok(figures),
        Err(e) => bail!("{e:#}\nchaosd's log:\n{}", daemon.log()),
    }
}

/// One host part alone, with a daemon of its own.
fn only_part(part: Part, plan: &Plan, bin_dir: &Path) -> Result<Value> {
    let mut cgroups = BenchCgroups::new()?;
    let daemon = Daemon::start(bin_dir)?;
    let figures = match part {
        Part::Proxy => {
            eprintln!("bench: tcp proxy next to direct and fault");
            proxy::measure(&daemon, &mut cgroups, &plan.proxy).map(|f| json!({"tcp_proxy": f}))
        }
        Part::Stress => {
            eprintln!("bench: stress accuracy next to stress-ng");
            stress::measure(&daemon, &mut cgroups, &plan.stress)
                .map(|f| json!({"stress_accuracy": f}))
        }
        Part::Footprint => {
            footprint_figures(&daemon, &mut cgroups, plan, bin_dir).map(|f| json!({"footprint": f}))
        }
        Part::Control => control_figures(&daemon, &mut cgroups, plan),
        Part::Iperf => iperf_figures(&daemon, &mut cgroups, plan).map(|f| json!({"iperf3": f})),
        Part::Shaping => unreachable!("the shaping part runs in the VM guests"),
    };
    figures.map_err(|e| anyhow::anyhow!("{e:#}\nchaosd's log:\n{}", daemon.log()))
}

/// iperf3 alone: its own namespaces and the cgroups the rules go on.
fn iperf_figures(daemon: &Daemon, cgroups: &mut BenchCgroups, plan: &Plan) -> Result<Value> {
    let (a, b, others) = link_and_others(cgroups)?;
    iperf_rounds(daemon, &a, &b, &others, plan)
}

/// The bench's veth pair between two namespaces, and `MANY_RULES` empty cgroups to put rules
/// on that the measured traffic is not under.
fn link_and_others(
    cgroups: &mut BenchCgroups,
) -> Result<(netns::NetNs, netns::NetNs, Vec<String>)> {
    let (a, b) = netns::veth_pair()?;
    let others = (0..MANY_RULES)
        .map(|n| cgroups.child(&format!("other-{n}")))
        .collect::<Result<Vec<_>>>()?;
    Ok((a, b, others))
}

fn iperf_rounds(
    daemon: &Daemon,
    a: &netns::NetNs,
    b: &netns::NetNs,
    others: &[String],
    plan: &Plan,
) -> Result<Value> {
    eprintln!("bench: iperf3 detached, empty programs, attached");
    iperf::measure(daemon, a, b, others, plan.iperf_rounds, 3)
}

/// Control latency, then the concurrent faults.
fn control_figures(daemon: &Daemon, cgroups: &mut BenchCgroups, plan: &Plan) -> Result<Value> {
    eprintln!("bench: control latency ({} cycles)", plan.cycles);
    let control = control::measure(daemon, cgroups, plan.cycles)?;
    eprintln!("bench: {CONCURRENT_FAULTS} concurrent faults");
    let concurrent = control::concurrent(daemon, cgroups, CONCURRENT_FAULTS)?;
    Ok(json!({"control_latency": control, "concurrent_faults": concurrent}))
}

/// The footprint alone: idle first (the daemon has done nothing yet), then the rest.
fn footprint_figures(
    daemon: &Daemon,
    cgroups: &mut BenchCgroups,
    plan: &Plan,
    bin_dir: &Path,
) -> Result<Value> {
    eprintln!("bench: footprint (idle {} s)", plan.idle.as_secs());
    let idle = footprint::idle(daemon, plan.idle)?;
    let (cycled, ready) = footprint_after(daemon, cgroups, plan, bin_dir)?;
    Ok(json!({"idle": idle, "start": ready, "after_cycles": cycled}))
}

/// RSS and fds after the inject/recover cycles, and start to ready.
fn footprint_after(
    daemon: &Daemon,
    cgroups: &mut BenchCgroups,
    plan: &Plan,
    bin_dir: &Path,
) -> Result<(Value, Value)> {
    eprintln!("bench: footprint after {} cycles", plan.footprint_cycles);
    let cycled = footprint::after_cycles(daemon, cgroups, plan.footprint_cycles)?;
    let ready = footprint::start_to_ready(bin_dir, daemon.ready_after, 5)?;
    Ok((cycled, ready))
}

/// Faults in force at once for the concurrent-faults figure.
const CONCURRENT_FAULTS: usize = 1000;

fn default_out() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("bench/bench.json")
}

fn measure(
    daemon: &Daemon,
    cgroups: &mut BenchCgroups,
    plan: &Plan,
    bin_dir: &Path,
) -> Result<Value> {
    // First, while the daemon has done nothing yet.
    eprintln!("bench: footprint (idle {} s)", plan.idle.as_secs());
    let idle = footprint::idle(daemon, plan.idle)?;
    let (a, b, others) = link_and_others(cgroups)?;
    eprintln!("bench: datapath overhead");
    let datapath = datapath_figures(daemon, &a, &b, &others, &plan.datapath)?;
    eprintln!("bench: per-program cost (BPF run-time statistics)");
    let per_packet = bpf_stats::measure(
        daemon,
        cgroups,
        &a,
        &b,
        &others,
        plan.datapath.rounds,
        plan.datapath.throughput_run,
    )?;
    let iperf = iperf_rounds(daemon, &a, &b, &others, plan)?;
    let control = control_figures(daemon, cgroups, plan)?;
    eprintln!("bench: accuracy");
    let loss = accuracy::loss(daemon, cgroups, &[1.0, 10.0, 50.0], 10_000)?;
    let cpu = accuracy::cpu(
        daemon,
        cgroups,
        &[25.0, 50.0, 90.0],
        plan.cpu_windows,
        plan.cpu_window,
    )?;
    eprintln!("bench: clock");
    let clock = clock::measure(daemon, cgroups, bin_dir, plan.clock_rounds)?;
    eprintln!("bench: dns resolver");
    let dns = dns::measure(daemon, cgroups, plan.clock_rounds, 2_000)?;
    eprintln!("bench: tcp proxy next to direct and fault");
    let tcp_proxy = proxy::measure(daemon, cgroups, &plan.proxy)?;
    eprintln!("bench: stress accuracy next to stress-ng");
    let stress_accuracy = stress::measure(daemon, cgroups, &plan.stress)?;
    let (cycled, ready) = footprint_after(daemon, cgroups, plan, bin_dir)?;
    Ok(json!({
        "footprint": {"idle": idle, "start": ready, "after_cycles": cycled},
        "datapath": datapath,
        "per_packet_cost": per_packet,
        "iperf3": iperf,
        "control_latency": control["control_latency"],
        "concurrent_faults": control["concurrent_faults"],
        "accuracy": {
            "loss": loss,
            "io_errno": accuracy::io_errno(daemon, cgroups, &[1.0, 10.0, 50.0], 10_000)?,
            "cpu_load": cpu,
            "delay": "measured in the VM part (vm_6_12.figures.delay_vs_netem): this kernel \
                has neither sch_fq nor sch_netem",
        },
        "clock_skew": clock,
        "dns_resolver": dns,
        "tcp_proxy": tcp_proxy,
        "stress_accuracy": stress_accuracy,
    }))
}

/// Programs detached, 1 rule, `MANY_RULES` rules (each on an otherwise empty cgroup), taking
/// turns round by round.
fn datapath_figures(
    daemon: &Daemon,
    a: &netns::NetNs,
    b: &netns::NetNs,
    others: &[String],
    plan: &datapath::Plan,
) -> Result<Value> {
    let half_loss = json!({"kind": "net.loss", "params": {"percent": 50, "direction": "both"}});
    let (mut detached, mut one, mut many) = Default::default();
    let mut many_inject_s = Vec::new();
    for _ in 0..plan.rounds {
        if daemon.get("/v1/status")?["net_programs_attached"] != false {
            bail!("chaosd's packet programs are attached with no fault active");
        }
        datapath::Samples::add_round(&mut detached, a, b, plan)?;
        daemon.inject(half_loss.clone(), &others[..1], "1h")?;
        datapath::Samples::add_round(&mut one, a, b, plan)?;
        // One more fault over the other cgroups: one rule in each of their sets. (As separate
        // faults the same map took minutes to build: each inject rewrites every set.)
        let t = Instant::now();
        daemon.inject(half_loss.clone(), &others[1..], "1h")?;
        many_inject_s.push(t.elapsed().as_secs_f64());
        datapath::Samples::add_round(&mut many, a, b, plan)?;
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
