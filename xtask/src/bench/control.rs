//! Control latency seen from the datapath: a UDP sender in the target cgroup sends every
//! ~20 µs; the receiver reads kernel arrival stamps. inject → active is the time from sending
//! the inject request until the last datagram that still got through; recover → inactive the
//! time from sending the recover request until the first datagram that arrives again.

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

/// Silence after the inject answer that counts as "no longer arriving".
const QUIET: Duration = Duration::from_millis(5);
/// Longest wait for traffic to come back after a recover.
const RESUME_LIMIT: Duration = Duration::from_secs(2);
/// Sender pause between datagrams: the resolution of both figures.
const SEND_INTERVAL_US: u64 = 20;

pub fn measure(daemon: &Daemon, cgroups: &mut BenchCgroups, cycles: usize) -> Result<Value> {
    let target = cgroups.child("control")?;
    let rx = Receiver::bind()?;
    let _sender = Sender::start(&cgroups.dir_of(&target), rx.addr(), None, SEND_INTERVAL_US)?;
    wait_for_traffic(&rx, Duration::from_secs(5)).context("the sender's datagrams never came")?;
    let full_loss = json!({"kind": "net.loss", "params": {"percent": 100, "direction": "egress"}});
    let (mut active_us, mut inactive_us, mut late) = (Vec::new(), Vec::new(), 0u64);
    for _ in 0..cycles {
        rx.drain()?;
        let sent = now_ns();
        let id = daemon.inject(full_loss.clone(), std::slice::from_ref(&target), "60s")?;
        let answered = now_ns();
        let (last, late_here) = last_arrival(&rx, answered)?;
        late += late_here;
        active_us.push(last.map_or(0, |t| t.saturating_sub(sent)) as f64 / 1e3);

        let sent = now_ns();
        daemon.recover(&id)?;
        let back = wait_for_traffic(&rx, RESUME_LIMIT).with_context(|| {
            format!("traffic did not resume within {RESUME_LIMIT:?} of a recover")
        })?;
        inactive_us.push(back.saturating_sub(sent) as f64 / 1e3);
    }
    Ok(json!({
        "cycles": cycles,
        "sender_interval_us": SEND_INTERVAL_US,
        "inject_to_active_us_p50": round3(median(&active_us)),
        "inject_to_active_us_p99": round3(percentile(&active_us, 99.0)),
        "recover_to_inactive_us_p50": round3(median(&inactive_us)),
        "recover_to_inactive_us_p99": round3(percentile(&inactive_us, 99.0)),
        "datagrams_after_inject_answer_plus_1ms": late,
    }))
}

/// Reads until the socket was quiet for [`QUIET`]; returns the last arrival stamp and how
/// many datagrams arrived more than 1 ms after the inject was answered (must be none).
fn last_arrival(rx: &Receiver, answered: u64) -> Result<(Option<u64>, u64)> {
    let (mut last, mut late) = (None, 0);
    let mut quiet_since = Instant::now();
    loop {
        match rx.try_recv()? {
            Some((_, at)) => {
                last = Some(at);
                late += u64::from(at > answered + 1_000_000);
                quiet_since = Instant::now();
            }
            None if quiet_since.elapsed() >= QUIET => return Ok((last, late)),
            None => thread::sleep(Duration::from_micros(50)),
        }
    }
}

/// The arrival stamp of the next datagram, waiting at most `limit`.
fn wait_for_traffic(rx: &Receiver, limit: Duration) -> Result<u64> {
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
