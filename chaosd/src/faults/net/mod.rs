//! Network faults, enforced per cgroup by the programs of `chaosd-ebpf/src/net`.
//!
//! Every network fault is one [`NetRule`] written into the sets of its target cgroups: packet
//! drops (`loss`, `partition`) are enforced by cgroup_skb programs, connect errors by cgroup
//! sock_addr programs. Each group of programs is attached to the cgroup2 root only while a
//! fault needs it, through links that close with the daemon: if chaosd dies, every network
//! fault ends with it.
//!
//! # Kernel requirements
//! cgroup v2 mounted, `CONFIG_CGROUP_BPF`, `bpf_link` for cgroups (5.7+). Connect errors need
//! `bpf_set_retval` (5.19+). A socket belongs to the cgroup of the process that created it, so
//! a process moved into a target after creating a socket keeps that socket unaffected.

pub mod bandwidth;
pub mod connect_error;
pub mod corrupt;
pub mod delay;
pub mod departure;
pub mod duplicate;
pub mod filter;
pub mod loss;
pub mod netns;
pub mod partition;
pub mod qdisc;
pub mod tc;

use std::{
    collections::BTreeMap,
    fs::File,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, SockOps,
        cgroup_skb::CgroupSkbLink, cgroup_sock_addr::CgroupSockAddrLink, sock_ops::SockOpsLink,
    },
};
use chaosd_common::names;
use chaosd_common::net::{
    MAX_CGROUP_LEVEL, MAX_RULES_PER_CGROUP, NET_LEVELS_MAP, NET_PACING_MAP, NET_RULES_MAP, NetKind,
    NetRule, NetRuleSet, PPM_ONE,
};

use crate::{
    error::{FaultError, RequestError},
    faults::capabilities::Problem,
    faults::kernel::rule_sets::{RuleMap, TargetIndex, TargetedRule},
    faults::kernel::{Kernel, ProgramGroup, SlotRuleFault},
    faults::{ActiveFault, ApplyContext},
};

const SKB_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    (names::NET_EGRESS, CgroupSkbAttachType::Egress),
    (names::NET_INGRESS, CgroupSkbAttachType::Ingress),
];
/// Rule kinds the packet programs enforce.
const SKB_KINDS: [NetKind; 3] = [NetKind::Drop, NetKind::Delay, NetKind::Bandwidth];
const SOCK_ADDR_PROGRAMS: [&str; 4] = [
    names::CONNECT4,
    names::CONNECT6,
    names::SENDMSG4,
    names::SENDMSG6,
];
/// The same hooks without `bpf_set_retval`, for kernels before 5.19: EPERM only.
const SOCK_ADDR_EPERM_PROGRAMS: [&str; 4] = [
    names::CONNECT4_EPERM,
    names::CONNECT6_EPERM,
    names::SENDMSG4_EPERM,
    names::SENDMSG6_EPERM,
];
/// The proxy's sock_addr programs (`tcp.*`): redirect, and answer getpeername.
const PROXY_SOCK_ADDR_PROGRAMS: [&str; 4] = [
    names::PROXY_CONNECT4,
    names::PROXY_GETPEERNAME4,
    names::PROXY_CONNECT6,
    names::PROXY_GETPEERNAME6,
];
/// The DNS faults' extra sock_addr programs (`dns.*`): redirect unconnected UDP, show the
/// resolver's answers as from the original server.
const DNS_SOCK_ADDR_PROGRAMS: [&str; 4] = [
    names::DNS_SENDMSG4,
    names::DNS_SENDMSG6,
    names::DNS_RECVMSG4,
    names::DNS_RECVMSG6,
];
/// `-EPERM`: the only errno a sock_addr program can give without `bpf_set_retval`.
const MINUS_EPERM: i32 = -1;

/// Which connect programs this kernel loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnectPrograms {
    /// [`SOCK_ADDR_PROGRAMS`]: any errno (`bpf_set_retval`, 5.19+).
    AnyErrno,
    /// [`SOCK_ADDR_EPERM_PROGRAMS`]: EPERM only.
    EpermOnly,
}

