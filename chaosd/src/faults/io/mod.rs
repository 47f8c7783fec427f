//! File I/O error faults (`io.errno`), enforced per cgroup by the BPF LSM programs of
//! `chaosd-ebpf/src/io`.
//!
//! # Kernel requirements
//! `CONFIG_BPF_LSM=y` with `bpf` in the active LSM list (`/sys/kernel/security/lsm`), BTF
//! (`/sys/kernel/btf/vmlinux`: the hooks are found there and the programs get their struct
//! offsets from it), trampolines (BPF LSM programs are trampoline-based; some kernels and
//! hypervisor setups refuse them with EPERM), and no `lockdown=confidentiality`. Checked on
//! 5.10 (Debian 11, booted with `bpf` added to `lsm=`), 6.1 and 6.12. Before 5.14 the programs
//! read the task's cgroup ancestry through BTF offsets (`chaosd_common::ancestry`); before
//! 5.19 their links stay attached from the first fault until the daemon exits.
//!
//! The programs are loaded once when the daemon starts; that load is the probe the capability
//! table reports ([`crate::faults::capabilities`]). A host that refuses them still runs the daemon: only
//! `io.errno` is refused, with the reason. The programs are attached only while an I/O fault is
//! active, through links that close with the daemon.
//!
//! # Path scope
//! A rule with a path fails only operations on files at or below it: the program walks the
//! file's dentry `d_parent` chain (up to `MAX_PATH_DEPTH` levels) comparing inode number and
//! device with the path's, so files opened before the fault began are covered too. The walk
//! stays within one filesystem: files of another filesystem mounted below the path are not
//! covered. The path is resolved in chaosd's own mount namespace.

pub use chaosd_common::btf;
pub mod errno;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, OnceLock},
};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuHashMap, PerCpuValues},
    programs::{Lsm, ProgramError, lsm::LsmLink},
};
use chaosd_common::io::{
    IO_DAEMON_TGID_GLOBAL, IO_OFFSETS_GLOBAL, IO_OP_COUNTERS_MAP, IO_OPS, IO_RULES_MAP, IoOffsets,
    IoOpCounters, IoRule, IoRuleSet, MAX_IO_FAULTS, MAX_IO_RULES_PER_CGROUP,
};
use chaosd_common::{
    ancestry::{ANCESTRY_OFFSETS_GLOBAL, AncestryOffsets},
    names,
};

pub use crate::api::io::{IoErrnoParams, IoOp};
use crate::{
    api::OpCounters,
    error::FaultError,
    faults::capabilities::{self, Problem},
    faults::kernel::rule_sets::{RuleMap, TargetedRule, inherited_sets},
};

/// A program, the LSM hook it attaches to, the hook's argument count it was written for, and
/// whether it is required (optional hooks are skipped on kernels that lack them).
const PROGRAMS: &[(&str, &str, u32, bool)] = &[
    (names::IO_FILE_OPEN, "file_open", 1, true),
    (names::IO_FILE_PERMISSION, "file_permission", 2, true),
    (names::IO_INODE_CREATE, "inode_create", 3, true),
    (names::IO_INODE_UNLINK, "inode_unlink", 2, true),
    (names::IO_INODE_RENAME, "inode_rename", 4, true),
    (names::IO_INODE_MKDIR, "inode_mkdir", 3, true),
    (names::IO_INODE_RMDIR, "inode_rmdir", 2, true),
    (names::IO_PATH_TRUNCATE, "path_truncate", 1, false),
    (names::IO_FILE_TRUNCATE, "file_truncate", 1, false),
];

/// What the running kernel's BTF says, parsed once.
struct KernelIo {
    offsets: Result<IoOffsets, Problem>,
    /// Hooks present in this kernel with the argument count the programs expect; a problem for
    /// a required hook that is missing or changed.
    hooks: Result<Vec<(&'static str, &'static str)>, Problem>,
    /// How the LSM and exec-hook programs find the current task's cgroup ancestors.
    ancestry: AncestryOffsets,
}

fn kernel_io() -> &'static KernelIo {
    static KERNEL_IO: OnceLock<KernelIo> = OnceLock::new();
    KERNEL_IO.get_or_init(|| match btf::KernelBtf::from_sys_fs() {
        Err(e) => {
            let p = Problem::new(
                format!("cannot read the kernel's BTF: {e:#}"),
                "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
            );
            KernelIo {
                offsets: Err(p.clone()),
                hooks: Err(p),
                ancestry: AncestryOffsets::HELPER,
            }
        }
        Ok(b) => KernelIo {
            ancestry: ancestry_of(&b),
            offsets: b.io_offsets().map_err(|e| {
                Problem::new(
                    format!("the kernel's BTF lacks a struct member the I/O programs read: {e:#}"),
                    "report this kernel version to chaosd's maintainers",
                )
            }),
            hooks: hooks_of(&b),
        },
    })
}

