//! The host as chaosd touches it, below the fault kinds: cgroups, errno names, directories.

pub mod cgroup;
pub mod directories;
pub mod errno;
