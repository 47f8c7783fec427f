//! TC egress classifier: corrupt and duplicate a cgroup's packets (`net.corrupt`,
//! `net.duplicate`), which a cgroup_skb program cannot do (it may not write packet data or
//! clone).
//!
//! Attached (TCX, or clsact on older kernels) to the devices of the namespaces a target's
//! processes live in. A packet belongs to the cgroup of its socket (`bpf_skb_ancestor_cgroup_id`
//! works at egress for locally generated packets); forwarded packets have no socket and pass.
//! Data starts at the Ethernet header; userspace attaches only to Ethernet-framed devices
//! (loopback included).
//!
//! Every verdict is "no opinion" (`TC_ACT_UNSPEC`, TCX's "next"): other programs and filters
//! on the device still run and decide.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, TC_ACT_UNSPEC},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_skb_ancestor_cgroup_id},
    macros::classifier,
    programs::TcContext,
};
use aya_log_ebpf::debug;
use chaosd_common::net::{
    DIR_EGRESS, FAMILY_V4, MAX_RULES_PER_CGROUP, NET_FLAG_PAYLOAD, NetKind, NetRule, NetRuleSet,
    PPM_ONE, TC_DUPLICATE_MARK,
};

use super::{
    deepest_rule_set,
    peer::{Peer, matches, parse},
};
use crate::counters;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

