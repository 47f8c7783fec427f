//! cgroup_skb ingress/egress programs: per-cgroup packet drops (loss, partition).
//!
//! Attached to the cgroup2 root while a network fault is active, they see every packet a local
//! socket sends or receives, loopback included. `skb` data starts at the IP header.

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_skb_ancestor_cgroup_id},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use aya_log_ebpf::debug;
use chaosd_common::net::{
    DIR_EGRESS, DIR_INGRESS, FAMILY_V4, FAMILY_V6, MAX_RULES_PER_CGROUP, NET_KIND_DROP, NetRuleSet,
    PPM_ONE,
};

use super::{
    deepest_rule_set,
    peer::{Peer, matches},
};
use crate::counters;

/// cgroup_skb verdicts.
const PASS: i32 = 1;
const DROP: i32 = 0;
/// Egress only: drop and report congestion, which UDP `send()` reports as success, like a loss
/// on the wire (plain DROP would make `send()` fail with EPERM).
const DROP_CN: i32 = 2;

#[cgroup_skb(egress)]
pub fn chaosd_net_egress(ctx: SkBuffContext) -> i32 {
    if should_drop(&ctx, DIR_EGRESS) {
        DROP_CN
    } else {
        PASS
    }
}

#[cgroup_skb(ingress)]
pub fn chaosd_net_ingress(ctx: SkBuffContext) -> i32 {
    if should_drop(&ctx, DIR_INGRESS) {
        DROP
    } else {
        PASS
    }
}

#[inline(always)]
fn should_drop(ctx: &SkBuffContext, direction: u32) -> bool {
    // SAFETY: the helper only reads the skb the kernel handed us.
    let found = deepest_rule_set(|level| unsafe { bpf_skb_ancestor_cgroup_id(ctx.skb.skb, level) });
    let Some((id, set)) = found else { return false };
    match parse(ctx, direction) {
        Some(peer) => apply_rules(ctx, id, set, direction, &peer),
        None => false,
    }
}

/// Reads family, protocol, addresses and the peer port from the IP header (and the first four
/// bytes of TCP/UDP). IPv6 extension headers are not followed.
#[inline(always)]
fn parse(ctx: &SkBuffContext, direction: u32) -> Option<Peer> {
    let version = ctx.load::<u8>(0).ok()? >> 4;
    let (family, proto, src, dst, l4) = if version == 4 {
        let ihl = u32::from(ctx.load::<u8>(0).ok()? & 0x0f) * 4;
        let proto = u32::from(ctx.load::<u8>(9).ok()?);
        let src = [ctx.load::<u32>(12).ok()?, 0, 0, 0];
        let dst = [ctx.load::<u32>(16).ok()?, 0, 0, 0];
        (FAMILY_V4, proto, src, dst, ihl)
    } else if version == 6 {
        let proto = u32::from(ctx.load::<u8>(6).ok()?);
        let src = ctx.load::<[u32; 4]>(8).ok()?;
        let dst = ctx.load::<[u32; 4]>(24).ok()?;
        (FAMILY_V6, proto, src, dst, 40)
    } else {
        return None;
    };
    let (sport, dport) = if proto == 6 || proto == 17 {
        let sport = u16::from_be(ctx.load::<u16>(l4 as usize).unwrap_or(0));
        let dport = u16::from_be(ctx.load::<u16>(l4 as usize + 2).unwrap_or(0));
        (u32::from(sport), u32::from(dport))
    } else {
        (0, 0)
    };
    Some(if direction == DIR_EGRESS {
        Peer {
            family,
            proto,
            peer: dst,
            local: src,
            peer_port: dport,
        }
    } else {
        Peer {
            family,
            proto,
            peer: src,
            local: dst,
            peer_port: sport,
        }
    })
}

#[inline(always)]
fn apply_rules(
    ctx: &SkBuffContext,
    cgroup_id: u64,
    set: &NetRuleSet,
    direction: u32,
    peer: &Peer,
) -> bool {
    // SAFETY: plain helper calls.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut drop = false;
    let mut expired = 0u32;
    let mut i = 0;
    while i < MAX_RULES_PER_CGROUP {
        let rule = &set.rules[i];
        i += 1;
        if rule.kind != NET_KIND_DROP
            || rule.direction & direction == 0
            || !matches(&rule.filter, peer)
        {
            continue;
        }
        if now >= rule.deadline_ns {
            expired += 1;
            continue;
        }
        let hit = unsafe { bpf_get_prandom_u32() } % PPM_ONE < rule.probability_ppm;
        counters::count(rule.counter_slot, hit);
        drop |= hit;
    }
    if expired > 0 {
        // The daemon removes rules at their deadline; one still here means it is late or gone.
        debug!(
            ctx,
            "cgroup {}: {} net rules past their deadline ignored", cgroup_id, expired
        );
    }
    drop
}
