//! sch_fq on the devices a delayed or paced cgroup sends through: the qdisc that honours the
//! departure times the egress program writes (EDT).
//!
//! chaosd only ever replaces a device's *default* root qdisc (handle 0, which the kernel
//! attached itself: noqueue, pfifo_fast, fq_codel, mq) with its own fq (handle
//! [`CHAOSD_FQ_MAJOR`]), and deleting that fq gives the device its default back: the previous
//! state, exactly. A root qdisc someone configured is never replaced: an existing fq is used
//! as it is, anything else refuses the fault with the device's name. Devices are leased:
//! the first fault on a device installs fq, the last one to end removes it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle,
    packet_core::{
        DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
    },
    packet_route::{
        RouteNetlinkMessage,
        link::{LinkAttribute, LinkFlags},
        tc::{TcAttribute, TcHandle, TcMessage, TcOption},
    },
};

use serde::{Deserialize, Serialize};

use super::netns::Netns;
use crate::error::{FaultError, RequestError};

/// Major handle of the fq qdiscs chaosd installs ("cd00:"), so they are recognisable later.
pub const CHAOSD_FQ_MAJOR: u16 = 0xcd00;

// TCA_FQ_* attribute numbers (include/uapi/linux/pkt_sched.h).
const TCA_FQ_PLIMIT: u16 = 1;
const TCA_FQ_FLOW_PLIMIT: u16 = 2;
const TCA_FQ_HORIZON: u16 = 14;
const TCA_FQ_HORIZON_DROP: u16 = 15;

/// fq's own horizon default; a longer delay needs a longer one.
const MIN_HORIZON_US: u64 = 10_000_000;

/// A device in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceKey {
    pub netns_inode: u64,
    pub ifindex: u32,
}

/// The root qdisc a device had when first leased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootQdisc {
    pub kind: String,
    pub handle: u32,
}

impl RootQdisc {
    /// Attached by the kernel, not configured by anyone.
    fn is_default(&self) -> bool {
        self.handle == 0
    }
}

struct Lease {
    users: usize,
    /// Whether chaosd installed the fq (and must remove it), or found one to reuse.
    installed: bool,
    name: String,
    netns: Netns,
    before: RootQdisc,
}

/// Which devices carry an fq for which faults.
#[derive(Default)]
pub struct FqLeases {
    leases: BTreeMap<DeviceKey, Lease>,
    /// Where the fq qdiscs chaosd installed are recorded before they exist, so a later
    /// start removes what a crashed instance left ([`clean_leftovers`]).
    record: Option<PathBuf>,
}

/// One recorded fq: enough to find the device again after a restart.
#[derive(Debug, Serialize, Deserialize)]
struct RecordedFq {
    netns_inode: u64,
    ifindex: u32,
    name: String,
}

/// A device's identity and state when a fault took it.
#[derive(Clone, Debug)]
pub struct Leased {
    pub key: DeviceKey,
    pub name: String,
    pub before: RootQdisc,
    pub installed: bool,
}

impl FqLeases {
    /// Records installed qdiscs in `path` from now on.
    pub fn set_record(&mut self, path: PathBuf) {
        self.record = Some(path);
    }

    /// Writes the record of every fq chaosd owns (atomically; absent when none).
    fn save(&self) {
        let Some(path) = &self.record else { return };
        let owned: Vec<RecordedFq> = self
            .leases
            .iter()
            .filter(|(_, l)| l.installed)
            .map(|(k, l)| RecordedFq {
                netns_inode: k.netns_inode,
                ifindex: k.ifindex,
                name: l.name.clone(),
            })
            .collect();
        let result = if owned.is_empty() {
            std::fs::remove_file(path).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        } else {
            write_atomically(path, &serde_json::to_vec_pretty(&owned).unwrap_or_default())
        };
        if let Err(e) = result {
            tracing::error!("recording installed qdiscs in {}: {e}", path.display());
        }
    }

    /// Puts fq on every up device of each namespace (or reuses the one there), or nothing:
    /// on error what this call installed is removed again.
    pub fn acquire(
        &mut self,
        namespaces: Vec<Netns>,
        horizon_us: u64,
    ) -> Result<Vec<Leased>, FaultError> {
        let mut taken = Vec::new();
        for ns in namespaces {
            let result = self.acquire_namespace(ns, horizon_us, &mut taken);
            if let Err(e) = result {
                self.release(&taken);
                return Err(e);
            }
        }
        Ok(taken)
    }

