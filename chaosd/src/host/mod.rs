//! The host as chaosd touches it, below the fault kinds: cgroups, directories.

pub mod cgroup;
pub mod directories;
