//! The loaded eBPF object and what every fault kind shares: the counters map and its slots.
//!
//! The object (its maps) is created when the daemon starts; its programs are loaded
//! (verified) per [`ProgramGroup`], the first time a kind needs them or `doctor` asks. That
//! keeps a start fast (verifying every program took tens of seconds under emulation) and makes
//! each group's first load the probe that says whether this kernel can run its kinds. Each
//! fault kind attaches its programs only while it has active faults.

pub mod beat_file;
pub mod heartbeat;
pub mod rule_sets;

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use chaosd_common::counters::{FAULT_COUNTERS_MAP, FaultCounters, MAX_FAULT_SLOTS};

use crate::{api::Counters, error::FaultError, faults::ActiveFault, faults::capabilities::Problem};

/// The ELF built by build.rs from chaosd-ebpf.
static EBPF_ELF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/chaosd-ebpf"));

/// Loads chaosd's eBPF object into the kernel (maps created, programs not yet loaded).
pub fn load_object() -> anyhow::Result<Ebpf> {
    let mut loader = aya::EbpfLoader::new();
    // No CO-RE relocations to apply (Rust eBPF emits none; struct offsets come in as globals),
    // so the kernel's BTF is not parsed here: only the LSM and tp_btf loads need it, later.
    loader.btf(None);
    crate::faults::io::set_globals(&mut loader);
    crate::faults::net::set_proxy_globals(&mut loader);
    loader
        .load(EBPF_ELF)
        .context("loading chaosd's eBPF object (is this a BPF-capable kernel and are we root?)")
}

/// Reads `aya-log` records from the programs into the `log` facade (bridged to tracing).
pub type KernelLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Programs that load together, each the first time a kind needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProgramGroup {
    /// cgroup_skb ingress and egress: loss, partition, delay, bandwidth.
    Packet,
    /// cgroup sock_addr connect and sendmsg: connect errors (`bpf_set_retval`).
    Connect,
    /// The TC egress classifier: corrupt and duplicate.
    Classifier,
    /// BPF LSM: I/O errors.
    Lsm,
    /// `tp_btf/sched_process_exec`: clock skew for processes exec'd later.
    ClockExec,
    /// cgroup connect4 + getpeername4 and sock_ops: the transparent proxy (`tcp.*`, `http.*`).
    Proxy,
    /// The proxy's programs plus cgroup sendmsg4/6 and recvmsg4/6: DNS faults (`dns.*`).
    Dns,
}

impl ProgramGroup {
    pub const ALL: [ProgramGroup; 7] = [
        ProgramGroup::Packet,
        ProgramGroup::Connect,
        ProgramGroup::Classifier,
        ProgramGroup::Lsm,
        ProgramGroup::ClockExec,
        ProgramGroup::Proxy,
        ProgramGroup::Dns,
    ];

    /// The faults that need it, for log lines.
    pub fn faults(self) -> &'static str {
        match self {
            ProgramGroup::Packet => "packet faults (loss, partition, delay, bandwidth)",
            ProgramGroup::Connect => "connect errors",
            ProgramGroup::Classifier => "corrupt and duplicate",
            ProgramGroup::Lsm => "I/O faults",
            ProgramGroup::ClockExec => "clock skew",
            ProgramGroup::Proxy => "proxy faults (tcp.*, http.*)",
            ProgramGroup::Dns => "dns faults (dns.*)",
        }
    }

    /// The name its load is recorded under in the capability table (`probe:<name>`).
    pub fn probe_name(self) -> &'static str {
        match self {
            ProgramGroup::Packet => crate::faults::capabilities::PROBE_PACKET,
            ProgramGroup::Connect => crate::faults::capabilities::PROBE_CONNECT_ERROR,
            ProgramGroup::Classifier => crate::faults::capabilities::PROBE_TC_CLASSIFIER,
            ProgramGroup::Lsm => crate::faults::capabilities::PROBE_BPF_LSM,
            ProgramGroup::ClockExec => crate::faults::capabilities::PROBE_CLOCK_EXEC,
            ProgramGroup::Proxy => crate::faults::capabilities::PROBE_PROXY,
            ProgramGroup::Dns => crate::faults::capabilities::PROBE_DNS,
        }
    }
}

