//! The one trait the registry knows faults by, and the dispatch from a request to its kind's
//! entry in [`crate::faults::kinds::KINDS`].

pub mod capabilities;
pub mod clock;
pub mod dns;
pub mod http;
pub mod io;
pub mod kernel;
pub mod kinds;
pub mod net;
pub mod process;
pub mod resource;
pub mod stress;
pub mod tcp;

use std::{
    sync::{Arc, Mutex, atomic::AtomicBool},
    time::Duration,
};

use crate::{
    api::{Counters, FaultSpec, ResolvedTarget},
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
};

/// A fault that is in force. Dropping it reverts it too, so no path leaves one behind.
pub trait ActiveFault: Send {
    /// What the fault has seen and done so far.
    fn counters(&self) -> Counters;
    /// Per-operation counters, for kinds that have them.
    fn op_counters(&self) -> Vec<crate::api::OpCounters> {
        Vec::new()
    }
    /// The network namespaces the fault acts in, for kinds that act on devices.
    fn netns(&self) -> Vec<crate::api::NetnsUsed> {
        Vec::new()
    }
    /// The cgroup knobs the fault wrote, for kinds that write some.
    fn knobs(&self) -> Vec<crate::api::KnobChange> {
        Vec::new()
    }
    /// The process limits the fault lowered, for kinds that lower some.
    fn limits(&self) -> Vec<crate::api::LimitChange> {
        Vec::new()
    }
    /// Undoes the fault. Called at most once; `Drop` does it when this was not called.
    fn revert(&mut self) -> Result<(), FaultError>;
    /// Someone else (the guardian, while the daemon was stalled) already reverted the host
    /// state: release the fault's own handles (children to reap, fds, map entries) without
    /// touching the host again. Kinds whose revert only releases their own handles keep this
    /// default; a kind whose revert changes shared host state (a cgroup's freeze) must not.
    fn release(&mut self) -> Result<(), FaultError> {
        self.revert()
    }
}

/// What applying a fault needs besides its parameters.
pub struct ApplyContext<'a> {
    /// The id the registry gave the fault (for names the fault leaves on the host).
    pub fault_id: &'a str,
    pub targets: &'a [ResolvedTarget],
    pub duration: Duration,
    /// Journals the knobs a kind is about to write (all of them so far, each time), before
    /// it writes them: whoever ends the fault after a crash learns what to put back.
    pub journal_knobs: &'a dyn Fn(&[crate::api::KnobChange]) -> Result<(), FaultError>,
    /// The same for the process limits a kind is about to lower (`fd.limit`).
    pub journal_limits: &'a dyn Fn(&[crate::api::LimitChange]) -> Result<(), FaultError>,
}

/// Whether a kind needs targets, may go without, or takes none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetRule {
    /// At least one target (most kinds: they act on a cgroup).
    Required,
    /// Without targets the kind runs in a cgroup of chaosd's own (stress workers).
    Optional,
    /// Targets are refused: the kind works on a path (`disk.fill`).
    Forbidden,
}

/// The families whose kinds may target the whole host (`--host`): what they do to each
/// cgroup is bounded by a filter or a rate, and they end with chaosd. Pausing, killing,
/// failing I/O or starving the whole host is left to naming cgroups.
pub const HOST_WIDE_FAMILIES: &[&str] = &["net", "tcp", "http", "dns", "clock", "stress"];

/// Whether the kind named `kind` ("net.loss") accepts a host-wide target.
pub fn allows_host(kind: &str) -> bool {
    kind.split_once('.')
        .is_some_and(|(family, _)| HOST_WIDE_FAMILIES.contains(&family))
}

impl ApplyContext<'_> {
    /// (cgroup id, path) of each target, as the kernel rule sets take them.
    pub fn cgroup_targets(&self) -> Vec<(u64, String)> {
        self.targets
            .iter()
            .map(|t| (t.cgroup_id, t.cgroup.clone()))
            .collect()
    }

    /// The fault's deadline on the clock the programs read (`bpf_ktime_get_ns`).
    pub fn deadline_ns(&self) -> u64 {
        crate::faults::kernel::monotonic_ns().saturating_add(self.duration.as_nanos() as u64)
    }
}

/// Dispatches requests to the fault kinds, which keep their kernel state in [`Kernel`].
#[derive(Clone)]
pub struct FaultKinds {
    pub kernel: Arc<Mutex<Kernel>>,
    /// Whether network programs are attached, readable without the kernel lock.
    pub net_attached: Arc<AtomicBool>,
    /// The `[stress]` config: disk free-space floor.
    pub stress: crate::faults::stress::StressConfig,
}

impl FaultKinds {
    /// Whether `spec`'s kind needs, accepts or refuses targets.
    pub fn target_rule(spec: &FaultSpec) -> TargetRule {
        crate::faults::kinds::of(spec).targets
    }

    /// Whether `spec` is one-shot: it acts when applied and ends at once (as `completed`), so
    /// it holds no concurrent-fault slot and arms no deadline timer. The kind decides.
    pub fn one_shot(spec: &FaultSpec) -> bool {
        (crate::faults::kinds::of(spec).one_shot)(spec)
    }

    /// Checks parameters without touching anything.
    pub fn validate(spec: &FaultSpec) -> Result<(), RequestError> {
        (crate::faults::kinds::of(spec).validate)(spec)
    }

    /// Loads the programs `spec`'s kind needs unless that was tried before (blocking: call it
    /// off the async runtime). What the load found is the kind's probe.
    pub fn prepare(&self, spec: &FaultSpec) {
        if let Some(group) = crate::faults::kinds::of(spec).programs {
            self.probe(group);
        }
    }

    /// Loads one program group unless that was tried before; blocking.
    pub fn probe(&self, group: crate::faults::kernel::ProgramGroup) {
        // Already tried: no need to wait for the kernel lock (another inject may hold it).
        if crate::faults::capabilities::probe_result(group.probe_name()).is_none() {
            let _ = self.lock_kernel().ensure(group);
        }
    }

    /// Loads the program group of the kind named `kind`, if it has one; blocking. An unknown
    /// name loads nothing.
    pub fn probe_kind(&self, kind: &str) {
        let group = crate::faults::kinds::KINDS
            .iter()
            .find(|k| k.name == kind)
            .and_then(|k| k.programs);
        if let Some(group) = group {
            self.probe(group);
        }
    }

    /// Loads every program group once (what `doctor` shows); blocking.
    pub fn probe_all(&self) {
        self.lock_kernel().ensure_all();
    }

    fn lock_kernel(&self) -> std::sync::MutexGuard<'_, Kernel> {
        self.kernel.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses kinds this kernel cannot run, with the reason. Call [`FaultKinds::prepare`]
    /// first: a kind whose programs were never loaded counts as unsupported.
    pub fn check_available(&self, spec: &FaultSpec) -> Result<(), RequestError> {
        crate::faults::capabilities::require(spec.kind())
    }

    /// Applies `spec` completely, or returns an error with nothing applied.
    pub fn apply(
        &self,
        spec: &FaultSpec,
        ctx: &ApplyContext<'_>,
    ) -> Result<Box<dyn ActiveFault>, FaultError> {
        (crate::faults::kinds::of(spec).apply)(self, spec, ctx)
    }
}
