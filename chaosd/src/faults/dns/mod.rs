//! DNS faults (`dns.*`) per cgroup, with no file touched: the kernel sends a target cgroup's
//! port-53 traffic (unconnected UDP at sendmsg, connected UDP and TCP at connect) to chaosd's
//! resolver on loopback, through the transparent proxy's programs and records (see
//! `chaosd_common::proxy`); `recvmsg4/6` shows the resolver's answers as coming from the server
//! the application asked. The resolver answers matching queries as the fault says and forwards
//! the rest, unchanged, to that server. See docs/dns.md.
//!
//! # Kernel requirements
//! Those of the proxy (`tcp.*`: cgroup sock_addr connect4/6 and getpeername4/6, sock_ops,
//! SO_NETNS_COOKIE, 5.14+) plus cgroup sendmsg4/6 and recvmsg4/6 programs and
//! NETLINK_SOCK_DIAG for UDP (CONFIG_INET_UDP_DIAG) with socket cookies.

pub mod answer;
pub mod delay;
mod diag;
pub mod error;
mod resolver;
pub mod timeout;

use std::{
    path::Path,
    sync::{Arc, Mutex, atomic::Ordering},
};

use anyhow::Context as _;
use aya::{Ebpf, maps::HashMap};
use chaosd_common::{
    net::{NetKind, NetRule, PPM_ONE, PeerFilter},
    proxy::{PROXY_FLAG_DNS, PROXY_ORIGINS_MAP},
};

pub use resolver::Action;
use resolver::{DnsFault, Select};

use crate::{
    api::Counters,
    api::DnsSelect,
    error::{FaultError, RequestError},
    faults::kernel::{Kernel, ProgramGroup, SlotRuleFault},
    faults::net::{loss::check_percent, percent_to_ppm},
    faults::{ActiveFault, ApplyContext},
};

/// The resolver's state: its sockets while a DNS fault needs them, and the faults it applies.
pub struct DnsState {
    shared: Arc<resolver::Shared>,
    server: Option<resolver::Server>,
    /// DNS faults in force: the resolver runs while this is above 0.
    users: usize,
}

impl DnsState {
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let origins = ebpf
            .take_map(PROXY_ORIGINS_MAP)
            .context("eBPF object has no proxy origins map")?;
        let origins = HashMap::try_from(origins).context("proxy origins map has the wrong type")?;
        Ok(DnsState {
            shared: Arc::new(resolver::Shared::new(origins)),
            server: None,
            users: 0,
        })
    }

    /// The resolver's loopback port, started if need be.
    fn port(&mut self) -> Result<u16, FaultError> {
        if let Some(s) = &self.server {
            return Ok(s.port);
        }
        let server = resolver::start(&self.shared)
            .map_err(|e| FaultError::kernel("starting the dns resolver", e))?;
        let port = server.port;
        self.server = Some(server);
        Ok(port)
    }

    /// One DNS fault fewer; the last one stops the resolver.
    fn release(&mut self) {
        self.users = self.users.saturating_sub(1);
        if self.users == 0 && self.server.take().is_some() {
            tracing::info!("dns resolver stopped: no dns fault is active");
        }
    }
}

/// The checks every DNS kind shares (each value was parsed when the request was decoded).
pub fn validate_select(p: &impl DnsSelect) -> Result<(), RequestError> {
    check_percent(p.percent())
}

fn select_of(p: &impl DnsSelect) -> Select {
    Select {
        domains: p.domains().iter().map(|d| d.value().clone()).collect(),
        types: p.types().iter().map(|t| t.get().0).collect(),
        ppm: percent_to_ppm(p.percent()),
    }
}

/// Refuses targets with a process in another network namespace than chaosd's: the resolver
/// listens only in chaosd's, and the programs leave other namespaces alone, so the fault
/// would silently not act there.
fn check_same_netns(k: &Kernel, ctx: &ApplyContext<'_>) -> Result<(), FaultError> {
    let ours = netns_of("self");
    for t in ctx.targets {
        let dir = k.net.cgroup_dir(&t.cgroup);
        if let Some(pid) = pid_in_other_netns(&dir, ours) {
            return Err(FaultError::Refused(RequestError::Unsupported {
                kind: "dns".into(),
                reason: format!(
                    "process {pid} of cgroup {} is in another network namespace than chaosd's; dns faults act only in chaosd's own namespace for now",
                    t.cgroup
                ),
                fix: "target a cgroup whose processes share chaosd's network namespace, or run chaosd inside the target's namespace".into(),
            }));
        }
    }
    Ok(())
}