#[classifier]
pub fn chaosd_tc_egress(ctx: TcContext) -> i32 {
    egress(&ctx);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn egress(ctx: &TcContext) {
    let skb = ctx.skb.skb;
    // SAFETY: `mark` is readable and writable at TC.
    let mark = unsafe { (*skb).mark };
    if mark & TC_DUPLICATE_MARK != 0 {
        // Our own copy coming round again: give it the original's mark and let it go.
        // SAFETY: as above.
        unsafe { (*skb).mark = mark & !TC_DUPLICATE_MARK };
        return;
    }
    // SAFETY: the helper only reads the skb the kernel handed us.
    let found = deepest_rule_set(|level| unsafe { bpf_skb_ancestor_cgroup_id(skb, level) });
    let Some((cgroup_id, set)) = found else {
        return;
    };
    let ethertype = u16::from_be(ctx.skb.protocol() as u16);
    if ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        return;
    }
    let Some((peer, l4)) = parse(&ctx.skb, ETH_HLEN, DIR_EGRESS) else {
        return;
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // Duplicates are taken before any corruption, so a copy is the packet as it was sent.
    let dup_expired = for_each_hit(set, &peer, now, NetKind::Duplicate, |_| {
        duplicate(ctx, mark)
    });
    let corrupt_expired = for_each_hit(set, &peer, now, NetKind::Corrupt, |rule| {
        if rule.flags & NET_FLAG_PAYLOAD != 0 {
            corrupt_payload(ctx, &peer, l4)
        } else {
            corrupt_header(ctx, &peer)
        }
    });
    if dup_expired || corrupt_expired {
        // The daemon removes rules at their deadline; one still here means it is late or gone.
        debug!(
            ctx,
            "cgroup {}: tc rules past their deadline ignored", cgroup_id
        );
    }
}

/// Runs `act` for each live rule of `kind` matching `peer` whose dice roll hits, counting
/// every match and, as affected, every hit `act` carried out. True if a rule had expired.
#[inline(always)]
fn for_each_hit(
    set: &NetRuleSet,
    peer: &Peer,
    now: u64,
    kind: NetKind,
    act: impl Fn(&NetRule) -> bool,
) -> bool {
    let mut expired = false;
    let mut i = 0;
    while i < MAX_RULES_PER_CGROUP {
        let rule = &set.rules[i];
        i += 1;
        if rule.kind != kind.code()
            || rule.direction & DIR_EGRESS == 0
            || !matches(&rule.filter, peer)
        {
            continue;
        }
        if now >= rule.deadline_ns {
            expired = true;
            continue;
        }
        // SAFETY: plain helper call.
        let hit = unsafe { bpf_get_prandom_u32() } % PPM_ONE < rule.probability_ppm;
        counters::count(rule.counter_slot, hit && act(rule));
    }
    expired
}

/// Sends a copy of the packet out of the same device first. The copy carries
/// [`TC_DUPLICATE_MARK`] so that this program, seeing it next, passes it untouched (no copy of
/// a copy); the original's mark is put back at once.
#[inline(always)]
fn duplicate(ctx: &TcContext, mark: u32) -> bool {
    // SAFETY: `ifindex` is the device the packet leaves through; `mark` is writable.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    ctx.set_mark(mark | TC_DUPLICATE_MARK);
    // flags 0: to the device's egress.
    let sent = ctx.clone_redirect(ifindex, 0).is_ok();
    ctx.set_mark(mark);
    sent
}

/// Damages the IP header so that the receiving stack must drop the packet: veth and loopback
/// never verify L4 checksums (the packet is CHECKSUM_PARTIAL), but every IPv4 receiver checks
/// the header checksum, so one bit of it is flipped. IPv6 has no header checksum: its version
/// field is cleared, which every receiver (and router) drops as a malformed header.
#[inline(always)]
fn corrupt_header(ctx: &TcContext, peer: &Peer) -> bool {
    let (offset, flip) = if peer.family == FAMILY_V4 {
        (ETH_HLEN + 10, 0x01u8)
    } else {
        (ETH_HLEN, 0x60u8)
    };
    let Ok(byte) = ctx.load::<u8>(offset) else {
        return false;
    };
    ctx.store(offset, &(byte ^ flip), 0).is_ok()
}

/// Flips bits in one random 16-bit word of the L4 payload and updates the L4 checksum to
/// match, so the damage arrives unnoticed whether or not the checksum is computed later
/// (offload) or was already final. Packets without two payload bytes are left alone.
#[inline(always)]
fn corrupt_payload(ctx: &TcContext, peer: &Peer, l4: usize) -> bool {
    let Some((start, csum_at, flags)) = payload_layout(ctx, peer, l4) else {
        return false;
    };
    let words = (ctx.len() as usize).saturating_sub(start) / 2;
    // Checked here, where the compiler sees it, so the division below has no panic path.
    if words == 0 {
        return false;
    }
    // SAFETY: plain helper calls.
    let r = unsafe { bpf_get_prandom_u32() };
    // Even distance from the L4 header, as checksum words are.
    let at = start + 2 * (r as usize % words);
    let Ok(old) = ctx.load::<u16>(at) else {
        return false;
    };
    // A non-zero mask from the upper random bits.
    let new = old ^ (((r >> 16) as u16) | 1);
    if ctx.store(at, &new, 0).is_err() {
        return false;
    }
    match csum_at {
        Some(csum_at) => ctx
            .l4_csum_replace(csum_at, u64::from(old), u64::from(new), flags | 2)
            .is_ok(),
        None => true,
    }
}

/// Where the payload starts, where the L4 checksum is and its `bpf_l4_csum_replace` flags.
#[inline(always)]
fn payload_layout(ctx: &TcContext, peer: &Peer, l4: usize) -> Option<(usize, Option<usize>, u64)> {
    Some(match peer.proto {
        // TCP: data offset in the upper nibble of byte 12.
        6 => {
            let doff = usize::from(ctx.load::<u8>(l4 + 12).ok()? >> 4) * 4;
            (l4 + doff, Some(l4 + 16), 0)
        }
        // UDP: a zero checksum (IPv4: none) stays zero.
        17 => (l4 + 8, Some(l4 + 6), u64::from(BPF_F_MARK_MANGLED_0)),
        // ICMP and ICMPv6: a change inside the message needs no pseudo-header update.
        1 | 58 => (l4 + 8, Some(l4 + 2), 0),
        _ => (l4, None, 0),
    })
}
