//! The kernel side of `clock.skew`: the targeted cgroups in `CLOCK_TARGETS`, the exec hook's
//! link (attached only while a skew is active), and a thread that patches each process the hook
//! stopped, then continues it.

use std::{os::fd::AsRawFd as _, sync::Arc};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap, MapData, RingBuf},
    programs::{BtfTracePoint, tp_btf::BtfTracePointLink},
};
use chaosd_common::clock::{CLOCK_EXEC_EVENTS_MAP, CLOCK_TARGETS_MAP, ClockExecEvent, ClockTarget};
use nix::{sys::signal::Signal, unistd::Pid};

use super::{ActiveSkew, SkewTable};
use crate::{
    error::{FaultError, RequestError},
    faults::capabilities::Problem,
};

const PROGRAM: &str = chaosd_common::names::CLOCK_EXEC;

/// Targets map, exec hook link and the active skews.
pub struct ClockState {
    targets: HashMap<MapData, u64, ClockTarget>,
    link: Option<BtfTracePointLink>,
    skews: SkewTable,
    next_key: u64,
}

impl ClockState {
    /// Takes the maps and starts the watcher thread; the exec hook loads later
    /// ([`ClockState::load`]).
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let targets = ebpf
            .take_map(CLOCK_TARGETS_MAP)
            .context("eBPF object has no clock targets map")?;
        let targets = HashMap::try_from(targets).context("clock targets map has the wrong type")?;
        let events = ebpf
            .take_map(CLOCK_EXEC_EVENTS_MAP)
            .context("eBPF object has no clock exec events map")?;
        let events =
            RingBuf::try_from(events).context("clock exec events map has the wrong type")?;
        let skews = SkewTable::default();
        let watched = Arc::clone(&skews);
        std::thread::Builder::new()
            .name("clock-exec".into())
            .spawn(move || watch(events, watched))
            .context("starting the clock exec watcher")?;
        Ok(ClockState {
            targets,
            link: None,
            skews,
            next_key: 0,
        })
    }

    /// Loads (verifies) the exec hook. A kernel that refuses it only disables `clock.skew`.
    pub fn load(&mut self, ebpf: &mut Ebpf) -> Result<(), Problem> {
        load_program(ebpf).map_err(|e| {
            Problem::new(
                format!("loading the tp_btf/sched_process_exec program failed: {e:#}"),
                "clock skew needs BTF and tp_btf programs (5.5+), bpf_send_signal and BPF ring buffers (5.8+)",
            )
        })
    }

    /// Adds a skew: refuses targets that overlap an active one, writes its cgroups to the map
    /// and attaches the hook. On error nothing of it stays.
    pub fn add(&mut self, ebpf: &mut Ebpf, skew: &Arc<ActiveSkew>) -> Result<u64, FaultError> {
        let mut skews = self.skews.lock().unwrap_or_else(|e| e.into_inner());
        for other in skews.values() {
            for (_, mine) in &skew.targets {
                if let Some((_, theirs)) = other.targets.iter().find(|(_, theirs)| {
                    crate::host::cgroup::is_same_or_ancestor(mine, theirs)
                        || crate::host::cgroup::is_same_or_ancestor(theirs, mine)
                }) {
                    return Err(FaultError::Refused(RequestError::ClockSkewOverlap {
                        cgroup: mine.clone(),
                        other: theirs.clone(),
                    }));
                }
            }
        }
        let key = self.next_key;
        self.next_key += 1;
        skews.insert(key, Arc::clone(skew));
        drop(skews);
        let result = self.write_targets(skew).and_then(|()| self.attach(ebpf));
        if let Err(e) = result {
            let _ = self.remove(key);
            return Err(e);
        }
        Ok(key)
    }

    fn write_targets(&mut self, skew: &ActiveSkew) -> Result<(), FaultError> {
        let value = ClockTarget {
            deadline_ns: skew.deadline_ns,
        };
        for (id, _) in &skew.targets {
            self.targets
                .insert(id, value, 0)
                .map_err(|e| FaultError::kernel("writing clock targets", e))?;
        }
        Ok(())
    }

    fn attach(&mut self, ebpf: &mut Ebpf) -> Result<(), FaultError> {
        if self.link.is_some() {
            return Ok(());
        }
        let program =
            btf_program(ebpf).map_err(|e| FaultError::kernel("finding the exec hook", e))?;
        let id = program
            .attach()
            .map_err(|e| FaultError::kernel("attaching tp_btf/sched_process_exec", e))?;
        let link = program
            .take_link(id)
            .map_err(|e| FaultError::kernel("keeping the exec hook's link", e))?;
        self.link = Some(link);
        Ok(())
    }

    /// Removes a skew's cgroups from the map; detaches the hook when no skew is left.
    pub fn remove(&mut self, key: u64) -> Result<(), FaultError> {
        let mut skews = self.skews.lock().unwrap_or_else(|e| e.into_inner());
        let Some(skew) = skews.remove(&key) else {
            return Ok(());
        };
        let mut result = Ok(());
        for (id, _) in &skew.targets {
            match self.targets.remove(id) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => result = Err(FaultError::kernel("removing clock targets", e)),
            }
        }
        if skews.is_empty() {
            // Dropping the link detaches the program.
            self.link = None;
        }
        result
    }
}

