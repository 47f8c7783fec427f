//! `tc netem`, set up over netlink (never the tc binary): the reference chaosd's delay is
//! measured against, and the peer approach chaosblade and chaosd-go take.
//!
//! - [`NetemRoot`]: netem as a device's root qdisc, `tc qdisc add dev D root netem delay X`.
//! - [`PeerSetup`]: chaosblade's layout for a fault on some destinations only: a 4-band prio
//!   root (`1:`), netem on the extra band (`1:4`, handle `40:`), and a u32 filter on the root
//!   that sends packets for one IPv4 destination (and port) into that band; everything else
//!   takes prio's default bands, but every packet is classified through the filter first. That
//!   per-packet classification and the prio queue are what untargeted traffic pays.
//!
//! Both are guards over the device's root qdisc: [`TcGuard::remove`] deletes it (and with it
//! everything below it) and checks the device got back the root qdisc it had before; drop
//! deletes it too when `remove` was not called (an error on the way).

use std::{net::SocketAddrV4, time::Duration};

use anyhow::{Context as _, Result, bail};
use futures_util::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    Handle,
    packet_core::{
        DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage,
        NetlinkPayload,
    },
    packet_route::{
        RouteNetlinkMessage,
        tc::{
            TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcU32Key, TcU32Selector,
            TcU32SelectorFlags,
        },
    },
};

use super::netns::{NetNs, ifindex, netlink};

/// `TCA_OPTIONS` (include/uapi/linux/rtnetlink.h).
const TCA_OPTIONS: u16 = 2;
/// netem's 64-bit latency and jitter attributes, in ns (enum `TCA_NETEM_*` of pkt_sched.h).
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_JITTER64: u16 = 11;
/// netem's queue limit in packets (tc's default is 1,000; delayed probes need more room).
const NETEM_LIMIT: u32 = 10_000;
/// prio's band → priority map as tc and pfifo_fast have it (`TC_PRIO_*` → band).
const PRIO_MAP: [u8; 16] = [1, 2, 2, 2, 1, 2, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
/// `ETH_P_IP`: a filter's protocol is compared with `skb->protocol`, in network order.
const ETH_P_IP: u16 = 0x0800;

/// What netem does to the packets it gets.
#[derive(Clone, Copy, Debug)]
pub enum Effect {
    Delay(Duration),
    /// Drops every packet.
    DropAll,
}

/// netem's `TCA_OPTIONS` payload. Unlike most qdiscs' it is not a nest of attributes but a
/// `struct tc_netem_qopt` (include/uapi/linux/pkt_sched.h: six native-endian `__u32`s,
/// `latency, limit, loss, gap, duplicate, jitter`, 24 bytes) followed by attributes, which
/// `netem_change` (net/sched/sch_netem.c) parses from `NLA_ALIGN(sizeof(qopt))` on. The
/// struct's latency and jitter are in 64 ns scheduler ticks; `TCA_NETEM_LATENCY64` and
/// `TCA_NETEM_JITTER64` (`__s64` ns) override them, so those stay 0 and the delay goes in the
/// attribute. `loss` is a probability scaled to `u32` (`u32::MAX` is 100 %).
fn netem_options(effect: Effect) -> Vec<u8> {
    let (delay_ns, loss) = match effect {
        Effect::Delay(d) => (i64::try_from(d.as_nanos()).unwrap_or(i64::MAX), 0),
        Effect::DropAll => (0, u32::MAX),
    };
    let qopt = [0, NETEM_LIMIT, loss, 0, 0, 0];
    let mut out: Vec<u8> = qopt.iter().flat_map(|f| f.to_ne_bytes()).collect();
    push_attr(&mut out, TCA_NETEM_LATENCY64, &delay_ns.to_ne_bytes());
    push_attr(&mut out, TCA_NETEM_JITTER64, &0i64.to_ne_bytes());
    out
}

/// prio's `TCA_OPTIONS` payload: `struct tc_prio_qopt { int bands; __u8 priomap[16]; }`.
fn prio_options(bands: i32) -> Vec<u8> {
    let mut out = bands.to_ne_bytes().to_vec();
    out.extend_from_slice(&PRIO_MAP);
    out
}

/// Appends one netlink attribute (`struct nlattr` header, value, padding to 4 bytes).
fn push_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(4 + value.len()).expect("small attribute");
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The device's root qdisc while the bench has replaced it; see the module docs.
pub struct TcGuard {
    ns: NetNs,
    dev: &'static str,
    /// The root qdisc's kind before (the default the kernel gives back on delete).
    before: String,
    removed: bool,
}

/// Root netem on `dev` in `ns`.
pub struct NetemRoot;

impl NetemRoot {
    pub fn install(ns: &NetNs, dev: &'static str, effect: Effect) -> Result<TcGuard> {
        TcGuard::install(ns, dev, move |h, index| async move {
            add_qdisc(&h, index, TcHandle::ROOT, 1, "netem", netem_options(effect)).await
        })
    }
}

/// chaosblade's prio + netem + u32 on `dev` in `ns`, steering packets to `target` into netem.
pub struct PeerSetup;

impl PeerSetup {
    pub fn install(
        ns: &NetNs,
        dev: &'static str,
        target: SocketAddrV4,
        effect: Effect,
    ) -> Result<TcGuard> {
        TcGuard::install(ns, dev, move |h, index| async move {
            add_qdisc(&h, index, TcHandle::ROOT, 1, "prio", prio_options(4)).await?;
            let band = TcHandle { major: 1, minor: 4 };
            add_qdisc(&h, index, band, 0x40, "netem", netem_options(effect)).await?;
            h.traffic_filter(index as i32)
                .add()
                .parent(0x1_0000)
                .priority(4)
                .protocol(ETH_P_IP.to_be())
                .u32(&[
                    TcFilterU32Option::ClassId(band),
                    TcFilterU32Option::Selector(destination_selector(target)),
                ])?
                .execute()
                .await
                .context("adding the u32 filter")
        })
    }
}

/// `match ip dst A/32 match ip dport P 0xffff`: two keys on the IPv4 header (destination at
/// byte 16) and the transport header right after a 20-byte IPv4 header (ports at byte 20, the
/// destination port in the low half). Key values are given in host order; the crate sends them
/// big-endian as `struct tc_u32_key` wants.
fn destination_selector(target: SocketAddrV4) -> TcU32Selector {
    let key = |off, mask, val| {
        let mut k = TcU32Key::default();
        (k.off, k.mask, k.val) = (off, mask, val);
        k
    };
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.keys = vec![
        key(16, u32::MAX, u32::from(*target.ip())),
        key(20, 0xffff, u32::from(target.port())),
    ];
    sel.nkeys = 2;
    sel
}

impl TcGuard {
    /// Reads the root qdisc's kind, then runs `setup`, in one netlink session.
    fn install<F, Fut>(ns: &NetNs, dev: &'static str, setup: F) -> Result<TcGuard>
    where
        F: FnOnce(Handle, u32) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>>,
    {
        let before = ns
            .run(move || {
                let index = ifindex(dev)?;
                netlink(move |h| async move {
                    let before = root_kind(&h, index).await?;
                    setup(h, index).await.map(|()| before)
                })
            })
            .with_context(|| format!("setting up tc on {dev}"))?;
        Ok(TcGuard {
            ns: ns.try_clone()?,
            dev,
            before,
            removed: false,
        })
    }

    /// Deletes the root qdisc and checks the device has its previous root kind back.
    pub fn remove(mut self) -> Result<()> {
        self.removed = true;
        delete_root(&self.ns, self.dev)?;
        let after = root_kind_in(&self.ns, self.dev)?;
        if after != self.before {
            bail!(
                "{}'s root qdisc is {after} after the bench's tc setup went, {} before",
                self.dev,
                self.before
            );
        }
        Ok(())
    }
}

impl Drop for TcGuard {
    fn drop(&mut self) {
        if !self.removed
            && let Err(e) = delete_root(&self.ns, self.dev)
        {
            eprintln!(
                "bench: could not delete the root qdisc of {}: {e:#}",
                self.dev
            );
        }
    }
}

/// `RTM_NEWQDISC` (create, fail if present) of `kind` with raw `TCA_OPTIONS` bytes.
async fn add_qdisc(
    h: &Handle,
    index: u32,
    parent: TcHandle,
    major: u16,
    kind: &str,
    options: Vec<u8>,
) -> Result<()> {
    let mut msg = TcMessage::with_index(index as i32);
    msg.header.parent = parent;
    msg.header.handle = TcHandle { major, minor: 0 };
    msg.attributes.push(TcAttribute::Kind(kind.into()));
    msg.attributes
        .push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options)));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let answers: Vec<_> = h.clone().request(req)?.collect().await;
    match answers.into_iter().find_map(|m| match m.payload {
        NetlinkPayload::Error(e) if e.code.is_some() => Some(e.to_io()),
        _ => None,
    }) {
        Some(e) => Err(e).with_context(|| format!("adding the {kind} qdisc")),
        None => Ok(()),
    }
}

