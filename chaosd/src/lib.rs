//! chaosd: a per-cgroup host fault daemon built on eBPF, and the library its CLI shares.
//!
//! The top-level modules are layers; each uses only the ones listed before it (a test in
//! `tests/layers.rs` checks it):
//! - [`error`], [`api`] (wire types, serde only), [`config`], [`client`] (chaosctl's end);
//! - [`host`]: cgroups, units, directories: the host as chaosd touches it;
//! - [`faults`]: the fault kinds (one module each, one descriptor list), the eBPF object they
//!   share and the capability checks;
//! - [`engine`]: faults with deadlines (registry, journal, policy, metrics), no HTTP;
//! - [`scenario`]: scenario files, runs and their reports;
//! - [`daemon`]: the process: HTTP routes, audit, systemd, leftovers of a dead instance.

pub mod error;

pub mod api;
pub mod config;

pub mod client;

pub mod host;

pub mod faults;

pub mod engine;

pub mod scenario;

pub mod daemon;
