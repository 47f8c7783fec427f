//! The host as chaosd touches it, below the fault kinds: cgroups, directories, process identity.

pub mod cgroup;
pub mod directories;
pub mod memory;
pub mod proc;
