//! The TC egress classifier (`chaosd-ebpf/src/net/tc.rs`) on the devices of the targets'
//! network namespaces: what `net.corrupt` and `net.duplicate` need.
//!
//! Namespaces are leased: the first fault in a namespace attaches the classifier to each of
//! its Ethernet-framed devices, loopback included (a target's traffic to local peers is its
//! traffic too, as for `net.loss`); the last fault to end detaches it. Devices created later
//! are not covered. The program acts only on packets whose socket is in a target cgroup.
//!
//! On kernels 6.6+ the attachments are TCX links: they close with the daemon, so a crash
//! leaves nothing on the devices. Older kernels get a netlink filter under a `clsact` qdisc;
//! chaosd adds clsact only where there is none, records every device it filtered in
//! `tc.json` under the state dir *before* touching it, and removes only what it added: its
//! filter always, clsact if it added it. A later start removes what a crashed instance left
//! ([`clean_leftovers`]); meanwhile the rules' kernel deadlines end the faults anyway.
//!
//! # Kernel requirements
//! `sched_cls` programs with `bpf_skb_ancestor_cgroup_id` (4.19+), TCX for crash-proof
//! attachments (6.6+), else `CONFIG_NET_CLS_ACT` + `CONFIG_NET_SCH_INGRESS` (clsact).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        tc::{NlOptions, SchedClassifierLink, TcAttachOptions},
    },
    util::KernelVersion,
};
use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle,
    packet_route::{
        link::{LinkAttribute, LinkLayerType},
        tc::{TcAttribute, TcHandle},
    },
};
use serde::{Deserialize, Serialize};

use chaosd_common::net::{DIR_EGRESS, NetKind, NetRule};

use super::{filter::peer_filter, loss::check_percent, netns::Netns, percent_to_ppm};
use crate::{
    api::{Counters, NetFilter},
    error::{FaultError, RequestError},
    faults::capabilities::Problem,
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

/// The classifier's name in the eBPF object (also its netlink filter's name).
pub const TC_PROGRAM: &str = chaosd_common::names::TC_EGRESS;

/// clsact's handle (`ffff:0`) and parent (`TC_H_CLSACT`).
const CLSACT_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
const TC_H_CLSACT: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0xfff1,
};

/// Where the classifier is attached, per namespace (nsfs inode), and for how many faults.
pub struct TcAttachments {
    leases: BTreeMap<u64, NsLease>,
    /// Why the classifier could not be loaded (then no lease is ever taken).
    unavailable: Option<String>,
    record: Option<PathBuf>,
    /// Devices of the namespace being attached, recorded before they are in `leases`.
    pending: Vec<RecordedDevice>,
    /// Attach through netlink + clsact even where TCX exists (tests of the old-kernel path).
    force_netlink: bool,
}

struct NsLease {
    users: usize,
    netns: Netns,
    devices: Vec<DeviceLink>,
}

/// The classifier on one device.
struct DeviceLink {
    name: String,
    ifindex: u32,
    /// Taken out of the program so that it is detached where and when chaosd chooses: a
    /// netlink filter must be removed from inside its namespace.
    link: SchedClassifierLink,
    /// chaosd added the device's clsact (netlink mode) and removes it.
    added_clsact: bool,
    netlink: bool,
}

/// A device chaosd put a netlink filter on (and maybe clsact): enough to undo it later.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RecordedDevice {
    netns_inode: u64,
    ifindex: u32,
    name: String,
    added_clsact: bool,
}

impl Default for TcAttachments {
    /// No program is loaded yet: see [`TcAttachments::load`].
    fn default() -> Self {
        TcAttachments {
            leases: BTreeMap::new(),
            unavailable: None,
            record: None,
            pending: Vec::new(),
            force_netlink: std::env::var_os("CHAOSD_TC_FORCE_NETLINK").is_some_and(|v| v == "1"),
        }
    }
}

impl TcAttachments {
    /// Records netlink attachments in `path` from now on.
    pub fn set_record(&mut self, path: PathBuf) {
        self.record = Some(path);
    }

    /// Loads (verifies) the classifier; a refusal disables corrupt and duplicate only.
    pub fn load(&mut self, ebpf: &mut Ebpf) -> Result<(), Problem> {
        let loaded = classifier(ebpf).and_then(|p| Ok(p.load()?));
        self.unavailable = loaded.as_ref().err().map(|e| format!("{e:#}"));
        loaded.map_err(|e| {
            Problem::new(
                format!("loading the TC egress classifier failed: {e:#}"),
                "corrupt and duplicate need sched_cls programs with \
                 bpf_skb_ancestor_cgroup_id: run a kernel 4.19 or newer with CONFIG_NET_CLS_ACT",
            )
        })
    }

