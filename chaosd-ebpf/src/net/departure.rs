//! Departure times (EDT) for delay, jitter and bandwidth: the egress program moves
//! `skb->tstamp` into the future and sch_fq on the device holds the packet until then. Nothing
//! is queued here, so a packet costs a few map reads, and when the programs detach (daemon
//! gone) no packet is held longer than fq's horizon.

use aya_ebpf::{helpers::bpf_get_prandom_u32, macros::map, maps::LruHashMap};
use chaosd_common::net::NetRule;

use super::peer::Peer;

const NS_PER_SEC: u64 = 1_000_000_000;

/// A flow as fq sees it (one socket ≈ one 5-tuple), per fault: jitter may not reorder it.
#[repr(C)]
#[derive(Clone, Copy)]
struct FlowKey {
    slot: u32,
    proto: u32,
    peer: [u32; 4],
    /// `peer_port << 16 | local_port`.
    ports: u32,
    _pad: u32,
}

/// Last departure time given to each flow of a jittered delay.
#[map]
static NET_FLOW_DEPARTURE: LruHashMap<FlowKey, u64> = LruHashMap::with_max_entries(65536, 0);

/// Next free departure time of each bandwidth fault (by counter slot).
#[map]
static NET_PACING: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1024, 0);

/// `t` plus the rule's delay ± jitter; with jitter, never before the flow's previous packet.
#[inline(always)]
pub fn delayed(rule: &NetRule, peer: &Peer, t: u64) -> u64 {
    let mut out = t + rule.delay_ns;
    if rule.jitter_ns == 0 {
        return out;
    }
    // Uniform in [delay - jitter, delay + jitter]; the daemon keeps jitter <= delay and
    // 2 * jitter < 2^32 ns, so neither the product nor the subtraction wraps.
    // SAFETY: plain helper call.
    let r = u64::from(unsafe { bpf_get_prandom_u32() });
    out = out - rule.jitter_ns + ((r * (2 * rule.jitter_ns)) >> 32);
    let key = FlowKey {
        slot: rule.counter_slot,
        proto: peer.proto,
        peer: peer.peer,
        ports: (peer.peer_port << 16) | (peer.local_port & 0xffff),
        _pad: 0,
    };
    // SAFETY: the value is a plain u64 read once.
    if let Some(last) = unsafe { NET_FLOW_DEPARTURE.get(&key) } {
        if out < *last {
            out = *last;
        }
    }
    let _ = NET_FLOW_DEPARTURE.insert(&key, &out, 0);
    out
}

/// The departure time that keeps the rule's fault within its rate (a token bucket in time):
/// the fault's virtual clock `next` advances by each packet's share of a second, a packet
/// leaves at `max(t, next)`, and an idle fault may lag `burst` worth of time behind now, so
/// up to `burst_bytes` (plus the packet at hand) leave back to back. Concurrent CPUs may race
/// on the state; that costs a little accuracy, never correctness.
#[inline(always)]
pub fn paced(rule: &NetRule, len: u64, t: u64, now: u64) -> u64 {
    let rate = rule.rate_bytes_per_sec;
    if rate == 0 {
        return t;
    }
    let slot = rule.counter_slot;
    // SAFETY: the value is a plain u64 read once.
    let next = unsafe { NET_PACING.get(&slot) }.copied().unwrap_or(0);
    let credit_floor = now.saturating_sub(rule.burst_bytes * NS_PER_SEC / rate);
    let start = if next > credit_floor {
        next
    } else {
        credit_floor
    };
    let _ = NET_PACING.insert(&slot, &(start + len * NS_PER_SEC / rate), 0);
    if t > start { t } else { start }
}