impl ConnectPrograms {
    fn names(self) -> [&'static str; 4] {
        match self {
            ConnectPrograms::AnyErrno => SOCK_ADDR_PROGRAMS,
            ConnectPrograms::EpermOnly => SOCK_ADDR_EPERM_PROGRAMS,
        }
    }
}

/// The line of a load error that says why (the verifier's `unknown func ...`), not its whole
/// log: it goes into API errors and `doctor`.
fn verifier_gist(error: &str) -> String {
    let line = error
        .lines()
        .find(|l| l.contains("unknown func"))
        .or_else(|| error.lines().next())
        .unwrap_or_default()
        .trim();
    line.chars().take(200).collect()
}

/// What connect errors lack on a kernel without `bpf_set_retval`, and the fix.
pub fn eperm_only_limit(set_retval_error: &str) -> Problem {
    Problem::new(
        format!(
            "this kernel has no bpf_set_retval (Linux 5.19+), so a refused connect or send can only fail with EPERM: errno EPERM works, other errnos are refused (the kernel refused the programs that set one: {set_retval_error})"
        ),
        "ask for errno EPERM, or run a kernel 5.19 or newer for any errno",
    )
}

/// Rules map and attachment state of the network programs.
pub struct NetState {
    rules: RuleMap<NetRuleSet>,
    /// The ancestry levels that hold a rule set, as the programs read them, and as last written.
    levels: Array<MapData, u32>,
    levels_written: u32,
    /// Bandwidth faults' pacing clocks by counter slot: a reused slot starts from zero.
    pacing: Array<MapData, u64>,
    skb_links: Vec<CgroupSkbLink>,
    sock_addr_links: Vec<CgroupSockAddrLink>,
    /// The proxy's links (`tcp.*`): connect4 and getpeername4, and sock_ops.
    proxy_links: Vec<CgroupSockAddrLink>,
    sock_ops_link: Option<SockOpsLink>,
    /// The DNS faults' sendmsg/recvmsg links (`dns.*`), on top of the proxy's.
    dns_links: Vec<CgroupSockAddrLink>,
    /// The connect programs loaded (None: not yet, or refused).
    connect: Option<ConnectPrograms>,
    attached: Arc<AtomicBool>,
    cgroup2_root: PathBuf,
    /// Active network faults by counter slot: the source of truth the map is computed from.
    faults: BTreeMap<u32, TargetedRule<NetRule>>,
    /// `faults`' targets, kept with it (see [`NetState::insert_fault`]).
    index: TargetIndex<u32>,
    /// `faults` by kind, kept with it: which programs must be attached.
    tally: KindTally,
    /// sch_fq on the devices delayed or paced cgroups send through.
    pub fq: qdisc::FqLeases,
    /// The TC classifier on the devices corrupted or duplicated cgroups send through.
    pub tc: tc::TcAttachments,
}

