//! The loaded eBPF object and what every fault kind shares: the counters map and its slots.
//!
//! Programs are loaded (verified) when the daemon starts where that is how a kind learns whether
//! this kernel can run it; the packet programs, costly to verify, load just after (see
//! `NetState::preload`) so readiness does not wait for them. Each
//! fault kind attaches its programs only while it has active faults.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard},
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use chaosd_common::counters::{FAULT_COUNTERS_MAP, FaultCounters, MAX_FAULT_SLOTS};

use crate::{api::Counters, error::FaultError, fault::ActiveFault};

/// The ELF built by build.rs from chaosd-ebpf.
static EBPF_ELF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/chaosd-ebpf"));

/// Loads chaosd's eBPF object into the kernel (maps created, programs not yet loaded).
pub fn load_object() -> anyhow::Result<Ebpf> {
    let mut loader = aya::EbpfLoader::new();
    // One parse of the kernel's BTF serves the loader and the LSM programs (parsing is slow).
    loader.btf(crate::io::kernel_btf().ok());
    crate::io::set_globals(&mut loader);
    loader
        .load(EBPF_ELF)
        .context("loading chaosd's eBPF object (is this a BPF-capable kernel and are we root?)")
}

/// Reads `aya-log` records from the programs into the `log` facade (bridged to tracing).
pub type KernelLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// The loaded object and the kernel state of every fault kind, behind one lock.
pub struct Kernel {
    /// Kept for the programs' lifetime: dropping it unloads them and detaches their links.
    pub ebpf: Ebpf,
    pub slots: CounterSlots,
    pub net: crate::net::NetState,
    /// I/O (BPF LSM) programs; on hosts that refuse them it only records why.
    pub io: crate::io::IoState,
    /// clock.skew's exec hook and targets; on hosts that refuse the hook it only records why.
    pub clock: crate::clock::ClockState,
}

impl Kernel {
    /// Loads the object and every program; returns it with the aya-log reader, if the object
    /// logs anything.
    pub fn load() -> anyhow::Result<(Kernel, Option<KernelLogger>)> {
        let mut ebpf = load_object()?;
        let logger = aya_log::EbpfLogger::init(&mut ebpf)
            .inspect_err(|e| tracing::debug!("no kernel-side log reader: {e}"))
            .ok();
        crate::heartbeat::start(&mut ebpf)?;
        let slots = CounterSlots::new(&mut ebpf)?;
        let net = crate::net::NetState::new(&mut ebpf)?;
        let io = crate::io::IoState::new(&mut ebpf)?;
        let clock = crate::clock::ClockState::new(&mut ebpf)?;
        crate::capabilities::init();
        Ok((
            Kernel {
                ebpf,
                slots,
                net,
                io,
                clock,
            },
            logger,
        ))
    }
}

/// Counter slots: one per active fault, zeroed when handed out.
pub struct CounterSlots {
    map: PerCpuArray<MapData, FaultCounters>,
    free: BTreeSet<u32>,
    cpus: usize,
}

impl CounterSlots {
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let map = ebpf
            .take_map(FAULT_COUNTERS_MAP)
            .context("eBPF object has no counters map")?;
        let map = PerCpuArray::try_from(map).context("counters map has the wrong type")?;
        let cpus = nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        Ok(CounterSlots {
            map,
            free: (0..MAX_FAULT_SLOTS).collect(),
            cpus,
        })
    }

    /// Takes a free slot and zeroes it.
    pub fn allocate(&mut self) -> Result<u32, FaultError> {
        let slot = self.free.pop_first().ok_or_else(|| FaultError::Capacity {
            what: format!("all {MAX_FAULT_SLOTS} counter slots are in use"),
        })?;
        let zeros = PerCpuValues::try_from(vec![FaultCounters::default(); self.cpus])
            .map_err(|e| FaultError::kernel("building per-CPU zeros", e))?;
        if let Err(e) = self.map.set(slot, zeros, 0) {
            self.free.insert(slot);
            return Err(FaultError::kernel("zeroing a counter slot", e));
        }
        Ok(slot)
    }

    pub fn release(&mut self, slot: u32) {
        self.free.insert(slot);
    }

    /// Sum over CPUs of a slot's counters.
    pub fn read(&self, slot: u32) -> Counters {
        let Ok(values) = self.map.get(&slot, 0) else {
            return Counters::default();
        };
        values.iter().fold(Counters::default(), |acc, c| Counters {
            seen: acc.seen + c.seen,
            affected: acc.affected + c.affected,
        })
    }
}

/// A fault whose kernel state is a rule counted in its counter slot. `remove` takes that rule
/// out of the kind's map; reverting (or dropping) does that once and frees the slot.
pub struct SlotRuleFault {
    kernel: Arc<Mutex<Kernel>>,
    slot: u32,
    kind: &'static str,
    remove: fn(&mut Kernel, u32) -> Result<(), FaultError>,
    reverted: bool,
}

impl SlotRuleFault {
    pub fn new(
        kernel: &Arc<Mutex<Kernel>>,
        slot: u32,
        kind: &'static str,
        remove: fn(&mut Kernel, u32) -> Result<(), FaultError>,
    ) -> Self {
        SlotRuleFault {
            kernel: Arc::clone(kernel),
            slot,
            kind,
            remove,
            reverted: false,
        }
    }

    pub fn slot(&self) -> u32 {
        self.slot
    }

    pub fn is_reverted(&self) -> bool {
        self.reverted
    }

    /// The shared kernel state, locked (a poisoned lock is still usable: state is plain data).
    pub fn lock_kernel(&self) -> MutexGuard<'_, Kernel> {
        self.kernel.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ActiveFault for SlotRuleFault {
    fn counters(&self) -> Counters {
        self.lock_kernel().slots.read(self.slot)
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        if self.reverted {
            return Ok(());
        }
        self.reverted = true;
        let mut kernel = self.lock_kernel();
        let result = (self.remove)(&mut kernel, self.slot);
        kernel.slots.release(self.slot);
        result
    }
}

impl Drop for SlotRuleFault {
    fn drop(&mut self) {
        if let Err(e) = self.revert() {
            tracing::error!(
                slot = self.slot,
                kind = self.kind,
                "reverting a fault on drop: {e}"
            );
        }
    }
}

/// CLOCK_MONOTONIC now, in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always readable");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}