    /// Takes a lease on each namespace, attaching the classifier where it is not yet; all or
    /// nothing. Returns the leased namespaces' inodes for [`TcAttachments::release`].
    pub fn acquire(
        &mut self,
        ebpf: &mut Ebpf,
        namespaces: Vec<Netns>,
    ) -> Result<Vec<u64>, FaultError> {
        if let Some(reason) = &self.unavailable {
            return Err(FaultError::kernel(
                "attaching the TC classifier",
                anyhow::anyhow!("the classifier did not load: {reason}"),
            ));
        }
        let mut taken = Vec::new();
        for ns in namespaces {
            let inode = ns.inode;
            if let Some(lease) = self.leases.get_mut(&inode) {
                lease.users += 1;
                taken.push(inode);
                continue;
            }
            let attached = self.attach_namespace(ebpf, &ns);
            self.pending.clear();
            match attached {
                Ok(devices) => {
                    tracing::info!(
                        netns = inode,
                        devices = devices.len(),
                        "TC classifier attached"
                    );
                    self.leases.insert(
                        inode,
                        NsLease {
                            users: 1,
                            netns: ns,
                            devices,
                        },
                    );
                    taken.push(inode);
                }
                Err(e) => {
                    self.save();
                    self.release(&taken);
                    return Err(e);
                }
            }
        }
        Ok(taken)
    }

    /// Ends one use of each namespace; the last use detaches the classifier there.
    pub fn release(&mut self, inodes: &[u64]) {
        for inode in inodes {
            let Some(lease) = self.leases.get_mut(inode) else {
                continue;
            };
            lease.users -= 1;
            if lease.users > 0 {
                continue;
            }
            let lease = self.leases.remove(inode).expect("present above");
            detach_all(&lease.netns, lease.devices);
            self.save();
            tracing::info!(netns = inode, "TC classifier detached");
        }
    }

    /// Attaches to every Ethernet-framed device of `ns`; on error undoes this namespace.
    fn attach_namespace(
        &mut self,
        ebpf: &mut Ebpf,
        ns: &Netns,
    ) -> Result<Vec<DeviceLink>, FaultError> {
        let devices = ns
            .netlink(|h| async move { ethernet_devices(&h).await })
            .map_err(|e| FaultError::kernel("listing the target namespace's devices", e))?;
        let netlink = self.force_netlink || !has_tcx();
        let mut done = Vec::new();
        for (ifindex, name) in devices {
            let added_clsact = if netlink {
                match self.prepare_clsact(ns, ifindex, &name) {
                    Ok(added) => added,
                    Err(e) => {
                        detach_all(ns, done);
                        return Err(e);
                    }
                }
            } else {
                false
            };
            let prog =
                classifier(ebpf).map_err(|e| FaultError::kernel("finding the classifier", e));
            let link = prog.and_then(|prog| {
                let name = name.clone();
                ns.run(move || attach(prog, &name, netlink))
                    .map_err(|e| FaultError::kernel("attaching the TC classifier", e))
            });
            let device = DeviceLink {
                name,
                ifindex,
                link: match link {
                    Ok(link) => link,
                    Err(e) => {
                        if added_clsact {
                            remove_clsact(ns, ifindex);
                        }
                        detach_all(ns, done);
                        return Err(e);
                    }
                },
                added_clsact,
                netlink,
            };
            done.push(device);
        }
        Ok(done)
    }

    /// Netlink mode: records the device, then adds clsact unless present. True if added.
    fn prepare_clsact(&mut self, ns: &Netns, ifindex: u32, name: &str) -> Result<bool, FaultError> {
        let present = ns
            .netlink(|h| async move { has_clsact(&h, ifindex).await })
            .map_err(|e| FaultError::kernel("listing a device's qdiscs", e))?;
        // Recorded before the kernel is touched: a crash in between leaves a record only.
        self.pending.push(RecordedDevice {
            netns_inode: ns.inode,
            ifindex,
            name: name.to_string(),
            added_clsact: !present,
        });
        self.save();
        if present {
            return Ok(false);
        }
        let name = name.to_string();
        ns.run(move || Ok(aya::programs::tc::qdisc_add_clsact(&name)?))
            .map_err(|e| FaultError::kernel("adding the clsact qdisc", e))?;
        Ok(true)
    }

