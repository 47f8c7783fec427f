//! Faults with deadlines, applied completely or not at all: the registry, the journal a
//! crashed instance leaves, the policy, metrics. No HTTP here (that is `daemon::http`).

pub mod journal;
pub mod metrics;
pub mod policy;
pub mod registry;
pub mod request;
