//! `clock.skew`: every process of the target cgroups reads its clocks shifted by an offset,
//! including processes exec'd into them later; nothing outside does.
//!
//! Each process's vDSO is patched from user space with ptrace ([`patch`]): a detour page near
//! the vDSO runs the original clock code and adds the offset to the result for the chosen
//! clocks ([`detour`]), so a clock read stays a user-space call. The detour checks the fault's
//! deadline on every call and stops skewing by itself when it has passed, so a daemon that dies
//! cannot leave processes skewed. Recover restores the original vDSO bytes at once.
//!
//! Processes exec'd into a target later are stopped by the `tp_btf/sched_process_exec` program
//! of `chaosd-ebpf/src/clock` before they run a single instruction of the new image, reported
//! through a ring buffer, patched by [`exec_watch`] and continued. Forked children inherit the
//! patch (fork copies the mappings).
//!
//! # Kernel requirements
//! x86_64 only (the detour is x86-64 code). ptrace (`CAP_SYS_PTRACE`, no Yama restriction for
//! root), BTF and `tp_btf` programs (5.5+), `bpf_send_signal` (5.3+), BPF ring buffers (5.8+),
//! `MAP_FIXED_NOREPLACE` (4.17+). Before 5.14 the exec hook reads the task's cgroup ancestry
//! through BTF offsets instead of `bpf_get_current_ancestor_cgroup_id` (checked on 5.10). Programs that read clocks with the raw system call instead of
//! the vDSO are not skewed: see docs/clock.md.

pub mod detour;
mod exec_watch;
pub mod params;
#[cfg(target_arch = "x86_64")]
pub mod patch;
#[cfg(target_arch = "x86_64")]
pub mod tracee;
pub mod vdso;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

pub use params::{ClockName, ClockSkewParams};
use thiserror::Error;

use crate::{
    api::Counters,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub use exec_watch::ClockState;

/// Why one process could not be patched or restored.
#[derive(Debug, Error)]
pub enum ClockPatchError {
    #[error("the process is gone")]
    Gone,
    #[error("the process has no vDSO (a zombie or a kernel thread)")]
    NoVdso,
    #[error("the process's vDSO is not x86-64 ({0}); 32-bit processes are not supported")]
    ForeignVdso(String),
    #[error("the vDSO cannot be parsed: {0}")]
    BadVdso(String),
    #[error("the vDSO's {function} cannot be hooked: {reason}")]
    Unrelocatable { function: String, reason: String },
    #[error("no free page within reach of the vDSO")]
    NoRoom,
    #[error("a thread stays inside the bytes the hook replaces")]
    Busy,
    #[error("{op}: {errno}")]
    Ptrace {
        op: &'static str,
        errno: nix::errno::Errno,
    },
    #[error("{call} in the process failed: {errno}")]
    Syscall {
        call: &'static str,
        errno: nix::errno::Errno,
    },
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("assembling the detour: {0}")]
    Assemble(String),
}

impl ClockPatchError {
    pub fn io(op: &'static str, source: std::io::Error) -> Self {
        ClockPatchError::Io { op, source }
    }

    /// Errors about one process only (it exited or exec'd meanwhile, it is traced by someone
    /// else, its memory layout or seccomp filter is in the way): that process is skipped, the
    /// fault goes on. The others concern the vDSO code every process shares, so they fail it.
    pub fn is_per_process(&self) -> bool {
        !matches!(
            self,
            ClockPatchError::BadVdso(_)
                | ClockPatchError::Unrelocatable { .. }
                | ClockPatchError::Assemble(_)
        )
    }

    /// Whether the process simply is not there to patch (no warning needed).
    fn is_absent(&self) -> bool {
        matches!(self, ClockPatchError::Gone | ClockPatchError::NoVdso)
    }
}

/// Patched pids an active skew remembers before it prunes the dead ones.
const MAX_REMEMBERED: usize = 4096;

/// Only one patcher at a time: the apply and revert loops and the exec watcher never trace the
/// same process at once (a second tracer would be refused).
static PATCHING: Mutex<()> = Mutex::new(());

fn patching() -> std::sync::MutexGuard<'static, ()> {
    PATCHING.lock().unwrap_or_else(|e| e.into_inner())
}

