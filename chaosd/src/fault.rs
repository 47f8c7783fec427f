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
    /// Undoes the fault. Called at most once; `Drop` does it when this was not called.
    fn revert(&mut self) -> Result<(), FaultError>;
}

/// What applying a fault needs besides its parameters.
pub struct ApplyContext<'a> {
    pub targets: &'a [ResolvedTarget],
    pub duration: Duration,
}

/// Dispatches requests to the fault kinds, which keep their kernel state in [`Kernel`].
#[derive(Clone)]
pub struct FaultKinds {
    pub kernel: Arc<Mutex<Kernel>>,
}

impl FaultKinds {
    /// Checks parameters without touching anything.
    pub fn validate(spec: &FaultSpec) -> Result<(), RequestError> {
        match spec {
            FaultSpec::NetLoss(p) => crate::net::loss::validate(p),
        }
    }

    /// Applies `spec` completely, or returns an error with nothing applied.
    pub fn apply(
        &self,
        spec: &FaultSpec,
        ctx: &ApplyContext<'_>,
    ) -> Result<Box<dyn ActiveFault>, FaultError> {
        match spec {
            FaultSpec::NetLoss(p) => crate::net::loss::apply(&self.kernel, p, ctx),
        }
    }
}