impl NetState {
    /// Takes the rules map; no program is loaded yet (see [`crate::faults::kernel::ProgramGroup`]).
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let rules = ebpf
            .take_map(NET_RULES_MAP)
            .context("eBPF object has no net rules map")?;
        let rules = HashMap::try_from(rules).context("net rules map has the wrong type")?;
        let pacing = ebpf
            .take_map(NET_PACING_MAP)
            .context("eBPF object has no pacing map")?;
        let pacing = Array::try_from(pacing).context("pacing map has the wrong type")?;
        let levels = ebpf
            .take_map(NET_LEVELS_MAP)
            .context("eBPF object has no net levels map")?;
        let levels = Array::try_from(levels).context("net levels map has the wrong type")?;
        let cgroup2_root = crate::host::cgroup::cgroup2_mount()?;
        Ok(NetState {
            rules: RuleMap::new(rules, "writing net rules"),
            levels,
            levels_written: 0,
            pacing,
            skb_links: Vec::new(),
            sock_addr_links: Vec::new(),
            proxy_links: Vec::new(),
            sock_ops_link: None,
            dns_links: Vec::new(),
            connect: None,
            attached: Arc::default(),
            cgroup2_root,
            faults: BTreeMap::new(),
            index: TargetIndex::default(),
            tally: KindTally::default(),
            fq: qdisc::FqLeases::default(),
            tc: tc::TcAttachments::default(),
        })
    }

    /// Loads (verifies) the packet programs.
    pub fn load_packet_programs(&mut self, ebpf: &mut Ebpf) -> Result<(), Problem> {
        for (name, _) in SKB_PROGRAMS {
            skb_program(ebpf, name)
                .and_then(|p| Ok(p.load()?))
                .map_err(|e| {
                    Problem::new(
                        format!("loading the packet program {name} (cgroup_skb) failed: {e:#}"),
                        "packet faults need cgroup_skb programs with bpf_link (CONFIG_CGROUP_BPF, kernel 5.7 or newer)",
                    )
                })?;
        }
        Ok(())
    }

    /// Loads (verifies) the connect programs: those calling `bpf_set_retval` (5.19+), else the
    /// EPERM-only ones, recording that limit for the capability table.
    pub fn load_connect_programs(&mut self, ebpf: &mut Ebpf) -> Result<(), Problem> {
        let any = match load_sock_addr_programs(ebpf, &SOCK_ADDR_PROGRAMS) {
            Ok(()) => {
                self.connect = Some(ConnectPrograms::AnyErrno);
                return Ok(());
            }
            Err(e) => verifier_gist(&format!("{e:#}")),
        };
        match load_sock_addr_programs(ebpf, &SOCK_ADDR_EPERM_PROGRAMS) {
            Ok(()) => {
                self.connect = Some(ConnectPrograms::EpermOnly);
                crate::faults::capabilities::record_limit(
                    crate::faults::capabilities::PROBE_CONNECT_ERROR,
                    eperm_only_limit(&any),
                );
                Ok(())
            }
            Err(e) => Err(Problem::new(
                format!(
                    "loading the connect programs failed: with bpf_set_retval: {any}; EPERM only: {e:#}"
                ),
                "connect errors need cgroup sock_addr programs with bpf_link (CONFIG_CGROUP_BPF, kernel 5.7 or newer)",
            )),
        }
    }

    /// Loads (verifies) the proxy's programs; refuses where chaosd cannot tell its own network
    /// namespace from others (no SO_NETNS_COOKIE, before 5.14).
    pub fn load_proxy_programs(&mut self, ebpf: &mut Ebpf) -> Result<(), Problem> {
        const FIX: &str = "proxy faults need cgroup sock_addr connect4/getpeername4 and sock_ops programs with bpf_link and bpf_get_current_pid_tgid in sock_addr programs (Linux 6.1 or newer)";
        if crate::faults::tcp::netns_cookie().is_none() {
            return Err(Problem::new(
                "this kernel has no SO_NETNS_COOKIE (Linux 5.14+): chaosd cannot tell which network namespaces it listens in, so it cannot keep the redirect to them",
                FIX,
            ));
        }
        let loaded = load_sock_addr_programs(ebpf, &PROXY_SOCK_ADDR_PROGRAMS).and_then(|()| {
            sock_ops_program(ebpf)?
                .load()
                .context("loading program chaosd_proxy_sock_ops")
        });
        loaded.map_err(|e| {
            Problem::new(
                format!(
                    "loading the proxy programs failed: {}",
                    verifier_gist(&format!("{e:#}"))
                ),
                FIX,
            )
        })
    }

    /// Loads (verifies) the DNS faults' sendmsg4/6 and recvmsg4/6 programs (the proxy's are
    /// loaded first, see [`Kernel::ensure`]); refuses where the resolver cannot find a UDP
    /// query's socket (no NETLINK_SOCK_DIAG for UDP).
    pub fn load_dns_programs(&mut self, ebpf: &mut Ebpf) -> Result<(), Problem> {
        const FIX: &str = "dns faults need the proxy's programs, cgroup sendmsg4/6 and recvmsg4/6 programs and NETLINK_SOCK_DIAG for UDP (CONFIG_INET_UDP_DIAG); Linux 6.1 or newer";
        load_sock_addr_programs(ebpf, &DNS_SOCK_ADDR_PROGRAMS).map_err(|e| {
            Problem::new(
                format!(
                    "loading the dns programs failed: {}",
                    verifier_gist(&format!("{e:#}"))
                ),
                FIX,
            )
        })?;
        crate::faults::dns::probe_udp_diag().map_err(|e| {
            Problem::new(
                format!("NETLINK_SOCK_DIAG cannot look up UDP sockets here: {e}"),
                FIX,
            )
        })
    }

    /// Refuses a connect error this kernel's programs cannot give (an errno other than EPERM
    /// without `bpf_set_retval`).
    fn check_connect_retval(&self, retval: i32) -> Result<(), FaultError> {
        if self.connect != Some(ConnectPrograms::EpermOnly) || retval == MINUS_EPERM {
            return Ok(());
        }
        let limit =
            crate::faults::capabilities::limit(crate::faults::capabilities::PROBE_CONNECT_ERROR)
                .unwrap_or_else(|| eperm_only_limit("see chaosctl doctor"));
        Err(FaultError::Refused(RequestError::Unsupported {
            kind: "net.connect_error".into(),
            reason: format!("errno {} cannot be given: {}", -retval, limit.reason),
            fix: limit.fix,
        }))
    }

    /// Set while any network program is attached; read without the kernel lock (status).
    pub fn attached_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.attached)
    }

    /// The directory of a cgroup given relative to the cgroup2 mount ("/a/b").
    pub fn cgroup_dir(&self, rel: &str) -> PathBuf {
        self.cgroup2_root.join(rel.trim_start_matches('/'))
    }

    pub fn attached(&self) -> bool {
        !self.skb_links.is_empty()
            || !self.sock_addr_links.is_empty()
            || !self.proxy_links.is_empty()
            || !self.dns_links.is_empty()
    }

    fn publish_attached(&self) {
        self.attached.store(self.attached(), Ordering::Relaxed);
    }

    /// Adds a fault's rule on its targets. On error nothing of it stays in the kernel.
    pub(crate) fn add_fault(
        &mut self,
        ebpf: &mut Ebpf,
        rule: NetRule,
        targets: Vec<(u64, String)>,
    ) -> Result<(), FaultError> {
        let slot = rule.counter_slot;
        if rule.kind == NetKind::Bandwidth.code() {
            // A previous fault's clock in this slot may lie far ahead: start afresh.
            self.pacing
                .set(slot, 0, 0)
                .map_err(|e| FaultError::kernel("resetting the pacing clock", e))?;
        }
        let changed = targets.clone();
        self.insert_fault(slot, TargetedRule { rule, targets });
        let result = self
            .reconcile_links(ebpf)
            .and_then(|()| self.sync(&changed));
        if result.is_err() {
            self.take_fault(slot);
            if let Err(e) = self.sync(&changed) {
                tracing::error!("restoring net rules after a failed inject: {e}");
            }
            let _ = self.reconcile_links(ebpf);
        }
        result
    }

    /// Removes the fault counted in `slot`; detaches programs no fault needs any more.
    pub(crate) fn remove_fault(&mut self, ebpf: &mut Ebpf, slot: u32) -> Result<(), FaultError> {
        let result = match self.take_fault(slot) {
            Some(gone) => self.sync(&gone.targets),
            None => Ok(()),
        };
        self.reconcile_links(ebpf).and(result)
    }

    /// Adds a fault to `faults` and to what is kept with it.
    fn insert_fault(&mut self, slot: u32, fault: TargetedRule<NetRule>) {
        // A slot is never given out twice; should it be, the old fault goes first, so the
        // index never forgets the new one's entries under the same key.
        self.take_fault(slot);
        self.index.insert(slot, &fault.targets);
        self.tally.count(&fault.rule, true);
        self.faults.insert(slot, fault);
    }

    fn take_fault(&mut self, slot: u32) -> Option<TargetedRule<NetRule>> {
        let gone = self.faults.remove(&slot)?;
        self.index.remove(slot, &gone.targets);
        self.tally.count(&gone.rule, false);
        Some(gone)
    }

    /// Rewrites the sets a change of a fault on `changed` can alter (its targets and the
    /// targeted cgroups below them), checking capacity before writing anything.
    /// The levels are widened before the sets are written and narrowed after, so a program
    /// never skips a level that holds a set.
    fn sync(&mut self, changed: &[(u64, String)]) -> Result<(), FaultError> {
        let affected = self.index.affected_by(changed);
        let faults = &self.faults;
        let sets = self.index.sets::<_, MAX_RULES_PER_CGROUP>(
            affected.iter().map(|(id, path)| (*id, path.as_str())),
            |slot| faults[&slot].rule,
            "network",
        )?;
        let levels = target_levels(self.index.depths());
        self.write_levels(self.levels_written | levels)?;
        self.rules.sync_only(
            &affected.into_keys().collect(),
            sets.into_iter()
                .map(|(id, rules)| (id, NetRuleSet { rules }))
                .collect(),
        )?;
        self.write_levels(levels)
    }

    fn write_levels(&mut self, levels: u32) -> Result<(), FaultError> {
        if levels != self.levels_written {
            self.levels
                .set(0, levels, 0)
                .map_err(|e| FaultError::kernel("writing net rule levels", e))?;
            self.levels_written = levels;
        }
        Ok(())
    }

    /// Attaches each program group while some fault needs it, detaches it otherwise.
    fn reconcile_links(&mut self, ebpf: &mut Ebpf) -> Result<(), FaultError> {
        let needs = |kinds: &[NetKind]| kinds.iter().any(|k| self.tally.has(*k));
        let need_skb = needs(&SKB_KINDS);
        let need_sock = needs(&[NetKind::ConnectError]);
        if need_skb && self.skb_links.is_empty() {
            let root = self.open_root()?;
            for (name, attach_type) in SKB_PROGRAMS {
                let link = attach_skb(ebpf, name, &root, attach_type)?;
                self.skb_links.push(link);
            }
            tracing::info!(root = %self.cgroup2_root.display(), "packet programs attached");
        } else if !need_skb && !self.skb_links.is_empty() {
            self.skb_links.clear();
            tracing::info!("packet programs detached: no packet fault is active");
        }
        if need_sock && self.sock_addr_links.is_empty() {
            let root = self.open_root()?;
            let programs = self.connect.unwrap_or(ConnectPrograms::AnyErrno);
            for name in programs.names() {
                let link = attach_sock_addr(ebpf, name, &root)?;
                self.sock_addr_links.push(link);
            }
            tracing::info!(root = %self.cgroup2_root.display(), "connect programs attached");
        } else if !need_sock && !self.sock_addr_links.is_empty() {
            self.sock_addr_links.clear();
            tracing::info!("connect programs detached: no connect fault is active");
        }
        self.reconcile_proxy_links(ebpf, needs(&[NetKind::Proxy]))?;
        self.reconcile_dns_links(ebpf, self.tally.dns > 0)?;
        self.publish_attached();
        Ok(())
    }

    /// Attaches the proxy's programs while a proxy fault needs them.
    fn reconcile_proxy_links(&mut self, ebpf: &mut Ebpf, need: bool) -> Result<(), FaultError> {
        if need && self.proxy_links.is_empty() {
            let root = self.open_root()?;
            // sock_ops first: a redirected socket must find it when it sends its SYN.
            self.sock_ops_link = Some(attach_sock_ops(ebpf, &root)?);
            for name in PROXY_SOCK_ADDR_PROGRAMS {
                let link = attach_sock_addr(ebpf, name, &root)?;
                self.proxy_links.push(link);
            }
            tracing::info!(root = %self.cgroup2_root.display(), "proxy programs attached");
        } else if !need && !self.proxy_links.is_empty() {
            // The redirect first, the records last.
            self.proxy_links.clear();
            self.sock_ops_link = None;
            tracing::info!("proxy programs detached: no proxy fault is active");
        }
        Ok(())
    }

    /// Attaches the DNS faults' sendmsg/recvmsg programs while a DNS fault needs them (the
    /// proxy's connect programs are attached by then: a DNS rule is a proxy rule).
    fn reconcile_dns_links(&mut self, ebpf: &mut Ebpf, need: bool) -> Result<(), FaultError> {
        if need && self.dns_links.is_empty() {
            let root = self.open_root()?;
            for name in DNS_SOCK_ADDR_PROGRAMS {
                let link = attach_sock_addr(ebpf, name, &root)?;
                self.dns_links.push(link);
            }
            tracing::info!(root = %self.cgroup2_root.display(), "dns programs attached");
        } else if !need && !self.dns_links.is_empty() {
            self.dns_links.clear();
            tracing::info!("dns programs detached: no dns fault is active");
        }
        Ok(())
    }

    fn open_root(&self) -> Result<File, FaultError> {
        File::open(&self.cgroup2_root)
            .map_err(|e| FaultError::kernel("opening the cgroup2 root", e))
    }
}

