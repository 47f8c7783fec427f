//! Keeps the kernel side of the dead-man switch fresh (see `chaosd_common::heartbeat`).
//!
//! A plain thread owns the map, apart from the kernel lock and the async runtime: loading a
//! program can hold that lock for seconds, and that must not look like a dead daemon.

use std::time::Duration;

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use chaosd_common::heartbeat::{HEARTBEAT_INTERVAL_NS, HEARTBEAT_MAP, HEARTBEAT_STALE_NS};

use crate::kernel::monotonic_ns;

type HeartbeatMap = Array<MapData, u64>;

/// Beats once, so rules count from the first attach, then keeps beating for the life of
/// the process. Call before any program is attached.
pub fn start(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let map = ebpf
        .take_map(HEARTBEAT_MAP)
        .context("eBPF object has no heartbeat map")?;
    let mut map = HeartbeatMap::try_from(map).context("heartbeat map has the wrong type")?;
    beat(&mut map).context("writing the first heartbeat")?;
    std::thread::Builder::new()
        .name("chaosd-heartbeat".into())
        .spawn(move || keep_beating(map))
        .context("starting the heartbeat thread")?;
    Ok(())
}

fn beat(map: &mut HeartbeatMap) -> anyhow::Result<u64> {
    let now = monotonic_ns();
    map.set(0, now, 0)?;
    Ok(now)
}

fn keep_beating(mut map: HeartbeatMap) {
    let mut last = monotonic_ns();
    loop {
        std::thread::sleep(Duration::from_nanos(HEARTBEAT_INTERVAL_NS));
        match beat(&mut map) {
            Ok(now) => {
                let gap = now.saturating_sub(last);
                if gap > HEARTBEAT_STALE_NS / 2 {
                    tracing::warn!(
                        gap_ms = gap / 1_000_000,
                        "the heartbeat ran late; the kernel pauses every rule after {} ms without one",
                        HEARTBEAT_STALE_NS / 1_000_000
                    );
                }
                last = now;
            }
            Err(e) => tracing::error!("writing the heartbeat: {e:#}"),
        }
    }
}
