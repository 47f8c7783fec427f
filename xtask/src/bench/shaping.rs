//! Shaping accuracy and isolation (VM part: `net.bandwidth` needs sch_fq, which this host's
//! kernel lacks): `net.bandwidth` at 1mbit on one cgroup, measured at the receiver over a long
//! bulk TCP upload, and what that shaped upload costs a sibling cgroup's bulk upload on the
//! same device.
//!
//! Both senders run in namespace A (their own cgroups, one process each, a hidden xtask
//! subcommand) and upload to their own receiver in namespace B over the bench veth, out of the
//! same device (`VETH_A`, which gets chaosd's sch_fq while the fault is in force). The
//! receivers count the bytes they read. The sibling's upload runs from start to end.
//!
//! 1. Accuracy: `net.bandwidth` 1mbit on the target, then the target's upload; after a
//!    warm-up, its receiver is read at the two ends of one [`Plan::window`] (30 s). Then the
//!    target's upload stops and the fault is recovered.
//! 2. Isolation: [`Plan::rounds`] rounds, each one [`Plan::round_window`] of the sibling in
//!    each of three conditions: *alone* (no fault: the device's default qdisc, no target
//!    upload), *beside the shaped target* (the fault injected again, sch_fq on the device, the
//!    target uploading at 1mbit) and *with the idle fault* (injected, no target upload: what
//!    the qdisc and the rule alone cost). The order rotates by round, so over a multiple of 3
//!    rounds each condition takes each place equally often. Every window starts a warm-up
//!    after the last change (a fault's injection or recovery, the target's first bytes).
//!
//! The target's figure is its goodput (TCP payload per second, what an application sees)
//! against the asked 125,000 B/s; the fault paces IP packets, so goodput sits a header's
//! share below the asked rate. The sibling's is, per round, its throughput beside the shaped
//! target over its throughput alone in the same round (adjacent windows, so the emulated
//! host's slow drifts, which make windows minutes apart differ 1.4-2x, mostly cancel), and
//! across rounds that ratio's median with its lowest..highest range and interquartile range;
//! the same for the idle fault over alone. A range that covers 1 is "no measurable
//! difference", never a gain.
//!
//! JSON (`figures.vm_6_12.figures.shaping`, `figures.vm_6_1.figures.shaping`):
//! - `target_goodput_bytes_per_s`, `target_error_percent`, `goal_met`, `window_s`,
//!   `counters` (the fault's, from its recovery): the accuracy figure (step 1).
//! - `isolation.ratio_with_over_alone`: `median`, `min`, `max`, `p25`, `p75` of the rounds'
//!   ratios; `isolation.verdict` reads `min..max` against 1 (and says so when the
//!   interquartile range alone would not cover 1); `isolation.rounds_below_1` counts rounds.
//! - `isolation.sibling_alone_bytes_per_s_median`, `..._with_target_bytes_per_s_median`: the
//!   sibling's throughput in either condition (medians across rounds, for scale).
//! - `isolation.ratio_fault_idle_over_alone`, `fault_idle_rounds_below_1`,
//!   `fault_idle_verdict`, `sibling_fault_idle_bytes_per_s_median`: the same for the idle fault.
//! - `isolation.per_round[]`: `order` (the conditions in the order they ran),
//!   `alone_bytes_per_s`, `with_target_bytes_per_s`, `fault_idle_bytes_per_s`, `ratio`
//!   (with_target / alone), `fault_idle_ratio`, and `target_goodput_bytes_per_s` in that
//!   round's window beside the sibling (a shorter, fresh-connection check of accuracy).

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
    stats::{median, percentile, round3},
};

/// The asked rate as the fault is given it, and in bytes per second.
const RATE: &str = "1mbit";
const RATE_BYTES_PER_S: f64 = 125_000.0;
/// The target's goodput should be within this share of [`RATE_BYTES_PER_S`].
const GOAL_PERCENT: f64 = 5.0;