fn skb_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut CgroupSkb> {
    let prog = ebpf
        .program_mut(name)
        .with_context(|| format!("eBPF object has no program {name}"))?;
    prog.try_into()
        .with_context(|| format!("program {name} is not cgroup_skb"))
}

fn sock_addr_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut CgroupSockAddr> {
    let prog = ebpf
        .program_mut(name)
        .with_context(|| format!("eBPF object has no program {name}"))?;
    prog.try_into()
        .with_context(|| format!("program {name} is not cgroup sock_addr"))
}

fn sock_ops_program(ebpf: &mut Ebpf) -> anyhow::Result<&mut SockOps> {
    let name = names::PROXY_SOCK_OPS;
    let prog = ebpf
        .program_mut(name)
        .with_context(|| format!("eBPF object has no program {name}"))?;
    prog.try_into()
        .with_context(|| format!("program {name} is not sock_ops"))
}

fn attach_sock_ops(ebpf: &mut Ebpf, root: &File) -> Result<SockOpsLink, FaultError> {
    let prog = sock_ops_program(ebpf)
        .map_err(|e| FaultError::kernel("finding the sock_ops program", e))?;
    let id = prog
        .attach(root, CgroupAttachMode::Single)
        .map_err(|e| FaultError::kernel("attaching the sock_ops program to the cgroup2 root", e))?;
    prog.take_link(id)
        .map_err(|e| FaultError::kernel("taking the sock_ops program link", e))
}

