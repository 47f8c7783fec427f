//! The per-CPU counters every fault kind updates.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use chaosd_common::counters::{FaultCounters, MAX_FAULT_SLOTS};

#[map]
static FAULT_COUNTERS: PerCpuArray<FaultCounters> =
    PerCpuArray::with_max_entries(MAX_FAULT_SLOTS, 0);

/// Counts one event for the fault in `slot`; `affected` when the fault acted on it.
#[inline(always)]
pub fn count(slot: u32, affected: bool) {
    if let Some(c) = FAULT_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe {
            (*c).seen += 1;
            if affected {
                (*c).affected += 1;
            }
        }
    }
}