    fn recorded(&self) -> Vec<RecordedDevice> {
        self.leases
            .iter()
            .flat_map(|(inode, l)| {
                l.devices
                    .iter()
                    .filter(|d| d.netlink)
                    .map(|d| RecordedDevice {
                        netns_inode: *inode,
                        ifindex: d.ifindex,
                        name: d.name.clone(),
                        added_clsact: d.added_clsact,
                    })
            })
            .chain(self.pending.iter().cloned())
            .collect()
    }

    fn save(&self) {
        self.write_record(self.recorded());
    }

    fn write_record(&self, devices: Vec<RecordedDevice>) {
        let Some(path) = &self.record else { return };
        let result = if devices.is_empty() {
            std::fs::remove_file(path).or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
        } else {
            crate::faults::net::qdisc::write_atomically(
                path,
                &serde_json::to_vec_pretty(&devices).unwrap_or_default(),
            )
        };
        if let Err(e) = result {
            tracing::error!("recording TC attachments in {}: {e}", path.display());
        }
    }
}

/// The egress rule of a TC kind (deadline and counter slot are filled in at apply), checked.
pub(crate) fn egress_rule(
    kind: NetKind,
    percent: f64,
    filter: &NetFilter,
) -> Result<NetRule, RequestError> {
    check_percent(percent)?;
    Ok(NetRule {
        kind: kind.code(),
        direction: DIR_EGRESS,
        probability_ppm: percent_to_ppm(percent),
        filter: peer_filter(filter)?,
        ..NetRule::default()
    })
}

/// Writes `rule` for the targets, then attaches the classifier in their namespaces; all or
/// nothing. The rule alone does nothing until the classifier runs.
pub(crate) fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    rule: NetRule,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let rule = super::apply_rule(kernel, rule, ctx)?;
    let mut k = kernel.lock().unwrap_or_else(|e| e.into_inner());
    let dirs: Vec<_> = ctx
        .targets
        .iter()
        .map(|t| k.net.cgroup_dir(&t.cgroup))
        .collect();
    let namespaces = super::netns::of_cgroups(&dirs).map_err(|e| {
        FaultError::Refused(RequestError::NoNetns {
            reason: format!("{e:#}"),
        })
    });
    let k = &mut *k;
    // On error `rule` is dropped after the lock is released, which removes it again.
    let namespaces = namespaces.and_then(|ns| k.net.tc.acquire(&mut k.ebpf, ns))?;
    Ok(Box::new(TcFault {
        kernel: Arc::clone(kernel),
        rule,
        namespaces,
    }))
}

/// A corrupt or duplicate fault: its rule, and its leases on the classifier's namespaces.
struct TcFault {
    kernel: Arc<Mutex<Kernel>>,
    rule: Box<dyn ActiveFault>,
    /// Emptied once released.
    namespaces: Vec<u64>,
}

impl TcFault {
    /// Rule first (no packet is touched after), then the leases; once.
    fn end(&mut self) -> Result<(), FaultError> {
        let result = self.rule.revert();
        let namespaces = std::mem::take(&mut self.namespaces);
        if !namespaces.is_empty() {
            let mut k = self.kernel.lock().unwrap_or_else(|e| e.into_inner());
            k.net.tc.release(&namespaces);
        }
        result
    }
}

impl ActiveFault for TcFault {
    fn counters(&self) -> Counters {
        self.rule.counters()
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        self.end()
    }
}

impl Drop for TcFault {
    fn drop(&mut self) {
        if let Err(e) = self.end() {
            tracing::error!("reverting a TC fault on drop: {e}");
        }
    }
}

/// TCX links exist from 6.6 on (an unreadable version counts as older: netlink works there).
fn has_tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

fn classifier(ebpf: &mut Ebpf) -> anyhow::Result<&mut SchedClassifier> {
    ebpf.program_mut(TC_PROGRAM)
        .with_context(|| format!("eBPF object has no program {TC_PROGRAM}"))?
        .try_into()
        .with_context(|| format!("program {TC_PROGRAM} is not a TC classifier"))
}

/// Attaches `prog` to `device`'s egress, from inside the device's namespace.
fn attach(
    prog: &mut SchedClassifier,
    device: &str,
    netlink: bool,
) -> anyhow::Result<SchedClassifierLink> {
    let options = if netlink {
        TcAttachOptions::Netlink(NlOptions::default())
    } else {
        TcAttachOptions::TcxOrder(LinkOrder::default())
    };
    let id = prog
        .attach_with_options(device, TcAttachType::Egress, options)
        .with_context(|| format!("attaching to {device} egress"))?;
    Ok(prog.take_link(id)?)
}

