//! The one trait the registry knows faults by, and the dispatch from a request to a kind.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    api::{Counters, FaultSpec, ResolvedTarget},
    error::{FaultError, RequestError},
    kernel::Kernel,
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
    /// Undoes the fault. Called at most once; `Drop` does it when this was not called.
    fn revert(&mut self) -> Result<(), FaultError>;
}

/// What applying a fault needs besides its parameters.
pub struct ApplyContext<'a> {
    /// The id the registry gave the fault (for names the fault leaves on the host).
    pub fault_id: &'a str,
    pub targets: &'a [ResolvedTarget],
    pub duration: Duration,
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
        crate::kernel::monotonic_ns().saturating_add(self.duration.as_nanos() as u64)
    }
}

/// Dispatches requests to the fault kinds, which keep their kernel state in [`Kernel`].
#[derive(Clone)]
pub struct FaultKinds {
    pub kernel: Arc<Mutex<Kernel>>,
    /// The `[stress]` config: disk free-space floor.
    pub stress: crate::stress::StressConfig,
}

impl FaultKinds {
    /// Whether `spec`'s kind needs, accepts or refuses targets.
    pub fn target_rule(spec: &FaultSpec) -> TargetRule {
        match spec {
            FaultSpec::StressCpu(_) | FaultSpec::StressMem(_) | FaultSpec::DiskIo(_) => {
                TargetRule::Optional
            }
            FaultSpec::DiskFill(_) => TargetRule::Forbidden,
            _ => TargetRule::Required,
        }
    }

    /// Whether `spec` is one-shot: it acts when applied and ends at once (as `completed`), so
    /// it holds no concurrent-fault slot and arms no deadline timer. The kind decides.
    pub fn one_shot(spec: &FaultSpec) -> bool {
        match spec {
            FaultSpec::ProcessKill(p) => crate::process::kill::is_one_shot(p),
            _ => false,
        }
    }

    /// Checks parameters without touching anything.
    pub fn validate(spec: &FaultSpec) -> Result<(), RequestError> {
        match spec {
            FaultSpec::NetLoss(p) => crate::net::loss::validate(p),
            FaultSpec::IoErrno(p) => crate::io::errno::validate(p),
            FaultSpec::NetPartition(p) => crate::net::partition::validate(p),
            FaultSpec::NetConnectError(p) => crate::net::connect_error::validate(p),
            FaultSpec::NetDelay(p) => crate::net::delay::validate(p),
            FaultSpec::NetBandwidth(p) => crate::net::bandwidth::validate(p),
            FaultSpec::NetCorrupt(p) => crate::net::corrupt::validate(p),
            FaultSpec::NetDuplicate(p) => crate::net::duplicate::validate(p),
            FaultSpec::StressCpu(p) => crate::stress::cpu::validate(p),
            FaultSpec::StressMem(p) => crate::stress::mem::validate(p),
            FaultSpec::DiskFill(p) => crate::stress::disk::validate_fill(p),
            FaultSpec::DiskIo(p) => crate::stress::disk::validate_io(p),
            FaultSpec::ProcessKill(p) => crate::process::kill::validate(p),
            FaultSpec::ProcessPause(_) => Ok(()),
            FaultSpec::ClockSkew(p) => crate::clock::params::validate(p),
        }
    }

    /// Refuses kinds this kernel cannot run, with the reason.
    pub fn check_available(&self, spec: &FaultSpec) -> Result<(), RequestError> {
        crate::capabilities::require(spec.kind())
    }

    /// Applies `spec` completely, or returns an error with nothing applied.
    pub fn apply(
        &self,
        spec: &FaultSpec,
        ctx: &ApplyContext<'_>,
    ) -> Result<Box<dyn ActiveFault>, FaultError> {
        match spec {
            FaultSpec::NetLoss(p) => crate::net::loss::apply(&self.kernel, p, ctx),
            FaultSpec::IoErrno(p) => crate::io::errno::apply(&self.kernel, p, ctx),
            FaultSpec::NetPartition(p) => crate::net::partition::apply(&self.kernel, p, ctx),
            FaultSpec::NetConnectError(p) => crate::net::connect_error::apply(&self.kernel, p, ctx),
            FaultSpec::NetDelay(p) => crate::net::delay::apply(&self.kernel, p, ctx),
            FaultSpec::NetBandwidth(p) => crate::net::bandwidth::apply(&self.kernel, p, ctx),
            FaultSpec::NetCorrupt(p) => crate::net::corrupt::apply(&self.kernel, p, ctx),
            FaultSpec::NetDuplicate(p) => crate::net::duplicate::apply(&self.kernel, p, ctx),
            FaultSpec::StressCpu(p) => crate::stress::cpu::apply(p, ctx),
            FaultSpec::StressMem(p) => crate::stress::mem::apply(p, ctx),
            FaultSpec::DiskFill(p) => crate::stress::disk::apply_fill(&self.stress, p, ctx),
            FaultSpec::DiskIo(p) => crate::stress::disk::apply_io(&self.stress, p, ctx),
            FaultSpec::ProcessKill(p) => crate::process::kill::apply(p, ctx),
            FaultSpec::ProcessPause(_) => crate::process::pause::apply(ctx),
            FaultSpec::ClockSkew(p) => crate::clock::apply(&self.kernel, p, ctx),
        }
    }
}
