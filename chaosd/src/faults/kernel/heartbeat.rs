//! Keeps the kernel side of the dead-man switch fresh (see `chaosd_common::heartbeat`).
//!
//! The beat is a task on the async runtime, the part of the daemon that serves requests and
//! ends faults on time: a hung or starved runtime stops beating, and the programs then ignore
//! every rule. Kernel work (program loads, applying, reverting) runs on blocking threads, so a
//! long load never delays a beat.
//!
//! It beats only while a fault holds it ([`Heartbeat::hold`], one hold per live fault): an
//! idle daemon has no rule to keep alive and no fault for the guardian to end, so it does not
//! wake 10 times a second for nothing. The first hold beats at once, before the fault writes
//! any rule, and an idle daemon marks its beat file idle so the guardian does not take the
//! pause for a stall.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};
use std::time::Duration;

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use chaosd_common::heartbeat::{HEARTBEAT_INTERVAL_NS, HEARTBEAT_MAP, HEARTBEAT_STALE_NS};
use tokio::sync::Notify;

use crate::faults::kernel::{beat_file::BeatFile, monotonic_ns};

pub type HeartbeatMap = Array<MapData, u64>;

/// Takes the map and beats once, so rules count from the first attach. Call before any
/// program is attached, then hand the map to [`Heartbeat::new`].
pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<HeartbeatMap> {
    let map = ebpf
        .take_map(HEARTBEAT_MAP)
        .context("eBPF object has no heartbeat map")?;
    let mut map = HeartbeatMap::try_from(map).context("heartbeat map has the wrong type")?;
    write_beat(&mut map, monotonic_ns()).context("writing the first heartbeat")?;
    Ok(map)
}

fn write_beat(map: &mut HeartbeatMap, now: u64) -> anyhow::Result<()> {
    map.set(0, now, 0)?;
    Ok(())
}

/// The daemon's heartbeat: the kernel map and the guardian's file, beaten while held.
#[derive(Clone)]
pub struct Heartbeat(Arc<Shared>);

struct Shared {
    map: Mutex<HeartbeatMap>,
    file: Option<BeatFile>,
    holders: AtomicUsize,
    /// Wakes the beating task out of idle.
    wake: Notify,
}

/// Keeps the heartbeat going while it lives; held by each live fault.
pub struct BeatHold(Arc<Shared>);

impl Drop for BeatHold {
    fn drop(&mut self) {
        self.0.holders.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Heartbeat {
    pub fn new(map: HeartbeatMap, file: Option<BeatFile>) -> Heartbeat {
        Heartbeat(Arc::new(Shared {
            map: Mutex::new(map),
            file,
            holders: AtomicUsize::new(0),
            wake: Notify::new(),
        }))
    }

    /// Holds the heartbeat for one fault. Resuming from idle beats before it returns, so the
    /// rules the fault is about to write are honoured from their first packet.
    pub fn hold(&self) -> BeatHold {
        if self.0.holders.fetch_add(1, Ordering::SeqCst) == 0 {
            self.0.beat();
            self.0.wake.notify_one();
        }
        BeatHold(Arc::clone(&self.0))
    }

    /// Beats every [`HEARTBEAT_INTERVAL_NS`] while held, for as long as the runtime runs it.
    pub async fn keep_beating(self) {
        let shared = self.0;
        let mut ticks = tokio::time::interval(Duration::from_nanos(HEARTBEAT_INTERVAL_NS));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = monotonic_ns();
        loop {
            if shared.holders.load(Ordering::SeqCst) == 0 {
                shared.mark_idle();
                // A hold taken meanwhile left a permit: no wake-up is lost.
                shared.wake.notified().await;
                ticks.reset();
                last = monotonic_ns();
                continue;
            }
            ticks.tick().await;
            let Some(now) = shared.beat() else { continue };
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
    }
}

impl Shared {
    /// Writes a beat into the map and the file; the time written, unless the map refused it.
    fn beat(&self) -> Option<u64> {
        let now = monotonic_ns();
        let written = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            write_beat(&mut map, now)
        };
        if let Err(e) = written {
            tracing::error!("writing the heartbeat: {e:#}");
            return None;
        }
        if let Some(f) = &self.file
            && let Err(e) = f.beat(now)
        {
            tracing::error!("writing the guardian's heartbeat file: {e}");
        }
        Some(now)
    }

    fn mark_idle(&self) {
        if let Some(f) = &self.file
            && let Err(e) = f.mark_idle()
        {
            tracing::error!("writing the guardian's heartbeat file: {e}");
        }
    }
}
