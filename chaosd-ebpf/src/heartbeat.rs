//! The dead-man switch: rules count only while the daemon's heartbeat is fresh.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::Array};
use chaosd_common::heartbeat::is_fresh;

#[map]
static CHAOSD_HEARTBEAT: Array<u64> = Array::with_max_entries(1, 0);

/// True while the daemon beats; every rule lookup goes through this first.
#[inline(always)]
pub fn daemon_alive() -> bool {
    let Some(beat) = CHAOSD_HEARTBEAT.get(0) else {
        return false;
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    is_fresh(*beat, now)
}
