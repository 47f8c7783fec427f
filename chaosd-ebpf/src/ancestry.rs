//! The current task's cgroup v2 ancestors, for tracing and LSM programs.
//!
//! `bpf_get_current_ancestor_cgroup_id` is allowed in those programs since 5.14. On older
//! kernels the loader sets [`ANCESTRY_OFFSETS`] (`walk = 1`, offsets from BTF) and the ids are
//! read from the task's structs instead. The global is read-only, so the verifier knows which
//! path runs and never checks the other against this kernel's helpers.

use aya_ebpf::helpers::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_task, bpf_probe_read_kernel,
};
use chaosd_common::ancestry::AncestryOffsets;

#[unsafe(no_mangle)]
static ANCESTRY_OFFSETS: AncestryOffsets = AncestryOffsets::HELPER;

/// Where the ancestor ids come from for this run of a program.
pub enum Ancestry {
    Helper,
    /// The task's `struct cgroup *` and its level, read through the offsets.
    Walk {
        cgroup: u64,
        level: u32,
        ids: u64,
    },
    /// The walk could not read the task's cgroup: no ancestor matches (fail open).
    Unknown,
}

impl Ancestry {
    #[inline(always)]
    pub fn current() -> Ancestry {
        // SAFETY: a global in .rodata, set by the loader.
        let o = unsafe { core::ptr::read_volatile(&ANCESTRY_OFFSETS) };
        if o.walk == 0 {
            return Ancestry::Helper;
        }
        // SAFETY: plain helper call; the address is only passed to bpf_probe_read_kernel.
        let task = unsafe { bpf_get_current_task() };
        let walked = read_kernel::<u64>(task, o.task_cgroups)
            .and_then(|css_set| read_kernel::<u64>(css_set, o.css_set_dfl_cgrp))
            .and_then(|cgroup| Some((cgroup, read_kernel::<i32>(cgroup, o.cgroup_level)?)));
        match walked {
            Some((cgroup, level)) if level >= 0 => Ancestry::Walk {
                cgroup,
                level: level as u32,
                ids: o.cgroup_ancestor_ids,
            },
            _ => Ancestry::Unknown,
        }
    }

    /// The id of the ancestor at `level` (the root is 0); 0 below the task's own cgroup, as the
    /// helper says.
    #[inline(always)]
    pub fn id_at(&self, level: u32) -> u64 {
        match *self {
            // SAFETY: the helper only reads the current task's cgroup.
            Ancestry::Helper => unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) },
            Ancestry::Walk {
                cgroup,
                level: own,
                ids,
            } if level <= own => {
                read_kernel::<u64>(cgroup, ids + 8 * u64::from(level)).unwrap_or(0)
            }
            Ancestry::Walk { .. } | Ancestry::Unknown => 0,
        }
    }
}

/// Reads a `T` at `base + offset` of kernel memory; None for a null base or a failed read.
#[inline(always)]
fn read_kernel<T>(base: u64, offset: u64) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly on a bad one.
    unsafe { bpf_probe_read_kernel((base.wrapping_add(offset)) as *const T) }.ok()
}
