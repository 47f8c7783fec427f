//! cgroup_skb ingress/egress programs: per-cgroup packet drops (loss, partition) and egress
//! departure times (delay, jitter, bandwidth; see [`departure`]).
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
    DIR_EGRESS, DIR_INGRESS, MAX_RULES_PER_CGROUP, NetKind, NetRuleSet, PPM_ONE,
};

use super::{
    deepest_rule_set, departure,
    peer::{Peer, matches, parse},
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
    match verdict(&ctx, DIR_EGRESS) {
        Verdict::Drop => DROP_CN,
        Verdict::Depart(t) => {
            // SAFETY: cgroup_skb egress may write tstamp (root only); fq honours it.
            unsafe { (*ctx.skb.skb).tstamp = t };
            PASS
        }
        Verdict::Pass => PASS,
    }
}

#[cgroup_skb(ingress)]
pub fn chaosd_net_ingress(ctx: SkBuffContext) -> i32 {
    match verdict(&ctx, DIR_INGRESS) {
        Verdict::Drop => DROP,
        Verdict::Depart(_) | Verdict::Pass => PASS,
    }
}

/// What the rules of the packet's cgroup decide.
enum Verdict {
    Pass,
    Drop,
    /// Pass, leaving no earlier than this CLOCK_MONOTONIC time (egress only).
    Depart(u64),
}

#[inline(always)]
fn verdict(ctx: &SkBuffContext, direction: u32) -> Verdict {
    // SAFETY: the helper only reads the skb the kernel handed us.
    let found = deepest_rule_set(|level| unsafe { bpf_skb_ancestor_cgroup_id(ctx.skb.skb, level) });
    let Some((id, set)) = found else {
        return Verdict::Pass;
    };
    match parse(&ctx.skb, 0, direction) {
        Some((peer, _)) => apply_rules(ctx, id, set, direction, &peer),
        None => Verdict::Pass,
    }
}

#[inline(always)]
fn apply_rules(
    ctx: &SkBuffContext,
    cgroup_id: u64,
    set: &NetRuleSet,
    direction: u32,
    peer: &Peer,
) -> Verdict {
    // SAFETY: plain helper calls; the skb fields are readable in cgroup_skb.
    let now = unsafe { bpf_ktime_get_ns() };
    let (tstamp, len) = unsafe { ((*ctx.skb.skb).tstamp, u64::from((*ctx.skb.skb).len)) };
    // TCP may already have set a departure time of its own (pacing): never move it earlier.
    let base = if tstamp > now { tstamp } else { now };
    let mut depart = base;
    let mut drop = false;
    let mut expired = false;
    let mut i = 0;
    while i < MAX_RULES_PER_CGROUP {
        let rule = &set.rules[i];
        i += 1;
        let ours = rule.kind == NetKind::Drop.code()
            || rule.kind == NetKind::Delay.code()
            || rule.kind == NetKind::Bandwidth.code();
        if !ours || rule.direction & direction == 0 || !matches(&rule.filter, peer) {
            continue;
        }
        if now >= rule.deadline_ns {
            expired = true;
            continue;
        }
        if rule.kind == NetKind::Drop.code() {
            let hit = unsafe { bpf_get_prandom_u32() } % PPM_ONE < rule.probability_ppm;
            counters::count(rule.counter_slot, hit);
            drop |= hit;
        } else if direction == DIR_EGRESS && rule.kind == NetKind::Bandwidth.code() {
            let before = depart;
            depart = departure::paced(rule, len, depart, now);
            counters::count(rule.counter_slot, depart > before);
        } else if direction == DIR_EGRESS && rule.kind == NetKind::Delay.code() {
            depart = departure::delayed(rule, peer, depart);
            counters::count(rule.counter_slot, true);
        }
    }
    if expired {
        // The daemon removes rules at their deadline; one still here means it is late or gone.
        debug!(
            ctx,
            "cgroup {}: net rules past their deadline ignored", cgroup_id
        );
    }
    if drop {
        Verdict::Drop
    } else if depart > base {
        Verdict::Depart(depart)
    } else {
        Verdict::Pass
    }
}