fn netns_of(pid: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// A process of the cgroup at `dir` or below it whose network namespace is not `ours`.
fn pid_in_other_netns(dir: &Path, ours: Option<u64>) -> Option<u32> {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        let theirs = netns_of(&pid.to_string());
        if theirs.is_some() && ours.is_some() && theirs != ours {
            return Some(pid);
        }
    }
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| pid_in_other_netns(&e.path(), ours))
}

/// Applies one DNS fault: the resolver's record of it first, then the kernel rule that sends
/// the targets' port-53 traffic to the resolver. On error nothing of it stays.
pub fn apply_dns(
    kernel: &Arc<Mutex<Kernel>>,
    p: &impl DnsSelect,
    action: Action,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let fault = Arc::new(DnsFault::new(select_of(p), action));
    let mut guard = kernel.lock().unwrap_or_else(|e| e.into_inner());
    let k = &mut *guard;
    k.require(ProgramGroup::Dns)?;
    check_same_netns(k, ctx)?;
    k.dns.users += 1;
    let slot = match add_rule(k, &fault, ctx) {
        Ok(slot) => slot,
        Err(e) => {
            k.dns.release();
            return Err(e);
        }
    };
    let slots = Arc::clone(&k.slots);
    drop(guard);
    Ok(Box::new(DnsActive {
        rule: SlotRuleFault::new(kernel, &slots, slot, "dns", remove_rule),
        fault,
    }))
}

fn add_rule(
    k: &mut Kernel,
    fault: &Arc<DnsFault>,
    ctx: &ApplyContext<'_>,
) -> Result<u32, FaultError> {
    let port = k.dns.port()?;
    let slot = k.slots.allocate()?;
    let rule = NetRule {
        kind: NetKind::Proxy.code(),
        counter_slot: slot,
        deadline_ns: ctx.deadline_ns(),
        // Every query goes to the resolver; it rolls the fault's dice per query.
        probability_ppm: PPM_ONE,
        flags: PROXY_FLAG_DNS,
        redirect_port: u32::from(port),
        filter: PeerFilter {
            port_lo: 53,
            port_hi: 53,
            ..PeerFilter::default()
        },
        ..NetRule::default()
    };
    k.dns
        .shared
        .faults
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(slot, Arc::clone(fault));
    if let Err(e) = k.net.add_fault(&mut k.ebpf, rule, ctx.cgroup_targets()) {
        k.dns
            .shared
            .faults
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&slot);
        k.slots.release(slot);
        return Err(e);
    }
    Ok(slot)
}

/// Ends a DNS fault: the rule first (no new query is sent to the resolver for it), then the
/// resolver's record of it and its hold on the resolver.
fn remove_rule(k: &mut Kernel, slot: u32) -> Result<(), FaultError> {
    let result = k.net.remove_fault(&mut k.ebpf, slot);
    k.dns
        .shared
        .faults
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&slot);
    k.dns.release();
    result
}

/// A DNS fault in force: its kernel rule, and its counters, which the resolver keeps (per
/// query, not per packet).
struct DnsActive {
    rule: SlotRuleFault,
    fault: Arc<DnsFault>,
}

impl ActiveFault for DnsActive {
    fn counters(&self) -> Counters {
        Counters {
            seen: self.fault.seen.load(Ordering::Relaxed),
            affected: self.fault.affected.load(Ordering::Relaxed),
        }
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        self.rule.revert()
    }
}

/// Checks that NETLINK_SOCK_DIAG finds a UDP socket of ours by its addresses and gives its
/// cookie, which is how the resolver finds a query's record.
pub fn probe_udp_diag() -> std::io::Result<()> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    sock.connect("127.0.0.1:9")?;
    let local = sock.local_addr()?;
    let remote = sock.peer_addr()?;
    match diag::SockDiag::open()?.cookie(17, local, remote)? {
        Some(_) => Ok(()),
        None => Err(std::io::Error::other(
            "a bound UDP socket of chaosd's was not found",
        )),
    }
}
