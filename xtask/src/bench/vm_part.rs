//! The bench's VM part: what this host's kernel cannot run (sch_fq, sch_netem, BPF LSM),
//! measured inside Debian's 6.12 kernel booted by the VM harness (`crate::vm`, qemu TCG), and
//! the shaping figure ([`shaping`]) in Debian's 6.1 as well (a boot that runs only that).
//!
//! The host side ([`run`]) boots the guest with this very xtask binary as stage 2's program,
//! `xtask __bench-vm-part`, which ([`guest_main`]) starts the release chaosd built on the host
//! (the guest sees the host's root read-only), measures, and writes its JSON to
//! `$CHAOSD_TEST_REPORT_DIR/vm-part.json` in the boot's work dir, where the host reads it.
//!
//! Emulated (TCG) timing is slow and noisy, so absolute figures mean little: chaosd and netem
//! (or the peer setup) are measured in the same boot, taking turns round by round, and are to
//! be compared with each other.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    accuracy, cgroup::BenchCgroups, control::Watch, daemon::Daemon, datapath, delay, loadavg,
    machine, netns, peer, shaping, stats::round3,
};
use crate::{util::workspace_root, vm};

/// The guest's file for the figures, in its report dir.
const FIGURES_FILE: &str = "vm-part.json";

/// Arguments of `xtask __bench-vm-part` (run inside the guest).
#[derive(clap::Args, Debug)]
pub struct VmPartArgs {
    /// Directory of the release chaosd binaries (a host path; the guest sees the host's root).
    #[arg(long)]
    bin_dir: PathBuf,
    #[arg(long)]
    quick: bool,
    /// Only the shaping figure (net.bandwidth and its sibling).
    #[arg(long)]
    shaping_only: bool,
}

/// Sizes of the VM part: smaller than the host's, an emulated CPU is ~10-50× slower.
struct Plan {
    delay: delay::Plan,
    datapath: datapath::Plan,
    setup_cycles: usize,
    watch: Watch,
    io_reads: u32,
    shaping: shaping::Plan,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        Plan {
            delay: delay::Plan {
                rounds: if quick { 2 } else { 4 },
                window: Duration::from_millis(if quick { 500 } else { 1000 }),
            },
            datapath: datapath::Plan {
                rounds: if quick { 2 } else { 7 },
                throughput_run: Duration::from_millis(if quick { 500 } else { 1000 }),
                round_trips_per_round: if quick { 300 } else { 1_000 },
            },
            setup_cycles: if quick { 20 } else { 100 },
            watch: Watch {
                send_interval_us: 200,
                quiet: Duration::from_millis(50),
            },
            io_reads: if quick { 2_000 } else { 10_000 },
            // The 30 s window is the accuracy figure's definition: --quick shortens only the
            // isolation rounds (a multiple of 3: each condition takes each place as often).
            // Full: ~4 min of measurement per kernel.
            shaping: shaping::Plan {
                window: Duration::from_secs(30),
                rounds: if quick { 3 } else { 6 },
                round_window: Duration::from_secs(if quick { 5 } else { 8 }),
                warmup: Duration::from_secs(3),
            },
        }
    }
}

/// Host side: boots the newest installed kernel of `series` (`6.12`, `6.1`) to run the VM
/// part, all of it or only the shaping figure; its figures, or why there are none.
pub fn run(bin_dir: &std::path::Path, quick: bool, series: &str, shaping_only: bool) -> Value {
    match boot(bin_dir, quick, series, shaping_only) {
        Ok(figures) => figures,
        Err(e) => json!(format!("not measured: the VM part failed: {e:#}")),
    }
}

fn boot(bin_dir: &std::path::Path, quick: bool, series: &str, shaping_only: bool) -> Result<Value> {
    let program = vm::TestBinary {
        name: "bench".into(),
        executable: std::env::current_exe().context("finding the xtask binary")?,
        cwd: workspace_root(),
    };
    let mut args = vec![
        "__bench-vm-part".to_owned(),
        "--bin-dir".to_owned(),
        bin_dir.display().to_string(),
    ];
    if quick {
        args.push("--quick".into());
    }
    if shaping_only {
        args.push("--shaping-only".into());
    }
    let timeout = Duration::from_secs(match (shaping_only, quick) {
        (true, _) => 600,
        (false, true) => 900,
        (false, false) => 1800,
    });
    let run = vm::run_program(series, &program, &args, timeout)?;
    if let Some(why) = &run.failure {
        let output = std::fs::read_to_string(run.report_dir.join("output")).unwrap_or_default();
        let tail: Vec<&str> = output.lines().rev().take(20).collect();
        bail!(
            "{why}; the last lines of its output:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let path = run.report_dir.join(FIGURES_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut figures: Value = serde_json::from_str(&text)?;
    figures["boot_s"] = json!(round3(run.elapsed.as_secs_f64()));
    figures["kernel"] = json!(run.kernel);
    Ok(figures)
}

/// Guest side: measures and writes the figures to the report dir.
pub fn guest_main(args: &VmPartArgs) -> Result<()> {
    let report_dir = std::env::var_os("CHAOSD_TEST_REPORT_DIR")
        .map(PathBuf::from)
        .context("CHAOSD_TEST_REPORT_DIR is unset: this runs inside the VM harness")?;
    let plan = Plan::new(args.quick);
    let started = std::time::Instant::now();
    let load_before = loadavg();
    let mut cgroups = BenchCgroups::new()?;
    let daemon = Daemon::start(&args.bin_dir)?;
    let figures = match measure(&daemon, &mut cgroups, &plan, args.shaping_only) {
        Ok(f) => f,
        Err(e) => bail!("{e:#}\nchaosd's log:\n{}", daemon.log()),
    };
    let report = json!({
        "machine": machine(),
        "emulation": "qemu TCG (no KVM), 2 vCPUs, 1 GiB, sharing the host's 2 cores",
        "duration_s": round3(started.elapsed().as_secs_f64()),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "figures": figures,
    });
    let path = report_dir.join(FIGURES_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

fn measure(
    daemon: &Daemon,
    cgroups: &mut BenchCgroups,
    plan: &Plan,
    shaping_only: bool,
) -> Result<Value> {
    let (a, b) = netns::veth_pair()?;
    eprintln!("bench vm: net.bandwidth with a sibling alongside");
    let shaping = shaping::measure(daemon, cgroups, (&a, &b), &plan.shaping)?;
    if shaping_only {
        return Ok(json!({ "shaping": shaping }));
    }
    eprintln!("bench vm: delay, chaosd next to netem");
    let delay = delay::measure(daemon, cgroups, (&a, &b), &[10, 100], &plan.delay)?;
    eprintln!("bench vm: peer approach, overhead");
    let overhead = peer::overhead(daemon, cgroups, (&a, &b), &plan.datapath)?;
    eprintln!("bench vm: peer approach, set-up latency");
    let setup = peer::setup_latency(daemon, cgroups, (&a, &b), plan.setup_cycles, plan.watch)?;
    eprintln!("bench vm: io.errno");
    let io = accuracy::io_errno(daemon, cgroups, &[1.0, 10.0, 50.0], plan.io_reads)?;
    Ok(json!({
        "delay_vs_netem": delay,
        "peer_approach": {
            "untargeted_overhead": overhead,
            "setup_latency": setup,
        },
        "io_errno": io,
        "shaping": shaping,
    }))
}