/// The loaded object and the kernel state of every fault kind, behind one lock.
pub struct Kernel {
    /// Kept for the programs' lifetime: dropping it unloads them and detaches their links.
    pub ebpf: Ebpf,
    /// Shared outside the lock: reading a fault's counters never waits for kernel work.
    pub slots: Arc<CounterSlots>,
    pub net: crate::faults::net::NetState,
    /// I/O (BPF LSM) programs; on hosts that refuse them it only records why.
    pub io: crate::faults::io::IoState,
    /// clock.skew's exec hook and targets; on hosts that refuse the hook it only records why.
    pub clock: crate::faults::clock::ClockState,
    /// The proxy of the `tcp.*` kinds.
    pub tcp: crate::faults::tcp::TcpState,
    /// The resolver of the `dns.*` kinds.
    pub dns: crate::faults::dns::DnsState,
    /// The network namespaces the proxy and the resolver listen in besides chaosd's own.
    pub served: crate::faults::tcp::served::ServedNetns,
}

impl Kernel {
    /// Creates the object's maps (no program is loaded yet: see [`Kernel::ensure`]); returns it
    /// with the aya-log reader, if the object logs anything, and the heartbeat map.
    pub fn load() -> anyhow::Result<(
        Kernel,
        Option<KernelLogger>,
        crate::faults::kernel::heartbeat::HeartbeatMap,
    )> {
        let mut ebpf = load_object()?;
        let logger = aya_log::EbpfLogger::init(&mut ebpf)
            .inspect_err(|e| tracing::debug!("no kernel-side log reader: {e}"))
            .ok();
        let heartbeat = crate::faults::kernel::heartbeat::take(&mut ebpf)?;
        let slots = Arc::new(CounterSlots::new(&mut ebpf)?);
        let net = crate::faults::net::NetState::new(&mut ebpf)?;
        let io = crate::faults::io::IoState::new(&mut ebpf)?;
        let clock = crate::faults::clock::ClockState::new(&mut ebpf)?;
        let tcp = crate::faults::tcp::TcpState::new(&mut ebpf)?;
        let dns = crate::faults::dns::DnsState::new(&mut ebpf)?;
        let served = crate::faults::tcp::served::ServedNetns::new(&mut ebpf)?;
        crate::faults::capabilities::init();
        crate::host::memory::trim();
        Ok((
            Kernel {
                ebpf,
                slots,
                net,
                io,
                clock,
                tcp,
                dns,
                served,
            },
            logger,
            heartbeat,
        ))
    }

    /// Loads `group`'s programs unless that was tried before; the outcome (also a refusal) is
    /// recorded for the capability table and kept: a kernel that refused a program once
    /// refuses it again.
    pub fn ensure(&mut self, group: ProgramGroup) -> Result<(), Problem> {
        if let Some(done) = crate::faults::capabilities::probe_result(group.probe_name()) {
            return done;
        }
        // The DNS programs ride on the proxy's: those load (and are recorded) first.
        if group == ProgramGroup::Dns
            && let Err(p) = self.ensure(ProgramGroup::Proxy)
        {
            crate::faults::capabilities::record_probe(group.probe_name(), Err(p.clone()));
            return Err(p);
        }
        let started = Instant::now();
        let ebpf = &mut self.ebpf;
        let result = match group {
            ProgramGroup::Packet => self.net.load_packet_programs(ebpf),
            ProgramGroup::Connect => self.net.load_connect_programs(ebpf),
            ProgramGroup::Classifier => self.net.tc.load(ebpf),
            ProgramGroup::Lsm => self.io.load(ebpf),
            ProgramGroup::ClockExec => self.clock.load(ebpf),
            ProgramGroup::Proxy => self.net.load_proxy_programs(ebpf),
            ProgramGroup::Dns => self.net.load_dns_programs(ebpf),
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(()) => tracing::info!(?group, elapsed_ms, "programs loaded"),
            Err(p) => tracing::warn!(
                ?group,
                elapsed_ms,
                "{} unavailable: {}",
                group.faults(),
                p.reason
            ),
        }
        crate::faults::capabilities::record_probe(group.probe_name(), result.clone());
        // A load parses BTF and verifier logs, megabytes freed right after.
        crate::host::memory::trim();
        result
    }

    /// [`Kernel::ensure`] as a fault error, for the apply paths.
    pub fn require(&mut self, group: ProgramGroup) -> Result<(), FaultError> {
        self.ensure(group).map_err(|p| {
            FaultError::kernel(
                "loading programs",
                anyhow::anyhow!("{} (fix: {})", p.reason, p.fix),
            )
        })
    }

    /// Probes every group (what `doctor` shows); each is tried once per process.
    pub fn ensure_all(&mut self) {
        for group in ProgramGroup::ALL {
            let _ = self.ensure(group);
        }
    }
}