fn btf_program(ebpf: &mut Ebpf) -> anyhow::Result<&mut BtfTracePoint> {
    let program = ebpf
        .program_mut(PROGRAM)
        .with_context(|| format!("eBPF object has no program {PROGRAM}"))?;
    Ok(program.try_into()?)
}

fn load_program(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let btf = crate::faults::io::kernel_btf()
        .map_err(|e| anyhow::anyhow!("reading the kernel's BTF: {e}"))?;
    btf_program(ebpf)?
        .load("sched_process_exec", &btf)
        .context("loading the program")
}

/// The watcher thread: waits on the ring buffer and handles each exec.
fn watch(mut events: RingBuf<MapData>, skews: SkewTable) {
    let fd = events.as_raw_fd();
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the ring buffer's fd lives as long as `events`.
        let ready = unsafe { libc::poll(&mut pfd, 1, 1000) };
        if ready < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // Never give up: a stopped exec waits for this thread to continue it.
            tracing::error!("clock exec watcher: poll failed; retrying");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let mut batch = Vec::new();
        while let Some(item) = events.next() {
            if item.len() >= size_of::<ClockExecEvent>() {
                // SAFETY: the program writes whole ClockExecEvents; read unaligned.
                batch.push(unsafe { item.as_ptr().cast::<ClockExecEvent>().read_unaligned() });
            }
        }
        for event in batch {
            handle_exec(&event, &skews);
        }
    }
}

/// Patches a process the hook stopped, then continues it, whatever happened.
fn handle_exec(event: &ClockExecEvent, skews: &SkewTable) {
    let skew = skews
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .find(|s| s.targets.iter().any(|(id, _)| *id == event.cgroup_id))
        .cloned();
    if let Some(skew) = skew {
        // Whatever goes wrong while patching, the process must be continued below.
        let patched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            patch_stopped(event.pid, &skew)
        }));
        if patched.is_err() {
            tracing::error!(
                pid = event.pid,
                "clock skew: patching an exec'd process panicked"
            );
        }
    }
    let _ = nix::sys::signal::kill(Pid::from_raw(event.pid as i32), Signal::SIGCONT);
}

#[cfg(target_arch = "x86_64")]
fn patch_stopped(pid: u32, skew: &ActiveSkew) {
    // The SIGSTOP takes effect on the way back to user space; patch a process at rest.
    super::tracee::wait_until_stopped(pid, super::tracee::STOP_WAIT);
    let _guard = super::patching();
    if let Err(e) = skew.patch_one(pid) {
        tracing::warn!(pid, "clock skew could not patch an exec'd process: {e}");
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn patch_stopped(_pid: u32, _skew: &ActiveSkew) {}
