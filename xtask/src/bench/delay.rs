//! Delay accuracy, chaosd's `net.delay` next to `tc netem` on the same link (VM part: it needs
//! sch_fq and sch_netem).
//!
//! A sender in the target cgroup, inside namespace A, sends a datagram stamped with its send
//! time every [`SEND_INTERVAL_US`] over the veth to a receiver in namespace B, which reads the
//! kernel's arrival stamps. One-way latency is arrival − send (one clock, one host). Each
//! round takes turns: no delay (the baseline), then per asked delay chaosd's fault on the
//! cgroup and netem as the root qdisc of A's veth end, each for one window. The added latency
//! of a datagram is its one-way latency minus the baseline median.

use std::{
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    cgroup::BenchCgroups,
    control::wait_for_traffic,
    daemon::Daemon,
    netem::{Effect, NetemRoot},
    netns::{ADDR_B, NetNs, VETH_A},
    probe::{Datagram, Receiver, Sender, now_ns},
    stats::{median, percentile, round3},
};

/// Sender pause between datagrams.
pub const SEND_INTERVAL_US: u64 = 1_000;
/// How long after the last datagram of a window sent it may still come (beyond the delay).
const ARRIVAL_MARGIN: Duration = Duration::from_millis(500);

/// How many windows, and how long each sends.
pub struct Plan {
    pub rounds: usize,
    pub window: Duration,
}

/// The one-way latencies (ms) of one window, and how many datagrams of it never came.
#[derive(Default)]
struct Window {
    one_way_ms: Vec<f64>,
    missing: u64,
}

impl Window {
    fn add(&mut self, other: Window) {
        self.one_way_ms.extend(other.one_way_ms);
        self.missing += other.missing;
    }

    /// p50/p99 of the added latency over `baseline_ms`, and the datagram counts.
    fn added(&self, baseline_ms: f64) -> Value {
        let added: Vec<f64> = self.one_way_ms.iter().map(|l| l - baseline_ms).collect();
        json!({
            "added_ms_p50": round3(median(&added)),
            "added_ms_p99": round3(percentile(&added, 99.0)),
            "datagrams": added.len(),
            "missing": self.missing,
        })
    }
}

/// The sender (cgroup `target`, namespace `a`) and receiver (namespace `b`) of a delay run.
pub struct Probe {
    rx: Receiver,
    _sender: Sender,
}

impl Probe {
    pub fn start(cgroups: &BenchCgroups, target: &str, a: &NetNs, b: &NetNs) -> Result<Probe> {
        Self::start_with(cgroups, target, a, b, SEND_INTERVAL_US)
    }

    /// [`Probe::start`] with another pause between datagrams.
    pub fn start_with(
        cgroups: &BenchCgroups,
        target: &str,
        a: &NetNs,
        b: &NetNs,
        interval_us: u64,
    ) -> Result<Probe> {
        let rx = b.run(|| Receiver::bind_to(SocketAddr::from((ADDR_B, 0))))?;
        let (dir, to) = (cgroups.dir_of(target), rx.addr());
        // Spawned from a thread in `a`, the sender lives in `a`.
        let sender = a.run(move || Sender::start(&dir, to, None, interval_us))?;
        wait_for_traffic(&rx, Duration::from_secs(10))
            .context("the delay probe's datagrams never reached namespace B")?;
        Ok(Probe {
            rx,
            _sender: sender,
        })
    }

    pub fn receiver(&self) -> &Receiver {
        &self.rx
    }

    /// Where the probe sends.
    pub fn addr(&self) -> SocketAddr {
        self.rx.addr()
    }

    /// One window: datagrams sent during `window` from now, read once they had time to
    /// arrive with `delay`.
    fn window(&self, window: Duration, delay: Duration) -> Result<Window> {
        self.rx.drain()?;
        let start = now_ns();
        thread::sleep(window);
        let end = now_ns();
        thread::sleep(delay + ARRIVAL_MARGIN);
        let got: Vec<Datagram> = self
            .rx
            .drain_datagrams()?
            .into_iter()
            .filter(|d| (start..end).contains(&d.sent_ns))
            .collect();
        let (first, last) = match (
            got.iter().map(|d| d.seq).min(),
            got.iter().map(|d| d.seq).max(),
        ) {
            (Some(f), Some(l)) => (f, l),
            _ => bail!("no datagram of a {window:?} window arrived (delay {delay:?})"),
        };
        let one_way_ms = got
            .iter()
            .map(|d| d.arrived_ns.saturating_sub(d.sent_ns) as f64 / 1e6)
            .collect();
        Ok(Window {
            one_way_ms,
            missing: u64::from(last - first + 1).saturating_sub(got.len() as u64),
        })
    }
}

pub fn measure(
    daemon: &Daemon,
    cgroups: &mut BenchCgroups,
    (a, b): (&NetNs, &NetNs),
    delays_ms: &[u64],
    plan: &Plan,
) -> Result<Value> {
    let target = cgroups.child("delay")?;
    let probe = Probe::start(cgroups, &target, a, b)?;
    let mut baseline = Window::default();
    let mut chaosd: Vec<Window> = delays_ms.iter().map(|_| Window::default()).collect();
    let mut netem: Vec<Window> = delays_ms.iter().map(|_| Window::default()).collect();
    let started = Instant::now();
    for _ in 0..plan.rounds {
        baseline.add(probe.window(plan.window, Duration::ZERO)?);
        for (i, &ms) in delays_ms.iter().enumerate() {
            let delay = Duration::from_millis(ms);
            let fault = json!({"kind": "net.delay", "params": {"delay": format!("{ms}ms")}});
            let id = daemon.inject(fault, std::slice::from_ref(&target), "300s")?;
            let w = probe.window(plan.window, delay);
            daemon.recover(&id)?;
            chaosd[i].add(w?);

            let tc = NetemRoot::install(a, VETH_A, Effect::Delay(delay))?;
            let w = probe.window(plan.window, delay);
            tc.remove()?;
            netem[i].add(w?);
        }
    }
    let base_ms = median(&baseline.one_way_ms);
    let rows: Vec<Value> = delays_ms
        .iter()
        .zip(chaosd.iter().zip(&netem))
        .map(|(ms, (c, n))| {
            json!({
                "asked_ms": ms,
                "chaosd_net_delay": c.added(base_ms),
                "tc_netem": n.added(base_ms),
            })
        })
        .collect();
    Ok(json!({
        "link": "veth between two namespaces; chaosd: net.delay on the sender's cgroup (EDT + \
            sch_fq); netem: root qdisc of the sender's veth end, made over netlink",
        "sender_interval_us": SEND_INTERVAL_US,
        "rounds": plan.rounds,
        "window_s": plan.window.as_secs_f64(),
        "baseline_one_way_ms_p50": round3(base_ms),
        "baseline_one_way_ms_p99": round3(percentile(&baseline.one_way_ms, 99.0)),
        "baseline_missing": baseline.missing,
        "by_delay": rows,
        "duration_s": round3(started.elapsed().as_secs_f64()),
    }))
}
