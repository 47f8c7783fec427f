//! Per-fault counters, kept in one per-CPU array indexed by a fault's counter slot.

/// Name of the `PerCpuArray<FaultCounters>` map.
pub const FAULT_COUNTERS_MAP: &str = "FAULT_COUNTERS";

/// Number of counter slots; the daemon hands each active fault one slot and zeroes it first.
pub const MAX_FAULT_SLOTS: u32 = 4096;

/// How many events a fault looked at and how many it acted on (dropped, failed, ...).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    /// Events that matched the fault's targets and filters.
    pub seen: u64,
    /// Of those, the events the fault acted on.
    pub affected: u64,
}

const _: () = assert!(core::mem::size_of::<FaultCounters>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), two u64 fields, no padding, every bit pattern valid.
unsafe impl aya::Pod for FaultCounters {}