fn delete_root(ns: &NetNs, dev: &'static str) -> Result<()> {
    ns.run(move || {
        let index = ifindex(dev)?;
        netlink(move |h| async move {
            let mut req = h.qdisc().del(index as i32);
            req.message_mut().header.parent = TcHandle::ROOT;
            Ok(req.execute().await?)
        })
    })
    .with_context(|| format!("deleting the root qdisc of {dev}"))
}

/// The kind of `dev`'s root qdisc in `ns`.
fn root_kind_in(ns: &NetNs, dev: &'static str) -> Result<String> {
    ns.run(move || {
        let index = ifindex(dev)?;
        netlink(move |h| async move { root_kind(&h, index).await })
    })
}

/// The kind of a device's root qdisc, `noqueue` when the dump lists none.
async fn root_kind(h: &Handle, index: u32) -> Result<String> {
    let qdiscs: Vec<TcMessage> = h.qdisc().get().execute().try_collect().await?;
    let kind = qdiscs
        .iter()
        .filter(|q| q.header.index == index as i32 && q.header.parent == TcHandle::ROOT)
        .flat_map(|q| &q.attributes)
        .find_map(|a| match a {
            TcAttribute::Kind(k) => Some(k.clone()),
            _ => None,
        });
    Ok(kind.unwrap_or_else(|| "noqueue".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netem_options_are_the_struct_then_aligned_attributes() {
        let b = netem_options(Effect::Delay(Duration::from_millis(10)));
        assert_eq!(b.len(), 24 + 2 * 12);
        assert_eq!(b[4..8], NETEM_LIMIT.to_ne_bytes());
        assert_eq!(b[24..26], 12u16.to_ne_bytes());
        assert_eq!(b[26..28], TCA_NETEM_LATENCY64.to_ne_bytes());
        assert_eq!(b[28..36], 10_000_000i64.to_ne_bytes());
        let drop_all = netem_options(Effect::DropAll);
        assert_eq!(drop_all[8..12], u32::MAX.to_ne_bytes());
        assert_eq!(prio_options(4).len(), 20);
    }
}