/// Detaches every link (netlink filters from inside the namespace) and removes the clsact
/// qdiscs chaosd added. Errors are logged: there is nothing better to do at this point.
fn detach_all(ns: &Netns, devices: Vec<DeviceLink>) {
    for d in devices {
        let (name, ifindex, added_clsact) = (d.name.clone(), d.ifindex, d.added_clsact);
        // Dropping a netlink link removes its filter through a netlink socket of the thread's
        // namespace; dropping a TCX link closes its fd. Both happen on a thread inside `ns`.
        if let Err(e) = ns.run(move || {
            drop(d.link);
            Ok(())
        }) {
            tracing::error!(device = %name, "detaching the TC classifier: {e:#}");
        }
        if added_clsact {
            remove_clsact(ns, ifindex);
        }
    }
}

fn remove_clsact(ns: &Netns, ifindex: u32) {
    if let Err(e) = ns.netlink(|h| async move { delete_clsact(&h, ifindex).await }) {
        tracing::error!(ifindex, "removing the clsact qdisc chaosd added: {e:#}");
    }
}

/// Devices of the namespace whose packets start with an Ethernet header (the program's
/// parser assumes one), with their names.
async fn ethernet_devices(h: &Handle) -> anyhow::Result<Vec<(u32, String)>> {
    let links: Vec<_> = h.link().get().execute().try_collect().await?;
    Ok(links
        .into_iter()
        .filter(|l| {
            matches!(
                l.header.link_layer_type,
                LinkLayerType::Ether | LinkLayerType::Loopback
            )
        })
        .filter_map(|l| {
            let name = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })?;
            Some((l.header.index, name))
        })
        .collect())
}

async fn has_clsact(h: &Handle, ifindex: u32) -> anyhow::Result<bool> {
    let qdiscs: Vec<_> = h
        .qdisc()
        .get()
        .index(ifindex as i32)
        .execute()
        .try_collect()
        .await?;
    // The dump may list every device's qdiscs, whatever the index asked.
    Ok(qdiscs.iter().any(|q| {
        q.header.index == ifindex as i32
            && q.header.parent == TC_H_CLSACT
            && q.attributes
                .iter()
                .any(|a| matches!(a, TcAttribute::Kind(k) if k == "clsact"))
    }))
}

async fn delete_clsact(h: &Handle, ifindex: u32) -> anyhow::Result<()> {
    let mut req = h.qdisc().del(ifindex as i32);
    req.message_mut().header.parent = TC_H_CLSACT;
    req.message_mut().header.handle = CLSACT_HANDLE;
    Ok(req.execute().await?)
}

/// Removes the netlink filters and clsact qdiscs a previous instance recorded in `path` and
/// left behind (it crashed); returns how many devices it cleaned. A namespace is found again
/// through any process still in it; one with no process left is gone, devices and all.
pub fn clean_leftovers(path: &Path) -> usize {
    let recorded: Vec<RecordedDevice> = crate::faults::net::qdisc::read_record(path);
    let mut cleaned = 0;
    for d in recorded {
        let Some(ns) = crate::faults::net::qdisc::find_netns(d.netns_inode) else {
            continue;
        };
        let name = d.name.clone();
        let detached = ns.run(move || {
            match aya::programs::tc::qdisc_detach_program(&name, TcAttachType::Egress, TC_PROGRAM) {
                Err(aya::programs::tc::TcError::IoError(e))
                    if e.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(())
                }
                other => Ok(other?),
            }
        });
        if let Err(e) = detached {
            tracing::warn!(device = %d.name, "a previous chaosd's TC filter: {e:#}");
            continue;
        }
        if d.added_clsact {
            remove_clsact(&ns, d.ifindex);
        }
        cleaned += 1;
        tracing::warn!(device = %d.name, "removed the TC filter a previous chaosd left");
    }
    let _ = std::fs::remove_file(path);
    cleaned
}

#[cfg(test)]
mod tests {
    use chaosd_common::net::{NetKind, PPM_ONE};

    use super::*;

    #[test]
    fn egress_rules_check_percent_and_filter() {
        let rule = egress_rule(NetKind::Corrupt, 100.0, &NetFilter::default()).unwrap();
        assert_eq!(
            (rule.kind, rule.direction, rule.probability_ppm),
            (NetKind::Corrupt.code(), DIR_EGRESS, PPM_ONE)
        );
        for bad in [0.0, 101.0, f64::NAN] {
            assert!(egress_rule(NetKind::Corrupt, bad, &NetFilter::default()).is_err());
        }
        let icmp_port = NetFilter {
            port: Some("80".parse().unwrap()),
            proto: crate::api::Proto::Icmp,
            ..NetFilter::default()
        };
        assert!(egress_rule(NetKind::Corrupt, 50.0, &icmp_port).is_err());
    }
}
