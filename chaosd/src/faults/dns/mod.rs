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
    collections::{BTreeMap, BTreeSet},
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
    faults::tcp::{served::Place, target_dirs},
    faults::{ActiveFault, ApplyContext},
};

/// The resolver's state: its sockets in each namespace it serves while a DNS fault needs
/// them, and the faults it applies.
pub struct DnsState {
    shared: Arc<resolver::Shared>,
    /// By namespace ([`Place::key`]); all on one port, which the kernel rule names.
    servers: BTreeMap<u64, resolver::Server>,
    /// The namespaces each DNS fault (by counter slot) holds, chaosd's own first.
    holds: BTreeMap<u32, Vec<Place>>,
}

impl DnsState {
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let origins = ebpf
            .take_map(PROXY_ORIGINS_MAP)
            .context("eBPF object has no proxy origins map")?;
        let origins = HashMap::try_from(origins).context("proxy origins map has the wrong type")?;
        Ok(DnsState {
            shared: Arc::new(resolver::Shared::new(origins)),
            servers: BTreeMap::new(),
            holds: BTreeMap::new(),
        })
    }

    /// The resolver's loopback port, open in chaosd's namespace and each of `places` (started
    /// where need be). On error, what no fault holds is stopped.
    fn port(&mut self, places: &[Place]) -> Result<u16, FaultError> {
        let mut port = self.servers.values().next().map(|s| s.port);
        for place in std::iter::once(&Place::Home).chain(places) {
            if self.servers.contains_key(&place.key()) {
                continue;
            }
            match resolver::start(&self.shared, place, port) {
                Ok(server) => {
                    port = Some(server.port);
                    self.servers.insert(place.key(), server);
                }
                Err(e) => {
                    self.stop_unheld();
                    let at = port.map(|p| format!(" on port {p}")).unwrap_or_default();
                    let detail = format!(
                        "listening{at} in {} (a served namespace needs its loopback up and that port free)",
                        place.describe()
                    );
                    return Err(FaultError::kernel(
                        "starting the dns resolver",
                        anyhow::Error::new(e).context(detail),
                    ));
                }
            }
        }
        Ok(port.unwrap_or_default())
    }

    /// Stops the resolver where no DNS fault needs it.
    fn stop_unheld(&mut self) {
        let held: BTreeSet<u64> = self
            .holds
            .values()
            .flat_map(|places| places.iter().map(Place::key))
            .collect();
        self.servers.retain(|key, _| {
            let keep = held.contains(key);
            if !keep {
                tracing::info!(netns = key, "dns resolver stopped: no dns fault needs it");
            }
            keep
        });
    }

    /// Ends the DNS fault at `slot`'s hold on its namespaces; returns the ones besides
    /// chaosd's for the served-namespace list.
    fn release(&mut self, slot: u32) -> Vec<Place> {
        let places = self.holds.remove(&slot).unwrap_or_default();
        self.stop_unheld();
        places
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
    let places = k.served.acquire(&target_dirs(k, ctx))?;
    let slot = match add_rule(k, &fault, ctx, &places) {
        Ok(slot) => slot,
        Err(e) => {
            k.served.release(&places);
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
    places: &[Place],
) -> Result<u32, FaultError> {
    let port = k.dns.port(places)?;
    let slot = match k.slots.allocate() {
        Ok(slot) => slot,
        Err(e) => {
            k.dns.stop_unheld();
            return Err(e);
        }
    };
    let mut held = vec![Place::Home];
    held.extend(places.iter().cloned());
    k.dns.holds.insert(slot, held);
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
        k.dns.release(slot);
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
    let places = k.dns.release(slot);
    k.served.release(&places);
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