    fn acquire_namespace(
        &mut self,
        ns: Netns,
        horizon_us: u64,
        taken: &mut Vec<Leased>,
    ) -> Result<(), FaultError> {
        let devices = ns
            .netlink(|h| async move { devices_with_root(&h).await })
            .map_err(|e| FaultError::kernel("listing the target namespace's devices", e))?;
        for (ifindex, name, root) in devices {
            let key = DeviceKey {
                netns_inode: ns.inode,
                ifindex,
            };
            if let Some(lease) = self.leases.get_mut(&key) {
                lease.users += 1;
                taken.push(leased(key, lease));
                continue;
            }
            let installed = if root.is_default() {
                true
            } else if root.kind == "fq" {
                false
            } else {
                return Err(FaultError::Refused(RequestError::QdiscInTheWay {
                    device: name,
                    qdisc: format!("{} (handle {:x}:)", root.kind, root.handle >> 16),
                }));
            };
            let lease = Lease {
                users: 1,
                installed,
                name,
                netns: ns
                    .try_clone()
                    .map_err(|e| FaultError::kernel("keeping a namespace", e))?,
                before: root,
            };
            let (name, previous) = (lease.name.clone(), lease.before.kind.clone());
            self.leases.insert(key, lease);
            if installed {
                // Recorded before it exists: a crash in between leaves a record, not a qdisc.
                self.save();
                let done = ns.netlink(|h| async move { install_fq(&h, ifindex, horizon_us).await });
                if let Err(e) = done {
                    self.leases.remove(&key);
                    self.save();
                    return Err(FaultError::kernel("installing sch_fq", e));
                }
                tracing::info!(device = %name, %previous, "sch_fq installed");
            }
            taken.push(leased(key, &self.leases[&key]));
        }
        Ok(())
    }

    /// Ends one use of each device; the last use removes the fq chaosd installed. Held
    /// packets go with it (a brief loss at recovery, as when netem is removed).
    pub fn release(&mut self, taken: &[Leased]) {
        for t in taken {
            let Some(lease) = self.leases.get_mut(&t.key) else {
                continue;
            };
            lease.users -= 1;
            if lease.users > 0 {
                continue;
            }
            let lease = self.leases.remove(&t.key).expect("present");
            if !lease.installed {
                continue;
            }
            let ifindex = t.key.ifindex;
            match lease
                .netns
                .netlink(|h| async move { remove_our_fq(&h, ifindex).await })
            {
                Ok(()) => {
                    tracing::info!(device = %lease.name, restored = %lease.before.kind, "sch_fq removed")
                }
                Err(e) => tracing::error!(device = %lease.name, "removing sch_fq: {e:#}"),
            }
            self.save();
        }
    }
}

/// Removes the fq qdiscs a previous instance recorded in `path` and left behind (it crashed);
/// returns how many it removed. A namespace is found again through any process still in it;
/// a namespace with no process left is gone, and its devices with it.
pub fn clean_leftovers(path: &Path) -> usize {
    let recorded: Vec<RecordedFq> = read_record(path);
    let mut removed = 0;
    for fq in recorded {
        let Some(ns) = find_netns(fq.netns_inode) else {
            tracing::info!(device = %fq.name, "a previous chaosd's sch_fq went with its namespace");
            continue;
        };
        let ifindex = fq.ifindex;
        match ns.netlink(|h| async move { remove_our_fq(&h, ifindex).await }) {
            Ok(()) => {
                removed += 1;
                tracing::warn!(device = %fq.name, "removed the sch_fq a previous chaosd left");
            }
            Err(e) => tracing::warn!(device = %fq.name, "a previous chaosd's sch_fq: {e:#}"),
        }
    }
    let _ = std::fs::remove_file(path);
    removed
}