/// An active skew: what it applies, where, and what it did so far.
pub struct ActiveSkew {
    /// (cgroup id, path relative to the cgroup2 mount) of each target.
    pub targets: Vec<(u64, String)>,
    pub target_dirs: Vec<PathBuf>,
    pub offset_ns: i64,
    pub clock_mask: u64,
    pub deadline_ns: u64,
    /// `rate - 1`, fixed point ([`detour::RATE_SHIFT`]); 0 without drift.
    pub rate_delta: i64,
    /// Each clock's reading when the fault began, in chaosd's time namespace: where the drift
    /// starts from, the same for every process (also those exec'd later).
    pub anchors: [i64; detour::CLOCK_IDS],
    seen: AtomicU64,
    affected: AtomicU64,
    /// Pids patched, so revert also finds those that left the targets.
    patched: Mutex<BTreeSet<u32>>,
    /// Set by revert before it restores: an exec handled after that is left alone.
    ended: AtomicBool,
}

impl ActiveSkew {
    fn values(&self) -> detour::SkewValues {
        detour::SkewValues::new(self.offset_ns, self.deadline_ns, self.clock_mask)
            .with_drift(self.rate_delta, self.anchors)
    }

    /// Patches one process, counting it; per-process failures are logged and skipped.
    #[cfg(target_arch = "x86_64")]
    fn patch_one(&self, pid: u32) -> Result<(), ClockPatchError> {
        // Checked under the patching lock, which revert takes after setting it.
        if self.ended.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.seen.fetch_add(1, Ordering::Relaxed);
        match patch::patch_process(pid, self.values()) {
            Ok(how) => {
                tracing::debug!(pid, ?how, "clock skew applied");
                self.affected.fetch_add(1, Ordering::Relaxed);
                let mut patched = self.patched.lock().unwrap_or_else(|e| e.into_inner());
                if patched.len() >= MAX_REMEMBERED {
                    // Processes that exec'd and exited by the thousand: forget the dead.
                    patched.retain(|p| Path::new(&format!("/proc/{p}")).exists());
                }
                patched.insert(pid);
                Ok(())
            }
            Err(e) if e.is_absent() => Ok(()),
            Err(e) if e.is_per_process() => {
                tracing::warn!(pid, "clock skew skipped a process: {e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn patch_one(&self, _pid: u32) -> Result<(), ClockPatchError> {
        Err(ClockPatchError::ForeignVdso(std::env::consts::ARCH.into()))
    }

    /// Restores every process of the targets and every process it patched.
    fn unpatch_all(&self) -> Result<(), ClockPatchError> {
        let mut pids: Vec<u32> = self
            .patched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        for dir in &self.target_dirs {
            pids.extend(crate::faults::process::pids_in_subtree(dir));
        }
        pids.sort_unstable();
        pids.dedup();
        let mut first_err = None;
        for pid in pids {
            match unpatch_one(pid) {
                Ok(()) => {}
                Err(e) if e.is_absent() => {}
                // That process stays skewed until the deadline, when its detour stops.
                Err(e) if e.is_per_process() => tracing::warn!(pid, "restoring the vDSO: {e}"),
                Err(e) => {
                    tracing::warn!(pid, "restoring the vDSO: {e}");
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(target_arch = "x86_64")]
fn unpatch_one(pid: u32) -> Result<(), ClockPatchError> {
    patch::unpatch_process(pid).map(|_| ())
}

#[cfg(not(target_arch = "x86_64"))]
fn unpatch_one(_pid: u32) -> Result<(), ClockPatchError> {
    Ok(())
}

/// The clock skew faults in force, shared with the exec watcher.
pub type SkewTable = Arc<Mutex<BTreeMap<u64, Arc<ActiveSkew>>>>;

/// Applies `clock.skew`: registers the targets with the exec hook first (so no exec slips
/// between), then patches every process already in them. On error nothing stays applied.
pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &ClockSkewParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    if !cfg!(target_arch = "x86_64") {
        return Err(FaultError::Refused(unsupported_arch()));
    }
    let offset_ns = p.offset_ns();
    let rate_delta = detour::rate_delta(p.rate());
    // Loaded before the deadline is taken: verifying can take seconds under emulation.
    lock(kernel).require(crate::faults::kernel::ProgramGroup::ClockExec)?;
    let targets = ctx.cgroup_targets();
    let target_dirs = crate::faults::process::target_dirs(ctx.targets)?;
    let skew = Arc::new(ActiveSkew {
        targets,
        target_dirs,
        offset_ns,
        clock_mask: params::clock_mask(&p.clocks),
        deadline_ns: ctx.deadline_ns(),
        rate_delta,
        anchors: anchors(),
        seen: AtomicU64::new(0),
        affected: AtomicU64::new(0),
        patched: Mutex::new(BTreeSet::new()),
        ended: AtomicBool::new(false),
    });
    let key = {
        let mut guard = lock(kernel);
        let k = &mut *guard;
        k.clock.add(&mut k.ebpf, &skew)?
    };
    let fault = SkewFault {
        kernel: Arc::clone(kernel),
        key,
        skew: Arc::clone(&skew),
        reverted: false,
    };
    let patched = {
        let _guard = patching();
        skew.target_dirs
            .iter()
            .flat_map(|dir| crate::faults::process::pids_in_subtree(dir))
            .try_for_each(|pid| skew.patch_one(pid))
    };
    // On error, dropping `fault` (outside the patching lock) restores what was patched.
    patched.map_err(|e| FaultError::kernel("patching a process's vDSO", e))?;
    Ok(Box::new(fault))
}

/// Every clock's reading now (ns; 0 for ids that are no clock or cannot be read).
fn anchors() -> [i64; detour::CLOCK_IDS] {
    let mut out = [0; detour::CLOCK_IDS];
    for (id, slot) in out.iter_mut().enumerate() {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime(2) writes one timespec to a live local.
        if unsafe { libc::clock_gettime(id as libc::clockid_t, &mut ts) } == 0 {
            *slot = ts.tv_sec * 1_000_000_000 + ts.tv_nsec;
        }
    }
    out
}

fn lock(kernel: &Arc<Mutex<Kernel>>) -> std::sync::MutexGuard<'_, Kernel> {
    kernel.lock().unwrap_or_else(|e| e.into_inner())
}

/// Restores the processes of a clock skew that a dead chaosd journaled; other kinds are left
/// alone. Their detours would stop skewing at the deadline anyway. A process the exec hook had
/// stopped when the daemon died would stay stopped: stopped processes of the targets are
/// continued.
pub fn restore_leftover(f: &crate::api::FaultInfo) {
    if !matches!(f.fault, crate::api::FaultSpec::ClockSkew(_)) {
        return;
    }
    let Ok(mount) = crate::host::cgroup::cgroup2_mount() else {
        return;
    };
    let _guard = patching();
    for t in &f.targets {
        let Ok(cg) = crate::host::cgroup::Cgroup::open(&mount, &t.cgroup) else {
            continue;
        };
        if cg.id != t.cgroup_id {
            continue;
        }
        for pid in crate::faults::process::pids_in_subtree(&cg.dir) {
            if let Err(e) = unpatch_one(pid)
                && !e.is_absent()
            {
                tracing::warn!(fault_id = %f.id, pid, "restoring a leftover clock skew: {e}");
            }
            if is_stopped(pid) {
                tracing::warn!(fault_id = %f.id, pid, "continuing a process a previous chaosd left stopped");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGCONT,
                );
            }
        }
    }
}

/// Whether `pid` is stopped by a signal ("T" in /proc/PID/stat).
pub fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()))
        == Some('T')
}

/// The refusal on architectures other than x86_64.
pub fn unsupported_arch() -> RequestError {
    RequestError::Unsupported {
        kind: "clock.skew".into(),
        reason: format!(
            "clock skew patches x86-64 vDSO code; this is {}",
            std::env::consts::ARCH
        ),
        fix: "run chaosd on an x86_64 host".into(),
    }
}

struct SkewFault {
    kernel: Arc<Mutex<Kernel>>,
    key: u64,
    skew: Arc<ActiveSkew>,
    reverted: bool,
}

impl ActiveFault for SkewFault {
    fn counters(&self) -> Counters {
        Counters {
            seen: self.skew.seen.load(Ordering::Relaxed),
            affected: self.skew.affected.load(Ordering::Relaxed),
        }
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        if self.reverted {
            return Ok(());
        }
        self.reverted = true;
        // First stop catching execs, then restore: a process exec'd meanwhile has a fresh vDSO.
        let removed = lock(&self.kernel).clock.remove(self.key);
        self.skew.ended.store(true, Ordering::SeqCst);
        let _guard = patching();
        let restored = self
            .skew
            .unpatch_all()
            .map_err(|e| FaultError::kernel("restoring a process's vDSO", e));
        removed.and(restored)
    }
}

impl Drop for SkewFault {
    fn drop(&mut self) {
        if let Err(e) = self.revert() {
            tracing::error!("reverting a clock.skew fault on drop: {e}");
        }
    }
}
