//! Network faults, enforced per cgroup by the cgroup_skb programs of `chaosd-ebpf/src/net`.
//!
//! # Kernel requirements
//! cgroup v2 mounted, `CONFIG_CGROUP_BPF`, `bpf_link` for cgroups (5.7+; older kernels fall back
//! to `BPF_PROG_ATTACH`). The programs attach to the cgroup2 root with `BPF_F_ALLOW_MULTI` only
//! while a network fault is active, through links that close with the daemon: if chaosd dies,
//! every network fault ends with it. A socket belongs to the cgroup of the process that created
//! it, so processes moved into a target after creating a socket keep that socket unaffected.

pub mod loss;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    path::PathBuf,
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap, MapData},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, cgroup_skb::CgroupSkbLink},
};
use chaosd_common::net::{MAX_RULES_PER_CGROUP, NET_RULES_MAP, NetRule, NetRuleSet};

use crate::{cgroup::is_same_or_ancestor, error::FaultError};

const EGRESS_PROGRAM: &str = "chaosd_net_egress";
const INGRESS_PROGRAM: &str = "chaosd_net_ingress";

/// Rules map and attachment state of the network programs.
pub struct NetState {
    rules: HashMap<MapData, u64, NetRuleSet>,
    /// Links of the egress and ingress programs on the cgroup2 root, while any rule exists.
    links: Option<[CgroupSkbLink; 2]>,
    cgroup2_root: PathBuf,
    /// Active network faults by counter slot: the source of truth the map is computed from.
    faults: BTreeMap<u32, NetFaultRules>,
    /// Cgroup ids that have an entry in the map now.
    written: BTreeSet<u64>,
}

/// One fault's rule and the cgroups (id, path) it targets.
struct NetFaultRules {
    rule: NetRule,
    targets: Vec<(u64, String)>,
}

impl NetState {
    /// Takes the rules map and loads (verifies) both programs.
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let rules = ebpf
            .take_map(NET_RULES_MAP)
            .context("eBPF object has no net rules map")?;
        let rules = HashMap::try_from(rules).context("net rules map has the wrong type")?;
        for name in [EGRESS_PROGRAM, INGRESS_PROGRAM] {
            program(ebpf, name)?
                .load()
                .with_context(|| format!("loading program {name}"))?;
        }
        let cgroup2_root = crate::cgroup::cgroup2_mount()?;
        Ok(NetState {
            rules,
            links: None,
            cgroup2_root,
            faults: BTreeMap::new(),
            written: BTreeSet::new(),
        })
    }

    pub fn attached(&self) -> bool {
        self.links.is_some()
    }

    /// Adds a fault's rule on its targets. On error nothing of it stays in the kernel.
    pub fn add_fault(
        &mut self,
        ebpf: &mut Ebpf,
        rule: NetRule,
        targets: Vec<(u64, String)>,
    ) -> Result<(), FaultError> {
        let slot = rule.counter_slot;
        self.faults.insert(slot, NetFaultRules { rule, targets });
        let result = self.attach(ebpf).and_then(|()| self.sync());
        if result.is_err() {
            self.faults.remove(&slot);
            if let Err(e) = self.sync() {
                tracing::error!("restoring net rules after a failed inject: {e}");
            }
            self.detach_if_idle();
        }
        result
    }

    /// Removes the fault counted in `slot`; detaches the programs when it was the last.
    pub fn remove_fault(&mut self, slot: u32) -> Result<(), FaultError> {
        self.faults.remove(&slot);
        let result = self.sync();
        self.detach_if_idle();
        result
    }

    /// Rewrites the map from `faults`: each targeted cgroup gets the rules of every fault that
    /// targets it or one of its ancestors. Checks capacity before writing anything.
    fn sync(&mut self) -> Result<(), FaultError> {
        let desired = self.desired_sets()?;
        for (id, set) in &desired {
            self.rules
                .insert(id, set, 0)
                .map_err(|e| FaultError::kernel("writing net rules", e))?;
        }
        for id in self.written.iter().filter(|id| !desired.contains_key(id)) {
            match self.rules.remove(id) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(FaultError::kernel("removing net rules", e)),
            }
        }
        self.written = desired.into_keys().collect();
        Ok(())
    }

    fn desired_sets(&self) -> Result<BTreeMap<u64, NetRuleSet>, FaultError> {
        let targeted: BTreeMap<u64, &str> = self
            .faults
            .values()
            .flat_map(|f| f.targets.iter().map(|(id, p)| (*id, p.as_str())))
            .collect();
        let mut sets = BTreeMap::new();
        for (id, path) in targeted {
            let inherited = self
                .faults
                .values()
                .filter(|f| f.targets.iter().any(|(_, t)| is_same_or_ancestor(t, path)))
                .map(|f| f.rule);
            let mut set = NetRuleSet::default();
            for (n, rule) in inherited.enumerate() {
                let slot = set.rules.get_mut(n).ok_or_else(|| FaultError::Capacity {
                    what: format!(
                        "cgroup {path} would carry more than {MAX_RULES_PER_CGROUP} network faults"
                    ),
                })?;
                *slot = rule;
            }
            sets.insert(id, set);
        }
        Ok(sets)
    }

    /// Attaches both programs to the cgroup2 root unless they already are.
    fn attach(&mut self, ebpf: &mut Ebpf) -> Result<(), FaultError> {
        if self.links.is_some() {
            return Ok(());
        }
        let root = File::open(&self.cgroup2_root)
            .map_err(|e| FaultError::kernel("opening the cgroup2 root", e))?;
        let egress = attach_one(ebpf, EGRESS_PROGRAM, &root, CgroupSkbAttachType::Egress)?;
        let ingress = attach_one(ebpf, INGRESS_PROGRAM, &root, CgroupSkbAttachType::Ingress)?;
        self.links = Some([egress, ingress]);
        tracing::info!(root = %self.cgroup2_root.display(), "network programs attached");
        Ok(())
    }

    fn detach_if_idle(&mut self) {
        if self.faults.is_empty() && self.links.take().is_some() {
            tracing::info!("network programs detached: no network fault is active");
        }
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut CgroupSkb> {
    let prog = ebpf
        .program_mut(name)
        .with_context(|| format!("eBPF object has no program {name}"))?;
    prog.try_into()
        .with_context(|| format!("program {name} is not cgroup_skb"))
}

fn attach_one(
    ebpf: &mut Ebpf,
    name: &'static str,
    root: &File,
    attach_type: CgroupSkbAttachType,
) -> Result<CgroupSkbLink, FaultError> {
    let prog =
        program(ebpf, name).map_err(|e| FaultError::kernel("finding a network program", e))?;
    // A bpf_link on a cgroup always coexists with other programs (multi-attach) and the kernel
    // rejects explicit flags for it; `Single` passes none.
    let id = prog
        .attach(root, attach_type, CgroupAttachMode::Single)
        .map_err(|e| FaultError::kernel("attaching a network program to the cgroup2 root", e))?;
    prog.take_link(id)
        .map_err(|e| FaultError::kernel("taking a network program link", e))
}