/// Tracing and LSM programs may call `bpf_get_current_ancestor_cgroup_id` since 5.14; before,
/// they walk the task's structs (kernels before 6.0 have `cgroup.ancestor_ids`). If the walk's
/// members are missing too, the helper stays and loading says the kernel refused it.
fn ancestry_of(b: &btf::KernelBtf) -> AncestryOffsets {
    let old = aya::util::KernelVersion::current()
        .is_ok_and(|v| v < aya::util::KernelVersion::new(5, 14, 0));
    if !old {
        return AncestryOffsets::HELPER;
    }
    match b.ancestry_offsets() {
        Ok(o) => {
            tracing::info!(
                "kernel before 5.14: LSM and exec-hook programs read cgroup ancestors from task structs"
            );
            o
        }
        Err(e) => {
            tracing::warn!("kernel before 5.14 without the cgroup ancestry members: {e:#}");
            AncestryOffsets::HELPER
        }
    }
}

fn hooks_of(b: &btf::KernelBtf) -> Result<Vec<(&'static str, &'static str)>, Problem> {
    let mut out = Vec::new();
    for &(prog, hook, args, required) in PROGRAMS {
        match b.func_arg_count(&format!("bpf_lsm_{hook}")) {
            Some(n) if n == args => out.push((prog, hook)),
            None if !required => {}
            found => {
                return Err(Problem::new(
                    match found {
                        Some(n) => format!(
                            "LSM hook {hook} takes {n} arguments on this kernel; chaosd's program expects {args}"
                        ),
                        None => format!(
                            "this kernel has no BPF LSM hook {hook} (bpf_lsm_{hook} is not in its BTF; CONFIG_BPF_LSM off?)"
                        ),
                    },
                    "use a kernel with CONFIG_BPF_LSM=y whose hooks chaosd supports (5.10 to 6.18 are)",
                ));
            }
        }
    }
    Ok(out)
}

/// The running kernel's BTF as aya reads it. Parsed per call and not kept: parsed, it holds
/// about 16 MiB, and only the LSM and tp_btf loads need it, once each per process.
pub fn kernel_btf() -> Result<aya::Btf, String> {
    aya::Btf::from_sys_fs().map_err(|e| e.to_string())
}

/// Sets the I/O programs' globals (offsets from BTF, chaosd's tgid) on the object loader.
pub fn set_globals(loader: &mut EbpfLoader<'_>) {
    static TGID: OnceLock<u32> = OnceLock::new();
    static UNSET: IoOffsets = IoOffsets::UNSET;
    let offsets = kernel_io().offsets.as_ref().unwrap_or(&UNSET);
    loader.override_global(IO_OFFSETS_GLOBAL, offsets, true);
    loader.override_global(ANCESTRY_OFFSETS_GLOBAL, &kernel_io().ancestry, true);
    loader.override_global(
        IO_DAEMON_TGID_GLOBAL,
        TGID.get_or_init(std::process::id),
        true,
    );
}

/// Rules map, counters and attachment state of the I/O programs.
pub struct IoState {
    rules: RuleMap<IoRuleSet>,
    op_counters: OpCounterReader,
    /// Programs loaded (name, hook), or why I/O faults cannot run on this host.
    ready: Result<Vec<(&'static str, &'static str)>, Problem>,
    links: Option<Vec<LsmLink>>,
    faults: BTreeMap<u32, TargetedRule<IoRule>>,
    /// The links stay once made: see [`can_reattach`].
    keep_attached: bool,
    cpus: usize,
}

