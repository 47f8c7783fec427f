//! Wire types of the resource kinds: cgroup v2 knobs that throttle a target exactly
//! (`cpu.limit`, `mem.pressure`, `process.limit`, `io.throttle`), the per-process
//! `fd.limit`, and the records of what they changed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ByteRate, ByteSize, Written};

/// `cpu.limit`: caps the targets' CPU time with `cpu.max` (CFS bandwidth control).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CpuLimitParams {
    /// CPU time per period, in percent of one core: 20 = a fifth of a core, 150 = one and a
    /// half cores. Above 0; at most 100 per online core.
    pub quota: f64,
    /// The accounting period, 1ms to 1s ("100ms" by default, the kernel's own default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Written<Duration>>,
}

/// `mem.pressure`: throttles and reclaims the targets above `high` (`memory.high`); with
/// `max` and `allow_oom` also sets `memory.max`, where the kernel's OOM killer acts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemPressureParams {
    /// Above this the target's allocations are slowed and its pages reclaimed, e.g. "256MiB".
    pub high: Written<ByteSize>,
    /// A hard limit (`memory.max`): the OOM killer acts on the target beyond it. Refused
    /// unless `allow_oom` is set too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Written<ByteSize>>,
    /// Says that killing the target's processes (an OOM test) is what is asked.
    #[serde(default)]
    pub allow_oom: bool,
}

/// `process.limit`: caps how many tasks the targets may hold (`pids.max`); `fork()` and
/// `clone()` beyond it fail with EAGAIN. Processes already there are left running.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProcessLimitParams {
    /// Tasks (processes and threads) each target may hold, at least 1.
    pub max: u32,
}

/// `io.throttle`: caps the targets' block I/O to one disk with `io.max` (the kernel's
/// blk-throttle): bytes and I/O operations per second, reads and writes apart. The disk is
/// named by `path` (a file or directory on it, or its device node) or by `device`; exactly
/// one of them. At least one limit; a limit left out stays unlimited.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IoThrottleParams {
    /// A file or directory on the disk (the disk its filesystem is on), or a block device
    /// node such as "/dev/vdb" (that disk). A partition stands for its whole disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The disk as "MAJ:MIN" (`lsblk`'s MAJ:MIN, `/sys/dev/block/`), e.g. "8:0".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Read bytes per second, e.g. "10MiB/s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbps: Option<Written<ByteRate>>,
    /// Written bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wbps: Option<Written<ByteRate>>,
    /// Read operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub riops: Option<u64>,
    /// Write operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wiops: Option<u64>,
}

/// One cgroup knob a fault wrote: what it held before and what the fault set. Journaled
/// before the write, so whoever ends the fault (chaosd, its guardian, a later start) puts
/// `before` back, and only while the knob still reads `set`: a value someone wrote since is
/// theirs and stays.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KnobChange {
    /// The cgroup's path under the cgroup2 mount.
    pub cgroup: String,
    /// Its id (inode): a new cgroup at the same path is not the one changed.
    pub cgroup_id: u64,
    /// The knob's file name, e.g. "cpu.max".
    pub file: String,
    pub before: String,
    /// What the knob reads after the write (the kernel's own spelling).
    pub set: String,
}

/// `fd.limit`: lowers the soft `RLIMIT_NOFILE` of the target processes (`prlimit(2)`): once
/// a process holds `nofile` descriptors, its next `open()`, `socket()`, `accept()` or `pipe()`
/// fails with EMFILE. The hard limit is not touched.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FdLimitParams {
    /// The soft limit to set: descriptors 0 to `nofile - 1` stay usable. A process whose
    /// soft limit is already at or below it is left alone.
    pub nofile: u64,
}

/// One process limit a fault lowered. Journaled before the change, so whoever ends the fault
/// (chaosd, its guardian, a later start) raises the soft limit back to `before`, and only for
/// the same process (`start_time`, a reused pid is another process) while the limit still
/// reads `set`: a value the process or someone else set since is theirs and stays.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitChange {
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat` (clock ticks since boot) when the limit was lowered.
    pub start_time: u64,
    /// The resource, as `prlimit(1)` names it: "NOFILE".
    pub resource: String,
    /// The soft limit before (`u64::MAX` is unlimited).
    pub before: u64,
    /// The soft limit the fault set.
    pub set: u64,
    /// The hard limit, left as it was.
    pub hard: u64,
}
