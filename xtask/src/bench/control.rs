//! Control latency seen from the datapath: a UDP sender in the target cgroup sends every
//! ~20 µs; the receiver reads kernel arrival stamps. inject → active is the time from sending
//! the inject request until the last datagram that still got through; recover → inactive the
//! time from sending the recover request until the first datagram that arrives again.
//! [`on_off_cycles`] measures the same for any switch: the VM part uses it for the peer
//! approach's qdiscs next to chaosd's inject.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    cgroup::BenchCgroups,
    daemon::Daemon,
    probe::{Receiver, Sender, now_ns},
    stats::{median, percentile, round3},
};

/// Silence after the inject answer that counts as "no longer arriving" (on this host).
const QUIET: Duration = Duration::from_millis(5);
/// Longest wait for traffic to come back after a recover.
const RESUME_LIMIT: Duration = Duration::from_secs(2);
/// Sender pause between datagrams: the resolution of both figures.
const SEND_INTERVAL_US: u64 = 20;

/// How the datapath is watched: the sender's pause (the figures' resolution) and the silence
/// that counts as "no longer arriving". An emulated guest needs coarser values than the host.
#[derive(Clone, Copy)]
pub struct Watch {
    pub send_interval_us: u64,
    pub quiet: Duration,
}

/// The host's watch: a datagram every ~20 µs, 5 ms of silence.
pub const HOST_WATCH: Watch = Watch {
    send_interval_us: SEND_INTERVAL_US,
    quiet: QUIET,
};

pub fn measure(daemon: &Daemon, cgroups: &mut BenchCgroups, cycles: usize) -> Result<Value> {
    let target = cgroups.child("control")?;
    let rx = Receiver::bind()?;
    let _sender = Sender::start(
        &cgroups.dir_of(&target),
        rx.addr(),
        None,
        HOST_WATCH.send_interval_us,
    )?;
    let full_loss = full_loss();
    on_off_cycles(
        &rx,
        cycles,
        HOST_WATCH,
        || daemon.inject(full_loss.clone(), std::slice::from_ref(&target), "60s"),
        |id| daemon.recover(&id).map(drop),
    )
}

/// 100 % egress loss: the fault whose start and end the datapath shows at once.
pub fn full_loss() -> Value {
    json!({"kind": "net.loss", "params": {"percent": 100, "direction": "egress"}})
}

/// `cycles` times: `on` (whatever makes the sender's datagrams stop reaching `rx`), then `off`
/// with what `on` returned. A sender must already be sending to `rx`. inject → active is the
/// time from calling `on` to the last datagram that still arrived, recover → inactive from
/// calling `off` to the first datagram that arrives again.
pub fn on_off_cycles<T>(
    rx: &Receiver,
    cycles: usize,
    watch: Watch,
    mut on: impl FnMut() -> Result<T>,
    mut off: impl FnMut(T) -> Result<()>,
) -> Result<Value> {
    wait_for_traffic(rx, Duration::from_secs(5)).context("the sender's datagrams never came")?;
    let (mut active_us, mut inactive_us, mut late) = (Vec::new(), Vec::new(), 0u64);
    for _ in 0..cycles {
        rx.drain()?;
        let sent = now_ns();
        let state = on()?;
        let answered = now_ns();
        let (last, late_here) = last_arrival(rx, answered, watch.quiet)?;
        late += late_here;
        active_us.push(last.map_or(0, |t| t.saturating_sub(sent)) as f64 / 1e3);

        let sent = now_ns();
        off(state)?;
        let back = wait_for_traffic(rx, RESUME_LIMIT).with_context(|| {
            format!("traffic did not resume within {RESUME_LIMIT:?} of a recover")
        })?;
        inactive_us.push(back.saturating_sub(sent) as f64 / 1e3);
    }
    Ok(json!({
        "cycles": cycles,
        "sender_interval_us": watch.send_interval_us,
        "quiet_ms": watch.quiet.as_secs_f64() * 1e3,
        "inject_to_active_us_p50": round3(median(&active_us)),
        "inject_to_active_us_p99": round3(percentile(&active_us, 99.0)),
        "recover_to_inactive_us_p50": round3(median(&inactive_us)),
        "recover_to_inactive_us_p99": round3(percentile(&inactive_us, 99.0)),
        "datagrams_after_inject_answer_plus_1ms": late,
    }))
}

/// Reads until the socket was quiet for `quiet`; returns the last arrival stamp and how
/// many datagrams arrived more than 1 ms after the inject was answered (must be none).
fn last_arrival(rx: &Receiver, answered: u64, quiet: Duration) -> Result<(Option<u64>, u64)> {
    let (mut last, mut late) = (None, 0);
    let mut quiet_since = Instant::now();
    loop {
        match rx.try_recv()? {
            Some((_, at)) => {
                last = Some(at);
                late += u64::from(at > answered + 1_000_000);
                quiet_since = Instant::now();
            }
            None if quiet_since.elapsed() >= quiet => return Ok((last, late)),
            None => thread::sleep(Duration::from_micros(50)),
        }
    }
}

/// The arrival stamp of the next datagram, waiting at most `limit`.
pub fn wait_for_traffic(rx: &Receiver, limit: Duration) -> Result<u64> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some((_, at)) = rx.try_recv()? {
            return Ok(at);
        }
        if Instant::now() > deadline {
            bail!("no datagram within {limit:?}");
        }
        thread::sleep(Duration::from_micros(20));
    }
}

/// `n` faults in force at once, each on a cgroup of its own (net.loss 1 %, one rule per set):
/// the time of each inject, so the first and the `n`th can be compared (each updates only
/// its own cgroup's rule set), and how long until all `n` are in force.
pub fn concurrent(daemon: &Daemon, cgroups: &mut BenchCgroups, n: usize) -> Result<Value> {
    let targets = (0..n)
        .map(|i| cgroups.child(&format!("concurrent-{i}")))
        .collect::<Result<Vec<_>>>()?;
    let loss = json!({"kind": "net.loss", "params": {"percent": 1, "direction": "egress"}});
    let started = Instant::now();
    let mut inject_ms = Vec::with_capacity(n);
    for t in &targets {
        let t0 = Instant::now();
        daemon.inject(loss.clone(), std::slice::from_ref(t), "10m")?;
        inject_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let all_in_force_s = started.elapsed().as_secs_f64();
    let t0 = Instant::now();
    daemon.delete("/v1/faults")?;
    let recover_all_s = t0.elapsed().as_secs_f64();
    let window = 20.min(n);
    let first = median(&inject_ms[..window]);
    let last = median(&inject_ms[n - window..]);
    Ok(json!({
        "faults": n,
        "kind": "net.loss 1 % egress, one cgroup each",
        "first_injects_ms_median": round3(first),
        "last_injects_ms_median": round3(last),
        "last_over_first": round3(last / first),
        "inject_ms_p99": round3(percentile(&inject_ms, 99.0)),
        "all_in_force_s": round3(all_in_force_s),
        "recover_all_s": round3(recover_all_s),
        "note": format!("medians of the first and the last {window} injects, one client, one at a time"),
    }))
}
