//! Keeps the kernel side of the dead-man switch fresh (see `chaosd_common::heartbeat`).
//!
//! The beat is a task on the async runtime, the part of the daemon that serves requests and
//! ends faults on time: a hung or starved runtime stops beating, and the programs then ignore
//! every rule. Kernel work (program loads, applying, reverting) runs on blocking threads, so a
//! long load never delays a beat.

use std::time::Duration;

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use chaosd_common::heartbeat::{HEARTBEAT_INTERVAL_NS, HEARTBEAT_MAP, HEARTBEAT_STALE_NS};

use crate::faults::kernel::monotonic_ns;

pub type HeartbeatMap = Array<MapData, u64>;

/// Takes the map and beats once, so rules count from the first attach. Call before any
/// program is attached, then hand the map to [`keep_beating`].
pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<HeartbeatMap> {
    let map = ebpf
        .take_map(HEARTBEAT_MAP)
        .context("eBPF object has no heartbeat map")?;
    let mut map = HeartbeatMap::try_from(map).context("heartbeat map has the wrong type")?;
    beat(&mut map).context("writing the first heartbeat")?;
    Ok(map)
}

fn beat(map: &mut HeartbeatMap) -> anyhow::Result<u64> {
    let now = monotonic_ns();
    map.set(0, now, 0)?;
    Ok(now)
}

/// Beats every [`HEARTBEAT_INTERVAL_NS`] for as long as the runtime runs it.
pub async fn keep_beating(mut map: HeartbeatMap) {
    let mut ticks = tokio::time::interval(Duration::from_nanos(HEARTBEAT_INTERVAL_NS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = monotonic_ns();
    loop {
        ticks.tick().await;
        match beat(&mut map) {
            Ok(now) => {
                let gap = now.saturating_sub(last);
                if gap > HEARTBEAT_STALE_NS / 2 {
                    tracing::warn!(
                        gap_ms = gap / 1_000_000,
                        "the heartbeat ran late (the runtime was starved); the kernel pauses every rule after {} ms without one",
                        HEARTBEAT_STALE_NS / 1_000_000
                    );
                }
                last = now;
            }
            Err(e) => tracing::error!("writing the heartbeat: {e:#}"),
        }
    }
}