/// Sets the proxy programs' global: chaosd's tgid (its own connects are never redirected).
pub fn set_proxy_globals(loader: &mut aya::EbpfLoader<'_>) {
    static TGID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    loader.override_global(
        chaosd_common::proxy::PROXY_DAEMON_TGID_GLOBAL,
        TGID.get_or_init(std::process::id),
        true,
    );
}

fn load_sock_addr_programs(ebpf: &mut Ebpf, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        sock_addr_program(ebpf, name)?
            .load()
            .with_context(|| format!("loading program {name}"))?;
    }
    Ok(())
}

// A bpf_link on a cgroup always coexists with other programs (multi-attach) and the kernel
// rejects explicit flags for it; `Single` passes none.

fn attach_skb(
    ebpf: &mut Ebpf,
    name: &str,
    root: &File,
    attach_type: CgroupSkbAttachType,
) -> Result<CgroupSkbLink, FaultError> {
    let prog =
        skb_program(ebpf, name).map_err(|e| FaultError::kernel("finding a packet program", e))?;
    let id = prog
        .attach(root, attach_type, CgroupAttachMode::Single)
        .map_err(|e| FaultError::kernel("attaching a packet program to the cgroup2 root", e))?;
    prog.take_link(id)
        .map_err(|e| FaultError::kernel("taking a packet program link", e))
}

