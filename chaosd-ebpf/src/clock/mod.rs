//! Clock skew: catch processes exec'd into a targeted cgroup before they run a single user
//! instruction, so the daemon can patch their vDSO like those that were already running.
//!
//! `sched_process_exec` fires after the new image is set up. If the task's cgroup (or an
//! ancestor) is in `CLOCK_TARGETS`, the program sends its pid through `CLOCK_EXEC_EVENTS` and
//! stops the process with SIGSTOP (delivered on the way back to user space). The daemon patches
//! it and sends SIGCONT. If the event cannot be queued, the process is not stopped: nobody
//! would wake it.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_send_signal},
    macros::{btf_tracepoint, map},
    maps::{HashMap, RingBuf},
    programs::BtfTracePointContext,
};
use chaosd_common::{
    clock::{CLOCK_EXEC_RING_BYTES, ClockExecEvent, ClockTarget, MAX_CLOCK_CGROUPS},
    net::MAX_CGROUP_LEVEL,
};

#[map]
static CLOCK_TARGETS: HashMap<u64, ClockTarget> = HashMap::with_max_entries(MAX_CLOCK_CGROUPS, 0);

#[map]
static CLOCK_EXEC_EVENTS: RingBuf = RingBuf::with_byte_size(CLOCK_EXEC_RING_BYTES, 0);

const SIGSTOP: u32 = 19;

#[btf_tracepoint(function = "sched_process_exec")]
pub fn chaosd_clock_exec(_ctx: BtfTracePointContext) -> i32 {
    let Some(cgroup_id) = targeted_ancestor() else {
        return 0;
    };
    let event = ClockExecEvent {
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        cgroup_id,
    };
    if CLOCK_EXEC_EVENTS
        .output::<ClockExecEvent>(&event, 0)
        .is_ok()
    {
        // SAFETY: plain helper call; it signals the current process.
        unsafe { bpf_send_signal(SIGSTOP) };
    }
    0
}

/// The targeted cgroup among the current task's ancestry whose deadline is still ahead.
#[inline(always)]
fn targeted_ancestor() -> Option<u64> {
    // A stopped process needs the daemon to wake it: none is stopped without a live daemon.
    if !crate::heartbeat::daemon_alive() {
        return None;
    }
    // SAFETY: plain helper call about the current task.
    let now = unsafe { bpf_ktime_get_ns() };
    let ancestry = crate::ancestry::Ancestry::current();
    let mut level = 1;
    while level <= MAX_CGROUP_LEVEL {
        let id = ancestry.id_at(level);
        if id == 0 {
            return None;
        }
        // SAFETY: values are only read; the daemon writes whole values.
        if let Some(target) = unsafe { CLOCK_TARGETS.get(&id) }
            && target.deadline_ns > now
        {
            return Some(id);
        }
        level += 1;
    }
    None
}
