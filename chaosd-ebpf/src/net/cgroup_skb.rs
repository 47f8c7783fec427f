//! cgroup_skb ingress/egress programs: per-cgroup packet loss.
//!
//! Attached once to the cgroup2 root (multi-attach), they see every packet a local socket sends
//! or receives, loopback included, and look up the socket's cgroup and each of its ancestors in
//! `NET_RULES`.

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_skb_ancestor_cgroup_id},
    macros::{cgroup_skb, map},
    maps::HashMap,
    programs::SkBuffContext,
};
use chaosd_common::net::{
    DIR_EGRESS, DIR_INGRESS, MAX_CGROUP_LEVEL, MAX_NET_CGROUPS, MAX_RULES_PER_CGROUP,
    NET_KIND_LOSS, NetRuleSet, PPM_ONE,
};

use aya_log_ebpf::debug;

use crate::counters;

#[map]
static NET_RULES: HashMap<u64, NetRuleSet> = HashMap::with_max_entries(MAX_NET_CGROUPS, 0);

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

/// Finds the deepest cgroup in the packet's ancestry (level 1 = child of the root, down to its
/// own cgroup) that has a rule set, and applies its live rules for `direction`. The daemon
/// copies a targeted cgroup's rules into the sets of targeted descendants, so the deepest set
/// is the complete one.
#[inline(always)]
fn should_drop(ctx: &SkBuffContext, direction: u32) -> bool {
    let mut found: Option<(u64, &NetRuleSet)> = None;
    let mut level = 1;
    while level <= MAX_CGROUP_LEVEL {
        // SAFETY: the helper only reads the skb the kernel handed us.
        let id = unsafe { bpf_skb_ancestor_cgroup_id(ctx.skb.skb, level as i32) };
        if id == 0 {
            break;
        }
        // SAFETY: map values are only read here; the daemon replaces whole values.
        if let Some(set) = unsafe { NET_RULES.get(&id) } {
            found = Some((id, set));
        }
        level += 1;
    }
    match found {
        Some((id, set)) => apply_rules(ctx, id, set, direction),
        None => false,
    }
}

#[inline(always)]
fn apply_rules(ctx: &SkBuffContext, cgroup_id: u64, set: &NetRuleSet, direction: u32) -> bool {
    let now = unsafe { bpf_ktime_get_ns() };
    let mut drop = false;
    let mut expired = 0u32;
    let mut i = 0;
    while i < MAX_RULES_PER_CGROUP {
        let rule = &set.rules[i];
        i += 1;
        if rule.kind != NET_KIND_LOSS || rule.direction & direction == 0 {
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
