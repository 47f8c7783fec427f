//! BPF LSM programs that fail file operations of target cgroups with a chosen errno.
//!
//! Each hook finds the deepest cgroup of the current task's ancestry with a rule set in
//! `IO_RULES` (the daemon copies ancestors' rules into targeted descendants), then checks at
//! most [`MAX_IO_RULES_PER_CGROUP`] rules: operation, deadline, path (by walking the dentry's
//! `d_parent` chain and comparing inode number and device with the rule's), probability.
//!
//! Return values: the verifier must prove an LSM program returns a value in [-4095, 0] (6.12),
//! so the errno is stored negative as i64 and range-checked right before the return. A non-zero
//! return of an earlier LSM program is passed through untouched. No logging in here: loops stay
//! cheap for the verifier.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::{lsm, map},
    maps::{HashMap, PerCpuHashMap},
    programs::LsmContext,
};
use chaosd_common::{
    io::{
        FileOp, IO_OPS, IO_PPM_ONE, IoOffsets, IoOpCounters, IoRuleSet, MAX_IO_CGROUPS,
        MAX_IO_FAULTS, MAX_IO_RULES_PER_CGROUP, MAX_PATH_DEPTH,
    },
    net::MAX_CGROUP_LEVEL,
};

use crate::counters;

#[map]
static IO_RULES: HashMap<u64, IoRuleSet> = HashMap::with_max_entries(MAX_IO_CGROUPS, 0);

#[map]
static IO_OP_COUNTERS: PerCpuHashMap<u32, IoOpCounters> =
    PerCpuHashMap::with_max_entries(MAX_IO_FAULTS, 0);

/// Set by the daemon from the running kernel's BTF before loading.
#[unsafe(no_mangle)]
static IO_OFFSETS: IoOffsets = IoOffsets::UNSET;

/// chaosd's own tgid: its file operations never fail.
#[unsafe(no_mangle)]
static IO_DAEMON_TGID: u32 = 0;

/// `MAY_WRITE`, `MAY_READ`, `MAY_APPEND` of `file_permission`'s mask.
const MAY_WRITE: i32 = 2;
const MAY_READ: i32 = 4;
const MAY_APPEND: i32 = 8;

#[lsm(hook = "file_open")]
pub fn chaosd_io_file_open(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return retval;
    }
    let file: u64 = ctx.arg(0);
    decide(FileOp::Open, file_dentry(file))
}

#[lsm(hook = "file_permission")]
pub fn chaosd_io_file_permission(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(2);
    if retval != 0 {
        return retval;
    }
    let mask: i32 = ctx.arg(1);
    let op = if mask & (MAY_WRITE | MAY_APPEND) != 0 {
        FileOp::Write
    } else if mask & MAY_READ != 0 {
        FileOp::Read
    } else {
        return 0;
    };
    let file: u64 = ctx.arg(0);
    decide(op, file_dentry(file))
}

#[lsm(hook = "inode_create")]
pub fn chaosd_io_inode_create(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return retval;
    }
    decide(FileOp::Create, ctx.arg(1))
}

#[lsm(hook = "inode_unlink")]
pub fn chaosd_io_inode_unlink(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(2);
    if retval != 0 {
        return retval;
    }
    decide(FileOp::Unlink, ctx.arg(1))
}

#[lsm(hook = "inode_rename")]
pub fn chaosd_io_inode_rename(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(4);
    if retval != 0 {
        return retval;
    }
    decide(FileOp::Rename, ctx.arg(1))
}

#[lsm(hook = "inode_mkdir")]
pub fn chaosd_io_inode_mkdir(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return retval;
    }
    decide(FileOp::Mkdir, ctx.arg(1))
}

#[lsm(hook = "inode_rmdir")]
pub fn chaosd_io_inode_rmdir(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(2);
    if retval != 0 {
        return retval;
    }
    decide(FileOp::Rmdir, ctx.arg(1))
}

/// truncate(2), and ftruncate(2) / open(O_TRUNC) before 6.2.
#[lsm(hook = "path_truncate")]
pub fn chaosd_io_path_truncate(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return retval;
    }
    let path: u64 = ctx.arg(0);
    let offsets = offsets();
    let dentry = read_u64(path.wrapping_add(offsets.path_dentry));
    decide(FileOp::Truncate, dentry)
}