fn attach_sock_addr(
    ebpf: &mut Ebpf,
    name: &str,
    root: &File,
) -> Result<CgroupSockAddrLink, FaultError> {
    let prog = sock_addr_program(ebpf, name)
        .map_err(|e| FaultError::kernel("finding a connect program", e))?;
    let id = prog
        .attach(root, CgroupAttachMode::Single)
        .map_err(|e| FaultError::kernel("attaching a connect program to the cgroup2 root", e))?;
    prog.take_link(id)
        .map_err(|e| FaultError::kernel("taking a connect program link", e))
}

/// The programs that enforce rules of `kind`.
fn program_group(kind: u32) -> ProgramGroup {
    match NetKind::from_code(kind) {
        Some(NetKind::ConnectError) => ProgramGroup::Connect,
        Some(NetKind::Corrupt | NetKind::Duplicate) => ProgramGroup::Classifier,
        Some(NetKind::Proxy) => ProgramGroup::Proxy,
        _ => ProgramGroup::Packet,
    }
}

/// Bit L for each ancestry level L that holds a target (`/a/b` is level 2), as `NET_LEVELS`
/// holds them.
fn target_levels(depths: impl Iterator<Item = usize>) -> u32 {
    depths
        .filter_map(|depth| u32::try_from(depth).ok())
        .filter(|level| (1..=MAX_CGROUP_LEVEL).contains(level))
        .fold(0, |bits, level| bits | 1 << level)
}

