//! File I/O error rules, looked up by cgroup id from the BPF LSM programs.
//!
//! Like network rules: a targeted cgroup maps to one [`IoRuleSet`] of up to
//! [`MAX_IO_RULES_PER_CGROUP`] rules from different faults, and the daemon copies an ancestor's
//! rules into the sets of targeted descendants, so the program uses the deepest set it finds in
//! the task's cgroup ancestry.
//!
//! Kernel struct offsets (`file`, `dentry`, `inode`, `super_block`) are not stable across
//! kernels and Rust eBPF has no CO-RE: the daemon reads them from the running kernel's BTF and
//! hands them to the programs in the [`IoOffsets`] global before loading.

/// Name of the `HashMap<u64, IoRuleSet>` map, keyed by cgroup v2 id.
pub const IO_RULES_MAP: &str = "IO_RULES";
/// Name of the per-CPU `HashMap<u32, IoOpCounters>` map, keyed by a fault's counter slot.
pub const IO_OP_COUNTERS_MAP: &str = "IO_OP_COUNTERS";
/// Name of the [`IoOffsets`] global.
pub const IO_OFFSETS_GLOBAL: &str = "IO_OFFSETS";
/// Name of the `u32` global holding chaosd's own tgid, which the programs never fail.
pub const IO_DAEMON_TGID_GLOBAL: &str = "IO_DAEMON_TGID";

/// Cgroups that can carry I/O rules at once.
pub const MAX_IO_CGROUPS: u32 = 4096;
/// I/O faults that can stack on one cgroup.
pub const MAX_IO_RULES_PER_CGROUP: usize = 8;
/// I/O faults that can be active at once (entries of the per-op counters map).
pub const MAX_IO_FAULTS: u32 = 1024;
/// Directory levels the programs walk up from a file looking for a rule's path.
pub const MAX_PATH_DEPTH: u32 = 32;

/// A file operation the LSM programs can fail. Its code ([`FileOp::code`]) indexes
/// [`IoOpCounters`] and is the bit (`1 << code`) of [`IoRule::ops`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileOp {
    Open = 0,
    Read = 1,
    Write = 2,
    Create = 3,
    Unlink = 4,
    Rename = 5,
    Mkdir = 6,
    Rmdir = 7,
    Truncate = 8,
}

impl FileOp {
    pub const ALL: [FileOp; IO_OPS] = [
        FileOp::Open,
        FileOp::Read,
        FileOp::Write,
        FileOp::Create,
        FileOp::Unlink,
        FileOp::Rename,
        FileOp::Mkdir,
        FileOp::Rmdir,
        FileOp::Truncate,
    ];

    pub const fn code(self) -> u32 {
        self as u32
    }
}

/// Number of operations.
pub const IO_OPS: usize = 9;

/// Probabilities are parts per million: 1 % is 10_000.
pub const IO_PPM_ONE: u32 = 1_000_000;

/// One fault's rule on one cgroup. `ops == 0` marks an empty slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoRule {
    /// CLOCK_MONOTONIC ns after which the programs ignore the rule.
    pub deadline_ns: u64,
    /// The **negative** errno the operation fails with, in [-4095, -1]. Kept as i64 so the
    /// verifier can prove the program's return value is in [-4095, 0] (see kernel.md).
    pub neg_errno: i64,
    /// Kernel `dev_t` (`super_block.s_dev`, major << 20 | minor) of the path's filesystem.
    pub path_dev: u64,
    /// Inode number of the path (a directory: everything below it; or a file); 0 = any path.
    pub path_ino: u64,
    /// Index into the fault counters map (and key of the per-op counters map).
    pub counter_slot: u32,
    /// `1 << FileOp::code` bits of the operations that fail.
    pub ops: u32,
    /// Chance in parts per million that a matching operation fails.
    pub probability_ppm: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<IoRule>() == 48);

/// All I/O rules on one cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoRuleSet {
    pub rules: [IoRule; MAX_IO_RULES_PER_CGROUP],
}

const _: () = assert!(core::mem::size_of::<IoRuleSet>() == 48 * MAX_IO_RULES_PER_CGROUP);

/// Per-operation counters of one fault: operations that matched, and those failed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoOpCounters {
    pub checked: [u64; IO_OPS],
    pub failed: [u64; IO_OPS],
}

const _: () = assert!(core::mem::size_of::<IoOpCounters>() == 16 * IO_OPS);

/// Byte offsets of the kernel struct members the programs read, from the running kernel's BTF.
/// `valid == 0` (the compiled-in default) makes the programs ignore every path filter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoOffsets {
    /// `file.f_path` + `path.dentry`.
    pub file_dentry: u64,
    /// `dentry.d_parent`.
    pub dentry_parent: u64,
    /// `dentry.d_inode`.
    pub dentry_inode: u64,
    /// `dentry.d_sb`.
    pub dentry_sb: u64,
    /// `inode.i_ino`.
    pub inode_ino: u64,
    /// `super_block.s_dev`.
    pub sb_dev: u64,
    /// `path.dentry` (for hooks that get a `struct path *`).
    pub path_dentry: u64,
    pub valid: u64,
}

const _: () = assert!(core::mem::size_of::<IoOffsets>() == 64);

impl IoOffsets {
    /// The compiled-in value of the global: no offsets known, path filters never match.
    pub const UNSET: IoOffsets = IoOffsets {
        file_dentry: 0,
        dentry_parent: 0,
        dentry_inode: 0,
        dentry_sb: 0,
        inode_ino: 0,
        sb_dev: 0,
        path_dentry: 0,
        valid: 0,
    };
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C) plain integers with no implicit padding (sizes asserted above).
    unsafe impl aya::Pod for super::IoRule {}
    // SAFETY: an array of Pod rules.
    unsafe impl aya::Pod for super::IoRuleSet {}
    // SAFETY: repr(C) arrays of u64.
    unsafe impl aya::Pod for super::IoOpCounters {}
    // SAFETY: repr(C) u64 fields.
    unsafe impl aya::Pod for super::IoOffsets {}
}

#[cfg(test)]
mod op_tests {
    use super::{FileOp, IO_OPS};

    #[test]
    fn codes_index_the_counters_in_order() {
        for (i, op) in FileOp::ALL.into_iter().enumerate() {
            assert_eq!(op.code() as usize, i);
        }
        assert_eq!(FileOp::ALL.len(), IO_OPS);
    }
}