/// ftruncate(2) and open(O_TRUNC) since 6.2 (loaded only where the hook exists).
#[lsm(hook = "file_truncate")]
pub fn chaosd_io_file_truncate(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return retval;
    }
    let file: u64 = ctx.arg(0);
    decide(FileOp::Truncate, file_dentry(file))
}

#[inline(always)]
fn offsets() -> IoOffsets {
    // SAFETY: a global in .rodata, set by the loader.
    unsafe { core::ptr::read_volatile(&IO_OFFSETS) }
}

#[inline(always)]
fn read_u64(addr: u64) -> u64 {
    if addr == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly on a bad one.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0)
}

#[inline(always)]
fn read_u32(addr: u64) -> u32 {
    if addr == 0 {
        return 0;
    }
    // SAFETY: as in read_u64.
    unsafe { bpf_probe_read_kernel(addr as *const u32) }.unwrap_or(0)
}

#[inline(always)]
fn file_dentry(file: u64) -> u64 {
    if file == 0 {
        return 0;
    }
    read_u64(file.wrapping_add(offsets().file_dentry))
}

/// Whether `dentry` is the inode `ino` on device `dev`, or lies below it (same filesystem).
#[inline(never)]
fn under(dentry: u64, dev: u64, ino: u64) -> bool {
    let o = offsets();
    if o.valid == 0 || dentry == 0 {
        return false;
    }
    let sb = read_u64(dentry.wrapping_add(o.dentry_sb));
    if u64::from(read_u32(sb.wrapping_add(o.sb_dev))) != dev {
        return false;
    }
    let mut d = dentry;
    let mut level = 0;
    while level < MAX_PATH_DEPTH {
        let inode = read_u64(d.wrapping_add(o.dentry_inode));
        if inode != 0 && read_u64(inode.wrapping_add(o.inode_ino)) == ino {
            return true;
        }
        let parent = read_u64(d.wrapping_add(o.dentry_parent));
        if parent == 0 || parent == d {
            return false;
        }
        d = parent;
        level += 1;
    }
    false
}

/// The hook's verdict for operation `op` on `dentry`: 0 or a negative errno in [-4095, -1].
#[inline(always)]
fn decide(op: FileOp, dentry: u64) -> i32 {
    let op = op.code();
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a global in .rodata, set by the loader.
    if tgid == unsafe { core::ptr::read_volatile(&IO_DAEMON_TGID) } {
        return 0;
    }
    let Some(set) = deepest_rule_set() else {
        return 0;
    };
    let v = apply_rules(set, op, dentry);
    if v >= -4095 && v <= 0 { v as i32 } else { 0 }
}

#[inline(always)]
fn deepest_rule_set() -> Option<&'static IoRuleSet> {
    if !crate::heartbeat::daemon_alive() {
        return None;
    }
    let ancestry = crate::ancestry::Ancestry::current();
    let mut found: Option<&IoRuleSet> = None;
    let mut level = 1;
    while level <= MAX_CGROUP_LEVEL {
        let id = ancestry.id_at(level);
        if id == 0 {
            break;
        }
        // SAFETY: map values are only read here; the daemon replaces whole values.
        if let Some(set) = unsafe { IO_RULES.get(&id) } {
            found = Some(set);
        }
        level += 1;
    }
    found
}

#[inline(never)]
fn apply_rules(set: &IoRuleSet, op: u32, dentry: u64) -> i64 {
    let now = unsafe { bpf_ktime_get_ns() };
    let bit = 1u32 << (op & 31);
    let mut result: i64 = 0;
    let mut i = 0;
    while i < MAX_IO_RULES_PER_CGROUP {
        let rule = &set.rules[i];
        i += 1;
        if rule.ops & bit == 0 || now >= rule.deadline_ns {
            continue;
        }
        if rule.path_ino != 0 && !under(dentry, rule.path_dev, rule.path_ino) {
            continue;
        }
        let hit = unsafe { bpf_get_prandom_u32() } % IO_PPM_ONE < rule.probability_ppm;
        counters::count(rule.counter_slot, hit);
        count_op(rule.counter_slot, op, hit);
        if hit && result == 0 {
            result = rule.neg_errno;
        }
    }
    result
}

#[inline(always)]
fn count_op(slot: u32, op: u32, failed: bool) {
    let idx = op as usize;
    if idx >= IO_OPS {
        return;
    }
    if let Some(c) = IO_OP_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU while the program runs.
        unsafe {
            (*c).checked[idx] += 1;
            if failed {
                (*c).failed[idx] += 1;
            }
        }
    }
}