/// Counter slots: one per active fault, zeroed when handed out.
pub struct CounterSlots {
    map: Mutex<PerCpuArray<MapData, FaultCounters>>,
    free: Mutex<BTreeSet<u32>>,
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
            map: Mutex::new(map),
            free: Mutex::new((0..MAX_FAULT_SLOTS).collect()),
            cpus,
        })
    }

    fn map(&self) -> MutexGuard<'_, PerCpuArray<MapData, FaultCounters>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn free(&self) -> MutexGuard<'_, BTreeSet<u32>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a free slot and zeroes it.
    pub fn allocate(&self) -> Result<u32, FaultError> {
        let slot = self
            .free()
            .pop_first()
            .ok_or_else(|| FaultError::Capacity {
                what: format!("all {MAX_FAULT_SLOTS} counter slots are in use"),
            })?;
        let zeroed = PerCpuValues::try_from(vec![FaultCounters::default(); self.cpus])
            .map_err(|e| FaultError::kernel("building per-CPU zeros", e))
            .and_then(|zeros| {
                self.map()
                    .set(slot, zeros, 0)
                    .map_err(|e| FaultError::kernel("zeroing a counter slot", e))
            });
        if let Err(e) = zeroed {
            self.release(slot);
            return Err(e);
        }
        Ok(slot)
    }

    pub fn release(&self, slot: u32) {
        self.free().insert(slot);
    }

    /// Sum over CPUs of a slot's counters.
    pub fn read(&self, slot: u32) -> Counters {
        let Ok(values) = self.map().get(&slot, 0) else {
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
    slots: Arc<CounterSlots>,
    slot: u32,
    kind: &'static str,
    remove: fn(&mut Kernel, u32) -> Result<(), FaultError>,
    reverted: bool,
}

impl SlotRuleFault {
    pub fn new(
        kernel: &Arc<Mutex<Kernel>>,
        slots: &Arc<CounterSlots>,
        slot: u32,
        kind: &'static str,
        remove: fn(&mut Kernel, u32) -> Result<(), FaultError>,
    ) -> Self {
        SlotRuleFault {
            kernel: Arc::clone(kernel),
            slots: Arc::clone(slots),
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
}

impl ActiveFault for SlotRuleFault {
    fn counters(&self) -> Counters {
        self.slots.read(self.slot)
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        if self.reverted {
            return Ok(());
        }
        self.reverted = true;
        let mut kernel = self.kernel.lock().unwrap_or_else(|e| e.into_inner());
        let result = (self.remove)(&mut kernel, self.slot);
        drop(kernel);
        self.slots.release(self.slot);
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

#[cfg(test)]
mod tests {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

    use super::EBPF_ELF;

    /// Each name the daemon uses, with the section it lives in according to the built object.
    fn symbol_sections() -> Vec<(String, String)> {
        let elf = object::File::parse(EBPF_ELF).expect("the built eBPF object parses");
        elf.symbols()
            .filter_map(|sym| {
                let name = sym.name().ok()?.to_string();
                let section = sym
                    .section_index()
                    .and_then(|i| elf.section_by_index(i).ok())?;
                Some((name, section.name().ok()?.to_string()))
            })
            .collect()
    }

    #[test]
    fn every_program_and_map_the_daemon_names_is_in_the_built_object() {
        let symbols = symbol_sections();
        let section_of = |name: &str| {
            symbols
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.as_str())
        };
        for (program, prefix) in chaosd_common::names::PROGRAMS {
            let section = section_of(program)
                .unwrap_or_else(|| panic!("program {program} is not in the eBPF object"));
            assert!(
                section.starts_with(prefix),
                "program {program} is in section {section}, expected {prefix}*"
            );
        }
        for map in chaosd_common::names::MAPS {
            assert_eq!(
                section_of(map),
                Some("maps"),
                "map {map} is not a map of the eBPF object"
            );
        }
    }

    #[test]
    fn every_program_of_the_object_is_named_in_common() {
        let symbols = symbol_sections();
        let known: Vec<&str> = chaosd_common::names::PROGRAMS
            .iter()
            .map(|(n, _)| *n)
            .collect();
        for (name, section) in &symbols {
            let is_program = ["cgroup", "tp_btf", "lsm", "classifier", "sockops"]
                .iter()
                .any(|p| section.starts_with(p));
            if is_program && name.starts_with("chaosd_") {
                assert!(
                    known.contains(&name.as_str()),
                    "program {name} ({section}) is missing from chaosd_common::names::PROGRAMS"
                );
            }
        }
    }
}