/// The entries of a record file a previous instance wrote; none if absent or unreadable.
pub(crate) fn read_record<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The `kind` attribute of a qdisc or filter message ("fq", "clsact", …).
pub fn tc_kind(msg: &TcMessage) -> String {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            TcAttribute::Kind(k) => Some(k.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// A handle on the namespace with nsfs inode `inode`: through any process in it, or a named
/// namespace in /run/netns (one a `--netns` fault may have used while it held no process).
pub(crate) fn find_netns(inode: u64) -> Option<Netns> {
    let by_process = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Netns::of_pid(pid).ok())
        .find(|ns| ns.inode == inode);
    by_process.or_else(|| {
        std::fs::read_dir("/run/netns")
            .ok()?
            .flatten()
            .filter_map(|e| Netns::open_spec(&e.path().to_string_lossy()).ok())
            .find(|ns| ns.inode == inode)
    })
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn leased(key: DeviceKey, lease: &Lease) -> Leased {
    Leased {
        key,
        name: lease.name.clone(),
        before: lease.before.clone(),
        installed: lease.installed,
    }
}

/// fq's horizon for departures up to `max_ahead_ns` from now: never below fq's default.
pub fn horizon_us(max_ahead_ns: u64) -> u64 {
    (max_ahead_ns / 1000 * 2).max(MIN_HORIZON_US)
}

/// Up devices of the namespace with their root qdisc.
pub async fn devices_with_root(h: &Handle) -> anyhow::Result<Vec<(u32, String, RootQdisc)>> {
    let links: Vec<_> = h.link().get().execute().try_collect().await?;
    let mut out = Vec::new();
    for link in links {
        if !link.header.flags.contains(LinkFlags::Up) {
            continue;
        }
        let name = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
            .unwrap_or_else(|| format!("ifindex {}", link.header.index));
        let root = root_qdisc(h, link.header.index).await?;
        out.push((link.header.index, name, root));
    }
    Ok(out)
}

/// The root qdisc of a device (`noqueue` when it has none listed).
pub async fn root_qdisc(h: &Handle, ifindex: u32) -> anyhow::Result<RootQdisc> {
    let qdiscs: Vec<TcMessage> = h
        .qdisc()
        .get()
        .index(ifindex as i32)
        .execute()
        .try_collect()
        .await?;
    let root = qdiscs
        .iter()
        .find(|q| q.header.index == ifindex as i32 && q.header.parent == TcHandle::ROOT);
    Ok(match root {
        Some(q) => RootQdisc {
            kind: tc_kind(q),
            handle: u32::from(q.header.handle.major) << 16 | u32::from(q.header.handle.minor),
        },
        None => RootQdisc {
            kind: "noqueue".into(),
            handle: 0,
        },
    })
}

async fn install_fq(h: &Handle, ifindex: u32, horizon_us: u64) -> anyhow::Result<()> {
    let horizon = u32::try_from(horizon_us).context("horizon too long")?;
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TcHandle::ROOT;
    msg.header.handle = TcHandle {
        major: CHAOSD_FQ_MAJOR,
        minor: 0,
    };
    msg.attributes.push(TcAttribute::Kind("fq".into()));
    let opt = |kind, value: Vec<u8>| TcOption::Other(DefaultNla::new(kind, value));
    msg.attributes.push(TcAttribute::Options(vec![
        // Delayed packets wait in fq: room for many of them, overall and per flow.
        opt(TCA_FQ_PLIMIT, 100_000u32.to_ne_bytes().to_vec()),
        opt(TCA_FQ_FLOW_PLIMIT, 10_000u32.to_ne_bytes().to_vec()),
        opt(TCA_FQ_HORIZON, horizon.to_ne_bytes().to_vec()),
        // Beyond the horizon: cap the departure time rather than drop.
        opt(TCA_FQ_HORIZON_DROP, vec![0u8]),
    ]));
    send(
        h,
        RouteNetlinkMessage::NewQueueDiscipline(msg),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .await
    .context("the kernel refused sch_fq (is the sch_fq module available?)")
}

/// Deletes the device's root qdisc if it is chaosd's fq; the kernel reattaches its default.
async fn remove_our_fq(h: &Handle, ifindex: u32) -> anyhow::Result<()> {
    let root = root_qdisc(h, ifindex).await?;
    if root.kind != "fq" || root.handle >> 16 != u32::from(CHAOSD_FQ_MAJOR) {
        bail!(
            "the root qdisc is now {} (handle {:x}:), not chaosd's fq: someone replaced it; left alone",
            root.kind,
            root.handle >> 16
        );
    }
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TcHandle::ROOT;
    send(h, RouteNetlinkMessage::DelQueueDiscipline(msg), 0).await
}

async fn send(h: &Handle, body: RouteNetlinkMessage, flags: u16) -> anyhow::Result<()> {
    let mut req = NetlinkMessage::from(body);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut response = h.clone().request(req)?;
    use futures_util::StreamExt as _;
    while let Some(msg) = response.next().await {
        if let rtnetlink::packet_core::NetlinkPayload::Error(e) = msg.payload
            && e.code.is_some()
        {
            return Err(e.to_io().into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizon_covers_twice_the_delay_and_never_shrinks_below_fq_default() {
        assert_eq!(horizon_us(100_000_000), MIN_HORIZON_US);
        assert_eq!(horizon_us(8_000_000_000), 16_000_000);
    }

    #[test]
    fn default_root_qdisc_is_recognised() {
        let q = RootQdisc {
            kind: "noqueue".into(),
            handle: 0,
        };
        assert!(q.is_default());
        let configured = RootQdisc {
            kind: "htb".into(),
            handle: 1 << 16,
        };
        assert!(!configured.is_default());
    }
}
