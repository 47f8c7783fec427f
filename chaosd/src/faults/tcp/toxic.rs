//! What a proxy fault does to a connection, and the registry the proxy finds it in by the
//! fault's counter slot (which the kernel records for each connection it redirects).

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::sync::watch;

use crate::api::Stream;

/// One fault's effect, with Toxiproxy's semantics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Toxic {
    /// Each chunk is delayed by `latency` ± `jitter`, flow order kept.
    Latency {
        latency: Duration,
        jitter: Duration,
        stream: Stream,
    },
    /// The client's connection is reset (RST) `after` it was accepted.
    ResetPeer { after: Duration },
    /// The connection is closed once `bytes` passed in `stream`.
    LimitData { bytes: u64, stream: Stream },
    /// Data in `stream` is dropped; the connection is closed `after`, or when the fault ends.
    Timeout {
        after: Option<Duration>,
        stream: Stream,
    },
    /// Connects are refused in the kernel; the proxy never sees them.
    Down,
    /// The direction's data passes at most at this rate.
    Bandwidth { bytes_per_sec: u64, stream: Stream },
    /// The direction's close (FIN) is passed on `delay` late.
    SlowClose { delay: Duration, stream: Stream },
    /// Writes are split into slices of `size` ± `variation` bytes, `delay` apart.
    Slicer {
        size: u64,
        variation: u64,
        delay: Duration,
        stream: Stream,
    },
}

impl Toxic {
    /// Whether this toxic acts on the data of one direction (`upstream`: client to server).
    pub fn acts_on(&self, upstream: bool) -> bool {
        match self {
            Toxic::Latency { stream, .. }
            | Toxic::LimitData { stream, .. }
            | Toxic::Timeout { stream, .. }
            | Toxic::Bandwidth { stream, .. }
            | Toxic::SlowClose { stream, .. }
            | Toxic::Slicer { stream, .. } => stream.covers(upstream),
            Toxic::ResetPeer { .. } | Toxic::Down => false,
        }
    }
}

/// A toxic in force; connections watch `ended` so a recovered fault stops acting on them.
pub struct ActiveToxic {
    pub toxic: Toxic,
    ended: watch::Sender<bool>,
}

impl ActiveToxic {
    pub fn new(toxic: Toxic) -> Self {
        ActiveToxic {
            toxic,
            ended: watch::channel(false).0,
        }
    }

    pub fn live(&self) -> bool {
        !*self.ended.borrow()
    }

    fn end(&self) {
        self.ended.send_replace(true);
    }

    /// Resolves when the fault ends (at once if it has).
    pub async fn wait_ended(&self) {
        let mut rx = self.ended.subscribe();
        let _ = rx.wait_for(|ended| *ended).await;
    }
}

/// The toxics in force by counter slot. Locked only for map lookups and updates.
#[derive(Default)]
pub struct Toxics(RwLock<BTreeMap<u32, Arc<ActiveToxic>>>);

impl Toxics {
    pub fn insert(&self, slot: u32, toxic: Arc<ActiveToxic>) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot, toxic);
    }

    /// Takes the fault out and tells its connections it ended.
    pub fn end(&self, slot: u32) {
        let removed = self
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&slot);
        if let Some(t) = removed {
            t.end();
        }
    }

    /// The live toxics of these slots, in slot order of the kernel's record.
    pub fn of_slots(&self, slots: &[u32]) -> Vec<Arc<ActiveToxic>> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        slots.iter().filter_map(|s| map.get(s).cloned()).collect()
    }
}