pub struct Plan {
    /// The target's measured window for the accuracy figure.
    pub window: Duration,
    /// Isolation rounds: each one window of the sibling alone and one beside the shaped target.
    pub rounds: usize,
    /// Each isolation window.
    pub round_window: Duration,
    /// From the target's first bytes, or a fault's recovery, to the start of a window.
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

    /// Waits (bounded) for bytes beyond the `seen` ones.
    fn wait_for_bytes(&self, seen: u64, what: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.bytes() <= seen {
            if Instant::now() > deadline {
                bail!("no bytes of the {what} upload arrived within 15 s");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Bytes per second over `window` from now.
    fn rate_over(&self, window: Duration) -> f64 {
        let [rate] = rates_over([self], window);
        rate
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

/// Bytes per second each of `sinks` received over the same `window` from now.
fn rates_over<const N: usize>(sinks: [&Sink; N], window: Duration) -> [f64; N] {
    let (b0, t0) = (sinks.map(Sink::bytes), Instant::now());
    thread::sleep(window);
    let (b1, secs) = (sinks.map(Sink::bytes), t0.elapsed().as_secs_f64());
    std::array::from_fn(|i| (b1[i] - b0[i]) as f64 / secs)
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

/// The shaped target: each [`Shaped::run`] injects `net.bandwidth` on it, starts its upload
/// and, after a warm-up, runs the measurement; then stops the upload and recovers the fault,
/// also on error.
struct Shaped<'a> {
    daemon: &'a Daemon,
    a: &'a NetNs,
    /// The target's cgroup, as the daemon names it, and its directory.
    cgroup: String,
    dir: PathBuf,
    rx: &'a Sink,
    warmup: Duration,
}

impl Shaped<'_> {
    /// `during`'s result and the fault's answer to its recovery (with its counters).
    fn run<T>(&self, during: impl FnOnce() -> T) -> Result<(T, Value)> {
        self.run_with(true, during)
    }

    /// [`Shaped::run`], with the target's upload or without it (the fault in force, idle).
    fn run_with<T>(&self, upload: bool, during: impl FnOnce() -> T) -> Result<(T, Value)> {
        // The fault acts in namespace A, named by the bench's own descriptor of it: the target
        // has no process yet, and its upload is to be paced from its first packet.
        let netns = format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.a.fd().as_raw_fd()
        );
        let fault = json!({"kind": "net.bandwidth", "params": {"rate": RATE, "netns": netns}});
        let id = self
            .daemon
            .inject(fault, std::slice::from_ref(&self.cgroup), "600s")?;
        let out = (|| {
            let seen = self.rx.bytes();
            let _tx = upload
                .then(|| TcpSender::start(self.a, &self.dir, self.rx.addr))
                .transpose()?;
            if upload {
                self.rx.wait_for_bytes(seen, "target's")?;
            }
            thread::sleep(self.warmup);
            anyhow::Ok(during())
        })();
        let info = self.daemon.recover(&id);
        Ok((out?, info?))
    }
}

/// The sibling's conditions in an isolation round.
#[derive(Clone, Copy)]
enum Condition {
    /// No fault, no target upload.
    Alone,
    /// The fault in force and the target uploading.
    WithTarget,
    /// The fault in force (sch_fq on the device), no target upload.
    FaultIdle,
}

impl Condition {
    const ALL: [Condition; 3] = [
        Condition::Alone,
        Condition::WithTarget,
        Condition::FaultIdle,
    ];

    fn key(self) -> &'static str {
        match self {
            Condition::Alone => "alone",
            Condition::WithTarget => "with_target",
            Condition::FaultIdle => "fault_idle",
        }
    }
}

/// One isolation round: the sibling's throughput in each condition, and the target's goodput
/// in its window.
struct Round {
    order: [Condition; 3],
    alone: f64,
    with_target: f64,
    fault_idle: f64,
    target: f64,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.with_target / self.alone
    }

    fn idle_ratio(&self) -> f64 {
        self.fault_idle / self.alone
    }

    fn to_json(&self) -> Value {
        json!({
            "order": self.order.map(Condition::key),
            "alone_bytes_per_s": round3(self.alone),
            "with_target_bytes_per_s": round3(self.with_target),
            "fault_idle_bytes_per_s": round3(self.fault_idle),
            "ratio": round3(self.ratio()),
            "fault_idle_ratio": round3(self.idle_ratio()),
            "target_goodput_bytes_per_s": round3(self.target),
        })
    }
}

/// `median`, `min`, `max`, `p25`, `p75` of `ratios`.
fn spread(ratios: &[f64]) -> Value {
    json!({
        "median": round3(median(ratios)),
        "min": round3(percentile(ratios, 0.0)),
        "max": round3(percentile(ratios, 100.0)),
        "p25": round3(percentile(ratios, 25.0)),
        "p75": round3(percentile(ratios, 75.0)),
    })
}

/// What the rounds' ratios (sibling beside the shaped target over alone) say: a range that
/// covers 1 is no measurable difference; the sibling paced near the target's rate is a failed
/// isolation.
fn isolation_verdict(ratios: &[f64], with_target_median: f64, beside: &str) -> String {
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let change = 100.0 * (median(ratios) - 1.0);
    if with_target_median < 2.0 * RATE_BYTES_PER_S {
        "paced like the target: isolation failed".to_string()
    } else if ratios.is_empty() {
        "no rounds".to_string()
    } else if lo <= 1.0 && hi >= 1.0 {
        let (q1, q3) = (percentile(ratios, 25.0), percentile(ratios, 75.0));
        let below = ratios.iter().filter(|r| **r < 1.0).count();
        let middle = if q3 < 1.0 || q1 > 1.0 {
            format!(
                " (their middle half, {q1:.2}..{q3:.2}, lies {} 1: {below} of {} rounds below)",
                if q3 < 1.0 { "below" } else { "above" },
                ratios.len()
            )
        } else {
            String::new()
        };
        format!("no measurable difference: the rounds' ratios ({lo:.2}..{hi:.2}) cover 1{middle}")
    } else if hi < 1.0 {
        format!(
            "slower {beside} in every round: median {:.1} % below alone",
            -change
        )
    } else {
        format!(
            "faster {beside} in every round (median +{change:.1} %): not read as a gain the \
             fault gives"
        )
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
    let shaped = Shaped {
        daemon,
        a,
        dir: cgroups.dir_of(&target),
        cgroup: target,
        rx: &target_rx,
        warmup: plan.warmup,
    };

    let _sibling_tx = TcpSender::start(a, &cgroups.dir_of(&sibling), sibling_rx.addr)?;
    sibling_rx.wait_for_bytes(0, "sibling's")?;
    thread::sleep(plan.warmup);

    // 1. Accuracy: one long window.
    let ((target_rate, window_s), info) = shaped.run(|| {
        let (t0, at) = (target_rx.bytes(), Instant::now());
        thread::sleep(plan.window);
        let secs = at.elapsed().as_secs_f64();
        ((target_rx.bytes() - t0) as f64 / secs, secs)
    })?;

    // 2. Isolation: the three conditions in adjacent windows, their order rotating by round.
    let mut rounds = Vec::with_capacity(plan.rounds);
    for i in 0..plan.rounds {
        let mut order = Condition::ALL;
        order.rotate_left(i % Condition::ALL.len());
        let (mut alone, mut with_target, mut fault_idle, mut target) = (0.0, 0.0, 0.0, 0.0);
        for condition in order {
            match condition {
                Condition::Alone => {
                    // After the previous window's recovery (or round), the sibling settles.
                    thread::sleep(plan.warmup);
                    alone = sibling_rx.rate_over(plan.round_window);
                }
                Condition::WithTarget => {
                    [with_target, target] = shaped
                        .run(|| rates_over([&sibling_rx, &target_rx], plan.round_window))?
                        .0;
                }
                Condition::FaultIdle => {
                    fault_idle = shaped
                        .run_with(false, || sibling_rx.rate_over(plan.round_window))?
                        .0;
                }
            }
        }
        rounds.push(Round {
            order,
            alone,
            with_target,
            fault_idle,
            target,
        });
    }

    let error_percent = 100.0 * (target_rate - RATE_BYTES_PER_S) / RATE_BYTES_PER_S;
    let goal_met = error_percent.abs() <= GOAL_PERCENT;
    let ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
    let alone_median = median(&rounds.iter().map(|r| r.alone).collect::<Vec<_>>());
    let with_median = median(&rounds.iter().map(|r| r.with_target).collect::<Vec<_>>());
    let verdict = isolation_verdict(&ratios, with_median, "beside the shaped target");
    let idle_ratios: Vec<f64> = rounds.iter().map(Round::idle_ratio).collect();
    let idle_median = median(&rounds.iter().map(|r| r.fault_idle).collect::<Vec<_>>());
    let idle_verdict = isolation_verdict(&idle_ratios, idle_median, "with the idle fault");
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
        "isolation": {
            "rounds": rounds.len(),
            "round_window_s": plan.round_window.as_secs_f64(),
            "alone": "the sibling's upload only, no fault (the device's default qdisc)",
            "with_target": "net.bandwidth in force on the target (sch_fq on the device) and \
                the target's paced upload beside the sibling's",
            "fault_idle": "net.bandwidth in force on the target (sch_fq on the device), no \
                target upload: what the qdisc alone costs",
            "order": "rotating by round: alone, with_target, fault_idle; then starting one later",
            "ratio_with_over_alone": spread(&ratios),
            "ratio_fault_idle_over_alone": spread(&idle_ratios),
            "sibling_alone_bytes_per_s_median": round3(alone_median),
            "sibling_with_target_bytes_per_s_median": round3(with_median),
            "rounds_below_1": ratios.iter().filter(|r| **r < 1.0).count(),
            "verdict": verdict,
            "sibling_fault_idle_bytes_per_s_median": round3(idle_median),
            "fault_idle_rounds_below_1": idle_ratios.iter().filter(|r| **r < 1.0).count(),
            "fault_idle_verdict": idle_verdict,
            "per_round": rounds.iter().map(Round::to_json).collect::<Vec<_>>(),
        },
        "summary": format!(
            "net.bandwidth {RATE}: target {target_rate:.0} B/s ({error_percent:+.1} %, goal \
             ±{GOAL_PERCENT} % {}); sibling beside it / alone: median {:.2} (range {:.2}..{:.2}, \
             IQR {:.2}..{:.2}) over {} rounds: {verdict}; with the idle fault / alone: median \
             {:.2} (range {:.2}..{:.2}): {idle_verdict}",
            if goal_met { "met" } else { "NOT met" },
            median(&ratios),
            percentile(&ratios, 0.0),
            percentile(&ratios, 100.0),
            percentile(&ratios, 25.0),
            percentile(&ratios, 75.0),
            rounds.len(),
            median(&idle_ratios),
            percentile(&idle_ratios, 0.0),
            percentile(&idle_ratios, 100.0),
        ),
        "duration_s": round3(started.elapsed().as_secs_f64()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_covering_one_is_no_difference() {
        let fast = 100e6;
        let v = isolation_verdict(&[0.9, 1.05, 0.97], fast, "beside");
        assert!(v.starts_with("no measurable difference"), "{v}");
        let v = isolation_verdict(&[0.6, 0.7, 0.8, 0.9, 1.1], fast, "beside");
        assert!(
            v.contains("cover 1") && v.contains("lies below 1: 4 of 5"),
            "{v}"
        );
        let v = isolation_verdict(&[0.8, 0.9, 0.85], fast, "beside");
        assert!(v.starts_with("slower") && v.contains("15.0 %"), "{v}");
        let v = isolation_verdict(&[1.1, 1.2, 1.3], fast, "beside");
        assert!(v.contains("not read as a gain"), "{v}");
        let v = isolation_verdict(&[0.001], 125_000.0, "beside");
        assert!(v.contains("isolation failed"), "{v}");
    }
}
