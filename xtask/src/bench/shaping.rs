//! Shaping accuracy and isolation (VM part: `net.bandwidth` needs sch_fq, which this host's
//! kernel lacks): `net.bandwidth` at 1mbit on one cgroup, measured at the receiver over a long
//! bulk TCP upload, with a sibling cgroup's bulk upload on the same device alongside.
//!
//! Both senders run in namespace A (their own cgroups, one process each, a hidden xtask
//! subcommand) and upload to their own receiver in namespace B over the bench veth, out of the
//! same device (`VETH_A`, which gets chaosd's sch_fq). The receivers count the bytes they read.
//!
//! 1. The sibling alone, no fault: its baseline over [`Plan::baseline`].
//! 2. `net.bandwidth` 1mbit on the target, then the target's upload; after a warm-up, both
//!    receivers are read at the two ends of one [`Plan::window`] (30 s).
//! 3. The target's upload stopped and the fault recovered: the sibling alone again.
//!
//! The target's figure is its goodput (TCP payload per second, what an application sees)
//! against the asked 125,000 B/s; the fault paces IP packets, so goodput sits a header's
//! share below the asked rate. The sibling's is its throughput during the window over the
//! mean of its two baselines, next to how far those two baselines differ from each other (the
//! noise of an emulated, shared machine).

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    cgroup::BenchCgroups,
    daemon::Daemon,
    netns::{ADDR_B, NetNs},
    stats::round3,
};

/// The asked rate as the fault is given it, and in bytes per second.
const RATE: &str = "1mbit";
const RATE_BYTES_PER_S: f64 = 125_000.0;
/// The target's goodput should be within this share of [`RATE_BYTES_PER_S`].
const GOAL_PERCENT: f64 = 5.0;
/// The sibling counts as unaffected when its throughput during the window is within this
/// share of its baselines' range.
const SIBLING_TOLERANCE_PERCENT: f64 = 10.0;

pub struct Plan {
    /// The target's measured window.
    pub window: Duration,
    /// Each of the sibling's baselines.
    pub baseline: Duration,
    /// From a sender's first bytes (or the fault) to the start of a window.
    pub warmup: Duration,
}

/// Arguments of `xtask __bench-tcp-send`.
#[derive(clap::Args, Debug)]
pub struct TcpSendArgs {
    /// Where to upload.
    #[arg(long)]
    to: SocketAddr,
    /// cgroup2 directory to join before connecting.
    #[arg(long)]
    cgroup: PathBuf,
}

/// The bulk sender: joins its cgroup, connects and writes until the connection breaks (the
/// receiver went) or it is killed.
pub fn run_tcp_sender(args: &TcpSendArgs) -> Result<()> {
    std::fs::write(args.cgroup.join("cgroup.procs"), "0")
        .with_context(|| format!("joining {}", args.cgroup.display()))?;
    let mut s = TcpStream::connect_timeout(&args.to, Duration::from_secs(10))
        .with_context(|| format!("connecting to {}", args.to))?;
    let chunk = vec![0x5au8; 128 << 10];
    loop {
        if s.write_all(&chunk).is_err() {
            return Ok(());
        }
    }
}

/// A bulk sender process, killed and reaped on drop.
struct TcpSender(Child);

impl TcpSender {
    /// Started from a thread in `ns`, so the process (and its socket) lives there.
    fn start(ns: &NetNs, cgroup: &Path, to: SocketAddr) -> Result<TcpSender> {
        let (exe, cgroup) = (std::env::current_exe()?, cgroup.to_owned());
        ns.run(move || {
            let child = Command::new(exe)
                .args(["__bench-tcp-send", "--to", &to.to_string()])
                .arg("--cgroup")
                .arg(&cgroup)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .context("starting the TCP sender")?;
            Ok(TcpSender(child))
        })
    }
}

