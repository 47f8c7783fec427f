//! Clock skew: the cgroups whose newly exec'd processes must be patched, and the event the
//! exec hook (`tp_btf/sched_process_exec`) sends the daemon for each of them.

/// Name of the `HashMap<u64, ClockTarget>` map, keyed by cgroup v2 id.
pub const CLOCK_TARGETS_MAP: &str = "CLOCK_TARGETS";
/// Name of the ring buffer of [`ClockExecEvent`]s.
pub const CLOCK_EXEC_EVENTS_MAP: &str = "CLOCK_EXEC_EVENTS";
/// Cgroups that can be under clock skew at once.
pub const MAX_CLOCK_CGROUPS: u32 = 1024;
/// Bytes of the exec event ring buffer (a power of two, a multiple of the page size).
pub const CLOCK_EXEC_RING_BYTES: u32 = 64 * 1024;

/// A targeted cgroup (it covers its descendants).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockTarget {
    /// CLOCK_MONOTONIC ns (`bpf_ktime_get_ns`) after which the hook leaves execs alone, so a
    /// target the daemon could not remove never stops a process after its fault.
    pub deadline_ns: u64,
}

const _: () = assert!(core::mem::size_of::<ClockTarget>() == 8);

/// One exec in a targeted cgroup. The hook stopped the process (SIGSTOP); the daemon patches
/// it and sends SIGCONT.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockExecEvent {
    /// The process (tgid) that exec'd.
    pub pid: u32,
    /// Explicit padding: keeps `cgroup_id` 8-aligned with no hidden bytes.
    pub _pad: u32,
    /// The targeted cgroup (an ancestor of the process's cgroup, or that cgroup itself).
    pub cgroup_id: u64,
}

const _: () = assert!(core::mem::size_of::<ClockExecEvent>() == 16);

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), one u64, every bit pattern valid.
    unsafe impl aya::Pod for super::ClockTarget {}
    // SAFETY: repr(C) integers with explicit padding (size asserted above).
    unsafe impl aya::Pod for super::ClockExecEvent {}
}