impl IoState {
    /// Takes the maps; the LSM programs load later ([`IoState::load`]).
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let rules = ebpf
            .take_map(IO_RULES_MAP)
            .context("eBPF object has no I/O rules map")?;
        let rules = HashMap::try_from(rules).context("I/O rules map has the wrong type")?;
        let op_counters = ebpf
            .take_map(IO_OP_COUNTERS_MAP)
            .context("eBPF object has no I/O op counters map")?;
        let op_counters = PerCpuHashMap::try_from(op_counters)
            .context("I/O op counters map has the wrong type")?;
        let op_counters = OpCounterReader(Arc::new(Mutex::new(op_counters)));
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        Ok(IoState {
            rules: RuleMap::new(rules, "writing I/O rules"),
            op_counters,
            ready: Err(Problem::new(
                "the I/O programs are not loaded yet",
                "inject an io.errno fault or run `chaosctl doctor`: either loads them",
            )),
            links: None,
            faults: BTreeMap::new(),
            cpus,
            keep_attached: !can_reattach(),
        })
    }

    pub fn attached(&self) -> bool {
        self.links.is_some()
    }

    /// Loads the LSM programs. A kernel that refuses them only disables io.errno: the reason
    /// is kept for the capability table.
    pub fn load(&mut self, ebpf: &mut Ebpf) -> Result<(), Problem> {
        self.ready = load_programs(ebpf);
        if let Ok(loaded) = &self.ready {
            tracing::info!(programs = loaded.len(), "I/O (BPF LSM) programs loaded");
        }
        self.ready.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// Why I/O faults cannot run here, if they cannot.
    pub fn unavailable(&self) -> Option<&Problem> {
        self.ready.as_ref().err()
    }

    /// Adds a fault's rule on its targets. On error nothing of it stays in the kernel.
    pub fn add_fault(
        &mut self,
        ebpf: &mut Ebpf,
        rule: IoRule,
        targets: Vec<(u64, String)>,
    ) -> Result<(), FaultError> {
        if let Err(p) = &self.ready {
            return Err(FaultError::kernel(
                "I/O faults are unavailable",
                anyhow::anyhow!("{} (fix: {})", p.reason, p.fix),
            ));
        }
        let slot = rule.counter_slot;
        let zeros = PerCpuValues::try_from(vec![IoOpCounters::default(); self.cpus])
            .map_err(|e| FaultError::kernel("building per-CPU zeros", e))?;
        self.op_counters
            .map()
            .insert(slot, zeros, 0)
            .map_err(|e| FaultError::kernel("creating I/O op counters", e))?;
        self.faults.insert(slot, TargetedRule { rule, targets });
        let result = self.attach(ebpf).and_then(|()| self.sync());
        if result.is_err() {
            self.faults.remove(&slot);
            if let Err(e) = self.sync() {
                tracing::error!("restoring I/O rules after a failed inject: {e}");
            }
            let _ = self.op_counters.map().remove(&slot);
            self.detach_if_idle();
        }
        result
    }

    /// Removes the fault counted in `slot`; detaches the programs when it was the last.
    pub fn remove_fault(&mut self, slot: u32) -> Result<(), FaultError> {
        self.faults.remove(&slot);
        let result = self.sync();
        self.detach_if_idle();
        let _ = self.op_counters.map().remove(&slot);
        result
    }

    /// A handle that reads per-operation counters without the kernel lock.
    pub fn op_counter_reader(&self) -> OpCounterReader {
        self.op_counters.clone()
    }
}

/// The per-operation counters map, shared so reading a fault's counters never waits for
/// kernel work.
#[derive(Clone)]
pub struct OpCounterReader(Arc<Mutex<PerCpuHashMap<MapData, u32, IoOpCounters>>>);

impl OpCounterReader {
    fn map(&self) -> std::sync::MutexGuard<'_, PerCpuHashMap<MapData, u32, IoOpCounters>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Per-operation counters of the fault in `slot`, for the operations it covers.
    pub fn read(&self, slot: u32, ops: &[IoOp]) -> Vec<OpCounters> {
        let sum = self
            .map()
            .get(&slot, 0)
            .map(|v| {
                v.iter().fold(IoOpCounters::default(), |mut acc, c| {
                    for i in 0..IO_OPS {
                        acc.checked[i] += c.checked[i];
                        acc.failed[i] += c.failed[i];
                    }
                    acc
                })
            })
            .unwrap_or_default();
        ops.iter()
            .map(|op| OpCounters {
                op: op.name().to_string(),
                checked: sum.checked[op.index() as usize],
                failed: sum.failed[op.index() as usize],
            })
            .collect()
    }
}

impl IoState {
    fn sync(&mut self) -> Result<(), FaultError> {
        if self.faults.len() > MAX_IO_FAULTS as usize {
            return Err(FaultError::Capacity {
                what: format!("at most {MAX_IO_FAULTS} I/O faults can be active"),
            });
        }
        let sets = inherited_sets::<_, MAX_IO_RULES_PER_CGROUP>(self.faults.values(), "I/O")?;
        self.rules.sync(
            sets.into_iter()
                .map(|(id, rules)| (id, IoRuleSet { rules }))
                .collect(),
        )
    }