impl Drop for TcpSender {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP receiver in namespace B that reads and counts whatever its connections send, until
/// dropped.
struct Sink {
    addr: SocketAddr,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    fn bind(b: &NetNs) -> Result<Sink> {
        let listener = b.run(|| Ok(TcpListener::bind((ADDR_B, 0))?))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (bytes, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (b2, s2) = (bytes.clone(), stop.clone());
        let thread = thread::spawn(move || accept_loop(&listener, &b2, &s2));
        Ok(Sink {
            addr,
            bytes,
            stop,
            thread: Some(thread),
        })
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Waits (bounded) for the first bytes.
    fn wait_for_bytes(&self, what: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.bytes() == 0 {
            if Instant::now() > deadline {
                bail!("no bytes of the {what} upload arrived within 15 s");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Bytes per second over `window` from now.
    fn rate_over(&self, window: Duration) -> f64 {
        let (b0, t0) = (self.bytes(), Instant::now());
        thread::sleep(window);
        (self.bytes() - b0) as f64 / t0.elapsed().as_secs_f64()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, bytes: &Arc<AtomicU64>, stop: &Arc<AtomicBool>) {
    let mut readers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                let (bytes, stop) = (bytes.clone(), stop.clone());
                readers.push(thread::spawn(move || read_all(s, &bytes, &stop)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(_) => break,
        }
    }
    for r in readers {
        let _ = r.join();
    }
}

fn read_all(mut s: TcpStream, bytes: &AtomicU64, stop: &AtomicBool) {
    if s.set_nonblocking(false).is_err()
        || s.set_read_timeout(Some(Duration::from_millis(200)))
            .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 256 << 10];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

pub fn measure(
    daemon: &Daemon,
    cgroups: &mut BenchCgroups,
    (a, b): (&NetNs, &NetNs),
    plan: &Plan,
) -> Result<Value> {
    if let Some(reason) = daemon.unsupported_reason("net.bandwidth")? {
        return Ok(json!(reason));
    }
    let started = Instant::now();
    let target = cgroups.child("bandwidth-target")?;
    let sibling = cgroups.child("bandwidth-sibling")?;
    let (target_rx, sibling_rx) = (Sink::bind(b)?, Sink::bind(b)?);

    let sibling_tx = TcpSender::start(a, &cgroups.dir_of(&sibling), sibling_rx.addr)?;
    sibling_rx.wait_for_bytes("sibling's")?;
    thread::sleep(plan.warmup);
    let sibling_before = sibling_rx.rate_over(plan.baseline);

    // The fault acts in namespace A, named by the bench's own descriptor of it: the target has
    // no process yet, and its upload is to be paced from its first packet.
    let netns = format!("/proc/{}/fd/{}", std::process::id(), a.fd().as_raw_fd());
    let fault = json!({"kind": "net.bandwidth", "params": {"rate": RATE, "netns": netns}});
    let id = daemon.inject(fault, std::slice::from_ref(&target), "600s")?;
    let window = (|| {
        let target_tx = TcpSender::start(a, &cgroups.dir_of(&target), target_rx.addr)?;
        target_rx.wait_for_bytes("target's")?;
        thread::sleep(plan.warmup);
        let (t0, s0, at) = (target_rx.bytes(), sibling_rx.bytes(), Instant::now());
        thread::sleep(plan.window);
        let (t1, s1, elapsed) = (target_rx.bytes(), sibling_rx.bytes(), at.elapsed());
        drop(target_tx);
        let secs = elapsed.as_secs_f64();
        anyhow::Ok(((t1 - t0) as f64 / secs, (s1 - s0) as f64 / secs, secs))
    })();
    let info = daemon.recover(&id);
    let (target_rate, sibling_during, window_s) = window?;
    let info = info?;
    thread::sleep(plan.warmup);
    let sibling_after = sibling_rx.rate_over(plan.baseline);
    drop(sibling_tx);

    let error_percent = 100.0 * (target_rate - RATE_BYTES_PER_S) / RATE_BYTES_PER_S;
    let base_mean = (sibling_before + sibling_after) / 2.0;
    let (lo, hi) = (
        sibling_before.min(sibling_after),
        sibling_before.max(sibling_after),
    );
    let tol = SIBLING_TOLERANCE_PERCENT / 100.0;
    let sibling_verdict = if sibling_during < 2.0 * RATE_BYTES_PER_S {
        "paced like the target: isolation failed".to_string()
    } else if sibling_during >= lo * (1.0 - tol) && sibling_during <= hi * (1.0 + tol) {
        format!("unaffected: within its two baselines' range ±{SIBLING_TOLERANCE_PERCENT} %")
    } else if sibling_during < lo {
        format!(
            "slower than both baselines by more than {SIBLING_TOLERANCE_PERCENT} %: {:.1} % \
             below their mean",
            100.0 * (1.0 - sibling_during / base_mean)
        )
    } else {
        "faster than both baselines: noise of the shared host".to_string()
    };
    let goal_met = error_percent.abs() <= GOAL_PERCENT;
    Ok(json!({
        "fault": {"kind": "net.bandwidth", "rate": RATE, "asked_bytes_per_s": RATE_BYTES_PER_S},
        "traffic": "one bulk TCP upload per cgroup, namespace A -> B over the bench veth, both \
            out of the same device; bytes counted by the receivers",
        "window_s": round3(window_s),
        "warmup_s": plan.warmup.as_secs_f64(),
        "target_goodput_bytes_per_s": round3(target_rate),
        "target_error_percent": round3(error_percent),
        "goal": format!("target goodput within ±{GOAL_PERCENT} % of {RATE_BYTES_PER_S} B/s"),
        "goal_met": goal_met,
        "counters": info["counters"],
        "sibling": {
            "baseline_s": plan.baseline.as_secs_f64(),
            "before_bytes_per_s": round3(sibling_before),
            "during_bytes_per_s": round3(sibling_during),
            "after_bytes_per_s": round3(sibling_after),
            "during_over_baseline_mean": round3(sibling_during / base_mean),
            "after_over_before": round3(sibling_after / sibling_before),
            "verdict": sibling_verdict,
        },
        "summary": format!(
            "net.bandwidth {RATE}: target {:.0} B/s ({error_percent:+.1} %, goal ±{GOAL_PERCENT} % \
             {}), sibling {:.1} MB/s during vs {:.1}/{:.1} MB/s before/after ({})",
            target_rate,
            if goal_met { "met" } else { "NOT met" },
            sibling_during / 1e6,
            sibling_before / 1e6,
            sibling_after / 1e6,
            sibling_verdict,
        ),
        "duration_s": round3(started.elapsed().as_secs_f64()),
    }))
}
