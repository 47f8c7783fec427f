//! chaosd: a per-cgroup host fault daemon built on eBPF, and the library its CLI shares.
//!
//! - [`api`]: wire types of the HTTP/JSON API on the Unix socket.
//! - [`registry`]: faults with deadlines, applied completely or not at all.
//! - [`kinds`]: the one list of fault kinds; [`fault`]: the trait the registry knows faults by.
//! - [`server`] and [`client`]: the two ends of the socket.

pub mod api;
pub mod audit;
pub mod capabilities;
pub mod cgroup;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod directories;
pub mod errno;
pub mod error;
pub mod fault;
pub mod guardian;
pub mod heartbeat;
pub mod io;
pub mod journal;
pub mod kernel;
pub mod kinds;
pub mod leftovers;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod process;
pub mod registry;
pub mod request;
pub mod rule_sets;
pub mod scenario;
pub mod server;
pub mod stress;
pub mod systemd;