    fn attach(&mut self, ebpf: &mut Ebpf) -> Result<(), FaultError> {
        if self.links.is_some() {
            return Ok(());
        }
        let loaded = self.ready.as_ref().map_err(|p| {
            FaultError::kernel(
                "I/O faults are unavailable",
                anyhow::anyhow!("{}", p.reason),
            )
        })?;
        let mut links = Vec::new();
        for (name, _) in loaded {
            let prog = lsm_program(ebpf, name)
                .map_err(|e| FaultError::kernel("finding an I/O program", e))?;
            let id = prog
                .attach()
                .map_err(|e| FaultError::kernel("attaching an I/O (LSM) program", e))?;
            links.push(
                prog.take_link(id)
                    .map_err(|e| FaultError::kernel("taking an I/O program link", e))?,
            );
        }
        self.links = Some(links);
        tracing::info!("I/O programs attached");
        Ok(())
    }

    fn detach_if_idle(&mut self) {
        if !self.faults.is_empty() || self.links.is_none() {
            return;
        }
        if self.keep_attached {
            tracing::info!(
                "I/O programs stay attached with no rule (they let everything pass): this kernel cannot attach a trampoline program again once detached (5.19+)"
            );
            return;
        }
        self.links = None;
        tracing::info!("I/O programs detached: no I/O fault is active");
    }
}

/// Whether a loaded LSM program can be attached again after its link closed. Before 5.19 the
/// kernel forgets a trampoline program's target at its first attach (a second one fails with
/// ENOENT), so there the links stay until the daemon exits: with no rules the programs only
/// look up their map and let every operation through.
fn can_reattach() -> bool {
    aya::util::KernelVersion::current()
        .map_or(true, |v| v >= aya::util::KernelVersion::new(5, 19, 0))
}

fn lsm_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Lsm> {
    let prog = ebpf
        .program_mut(name)
        .with_context(|| format!("eBPF object has no program {name}"))?;
    prog.try_into()
        .with_context(|| format!("program {name} is not an LSM program"))
}

/// Loads every I/O program this kernel has a hook for, or says why it cannot.
fn load_programs(ebpf: &mut Ebpf) -> Result<Vec<(&'static str, &'static str)>, Problem> {
    let facts = capabilities::Facts::gather();
    if let Some(p) = facts.bpf_lsm_static_problem() {
        return Err(p);
    }
    let kio = kernel_io();
    kio.offsets.as_ref().map_err(Clone::clone)?;
    let hooks = kio.hooks.clone()?;
    let btf = kernel_btf().map_err(|e| {
        Problem::new(
            format!("cannot read the kernel's BTF: {e}"),
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        )
    })?;
    for (name, hook) in &hooks {
        let prog = lsm_program(ebpf, name)
            .map_err(|e| Problem::new(format!("{e:#}"), "rebuild chaosd"))?;
        if let Err(e) = prog.load(hook, &btf) {
            return Err(load_problem(name, hook, e));
        }
    }
    Ok(hooks)
}

fn load_problem(name: &str, hook: &str, e: ProgramError) -> Problem {
    if let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = &e
    {
        if io_error.raw_os_error() == Some(libc::EPERM) {
            return Problem::new(
                format!(
                    "BPF LSM programs are refused by this kernel: loading {name} (hook {hook}) failed with EPERM after the verifier accepted it; trampoline-based programs (LSM, fentry) are not allowed here"
                ),
                "run chaosd on a kernel that allows BPF LSM programs (CONFIG_BPF_LSM=y, `bpf` in lsm=, BPF trampolines usable: e.g. a stock Debian 6.1 or 6.12 kernel); nothing on this host's command line changes that",
            );
        }
        let log = verifier_log.to_string();
        let tail: Vec<&str> = log.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Problem::new(
            format!(
                "the kernel rejected the I/O program {name} (hook {hook}): {io_error}; verifier: {}",
                tail.join(" | ")
            ),
            "report this kernel version and the daemon log to chaosd's maintainers",
        );
    }
    Problem::new(
        format!("loading the I/O program {name} (hook {hook}): {e}"),
        "check that chaosd runs as root with CAP_BPF and CAP_SYS_ADMIN",
    )
}
