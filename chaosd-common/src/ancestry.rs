//! The current task's cgroup v2 ancestry for tracing and LSM programs on kernels whose
//! `bpf_get_current_ancestor_cgroup_id` is not allowed there (before 5.14: it was for cgroup
//! programs only). The programs then read the ids from the task's `css_set` and its cgroup's
//! `ancestor_ids[]` (a member of kernels before 6.0) at offsets taken from the running kernel's
//! BTF and passed in as a global.

/// Name of the [`AncestryOffsets`] global.
pub const ANCESTRY_OFFSETS_GLOBAL: &str = "ANCESTRY_OFFSETS";

/// Byte offsets, from the running kernel's BTF, of the members leading from the current task to
/// its cgroup's ancestor ids: `task_struct.cgroups` → `css_set.dfl_cgrp` → `cgroup.level` and
/// `cgroup.ancestor_ids[]`. `walk == 0` (the compiled-in default) makes the programs call
/// `bpf_get_current_ancestor_cgroup_id`; the verifier knows the value (a read-only global), so
/// the path not taken is never checked against the kernel's helpers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AncestryOffsets {
    /// `task_struct.cgroups` (a `struct css_set *`).
    pub task_cgroups: u64,
    /// `css_set.dfl_cgrp` (the task's cgroup v2, a `struct cgroup *`).
    pub css_set_dfl_cgrp: u64,
    /// `cgroup.level` (an `int`: 0 is the root).
    pub cgroup_level: u64,
    /// `cgroup.ancestor_ids` (`u64[level + 1]`, index 0 the root's id).
    pub cgroup_ancestor_ids: u64,
    /// 1: walk the structs; 0: use the helper.
    pub walk: u64,
}

const _: () = assert!(core::mem::size_of::<AncestryOffsets>() == 40);

impl AncestryOffsets {
    /// The compiled-in value of the global: use the helper.
    pub const HELPER: AncestryOffsets = AncestryOffsets {
        task_cgroups: 0,
        css_set_dfl_cgrp: 0,
        cgroup_level: 0,
        cgroup_ancestor_ids: 0,
        walk: 0,
    };
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C) u64 fields.
    unsafe impl aya::Pod for super::AncestryOffsets {}
}