/// How many active faults there are of each kind, and of DNS proxy rules.
#[derive(Default)]
struct KindTally {
    by_kind: BTreeMap<u32, usize>,
    dns: usize,
}

impl KindTally {
    /// Counts `rule` in (`added`) or out.
    fn count(&mut self, rule: &NetRule, added: bool) {
        let n = self.by_kind.entry(rule.kind).or_default();
        let dns = rule.kind == NetKind::Proxy.code()
            && rule.flags & chaosd_common::proxy::PROXY_FLAG_DNS != 0;
        if added {
            *n += 1;
            self.dns += usize::from(dns);
        } else {
            *n = n.saturating_sub(1);
            self.dns = self.dns.saturating_sub(usize::from(dns));
        }
    }

    fn has(&self, kind: NetKind) -> bool {
        self.by_kind.get(&kind.code()).is_some_and(|&n| n > 0)
    }
}

/// Parts per million, at least 1 so a tiny percentage still means "some".
pub(crate) fn percent_to_ppm(percent: f64) -> u32 {
    ((percent * 10_000.0).round() as u32).clamp(1, PPM_ONE)
}

/// Writes `rule` (its deadline and counter slot filled in here) for the targets in `ctx`, or
/// nothing at all, and returns the fault that owns it.
pub(crate) fn apply_rule(
    kernel: &Arc<Mutex<Kernel>>,
    mut rule: NetRule,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let mut guard = kernel.lock().unwrap_or_else(|e| e.into_inner());
    let k = &mut *guard;
    // Verify the programs first: under emulation that can take seconds, which must not
    // come out of the fault's time in the kernel.
    k.require(program_group(rule.kind))?;
    if rule.kind == NetKind::ConnectError.code() {
        k.net.check_connect_retval(rule.retval)?;
    }
    let slot = k.slots.allocate()?;
    rule.counter_slot = slot;
    rule.deadline_ns = ctx.deadline_ns();
    if let Err(e) = k.net.add_fault(&mut k.ebpf, rule, ctx.cgroup_targets()) {
        k.slots.release(slot);
        return Err(e);
    }
    let slots = Arc::clone(&k.slots);
    drop(guard);
    Ok(Box::new(SlotRuleFault::new(
        kernel,
        &slots,
        slot,
        "network",
        |k, slot| k.net.remove_fault(&mut k.ebpf, slot),
    )))
}

#[cfg(test)]
mod tests {
    use super::{target_levels, verifier_gist};

    #[test]
    fn target_levels_name_each_depth_that_holds_a_target() {
        assert_eq!(
            target_levels([1, 2, 0, 3].into_iter()),
            1 << 1 | 1 << 2 | 1 << 3
        );
        assert_eq!(target_levels([].into_iter()), 0);
        assert_eq!(
            target_levels([99].into_iter()),
            0,
            "beyond the deepest level read"
        );
    }

    #[test]
    fn a_load_error_is_cut_to_the_line_that_says_why() {
        let log = "loading program chaosd_connect4: the BPF_PROG_LOAD syscall returned Invalid argument\n0: (bf) r7 = r1\n55: (85) call bpf_set_retval#187\nunknown func bpf_set_retval#187\nprocessed 53 insns";
        assert_eq!(verifier_gist(log), "unknown func bpf_set_retval#187");
        assert_eq!(verifier_gist("no such program\nmore"), "no such program");
        assert_eq!(verifier_gist(&"x".repeat(500)).len(), 200);
    }
}
