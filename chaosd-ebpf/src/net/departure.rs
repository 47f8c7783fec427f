//! Departure times (EDT) for delay, jitter and bandwidth: the egress program moves
//! `skb->tstamp` into the future and sch_fq on the device holds the packet until then. Nothing
//! is queued here, so a packet costs a few map reads, and when the programs detach (daemon
//! gone) no packet is held longer than fq's horizon.

use aya_ebpf::{
    helpers::bpf_get_prandom_u32,
    macros::map,
    maps::{Array, LruHashMap},
};
use chaosd_common::{counters::MAX_FAULT_SLOTS, net::NetRule};

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

/// Next free departure time of each bandwidth fault, indexed by its counter slot (0: no
/// packet yet). An array, not an LRU hash: the slots are few and known, and a small common
/// LRU map recycles live entries long before it is full on kernels without the per-CPU
/// free-target clamp (Debian's 6.1 has none): each CPU that updates it reserves a batch of
/// 128 free elements, so with more than 8 CPUs a 1024-entry map can start evicting other
/// faults' clocks, and a fault whose clock is gone sends its next packets as a fresh burst.
/// An array slot is written in place and never goes.
#[map]
static NET_PACING: Array<u64> = Array::with_max_entries(MAX_FAULT_SLOTS, 0);

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
    // The daemon allocates slots below MAX_FAULT_SLOTS, so the slot is always there.
    let Some(clock) = NET_PACING.get_ptr_mut(rule.counter_slot) else {
        return t;
    };
    // SAFETY: a plain u64 of the array, read once and written once; a racing CPU may
    // overwrite it (see above), never leave it torn.
    let next = unsafe { *clock };
    let credit_floor = now.saturating_sub(rule.burst_bytes * NS_PER_SEC / rate);
    let start = if next > credit_floor {
        next
    } else {
        credit_floor
    };
    // SAFETY: as above.
    unsafe { *clock = start + len * NS_PER_SEC / rate };
    if t > start { t } else { start }
}
