//! cgroup sock_addr programs: fail `connect()` (TCP and UDP) and unconnected UDP `sendmsg()`
//! from a target cgroup with a chosen errno (`bpf_set_retval`, kernel 5.19+).
//!
//! Kernels before 5.19 have no `bpf_set_retval`: a sock_addr program that rejects makes the
//! syscall fail with EPERM, nothing else. The `*_eperm` programs are for them: they reject only
//! for rules asking for EPERM (the daemon refuses other errnos there).

use aya_ebpf::{
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_set_retval,
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use chaosd_common::net::{FAMILY_V4, FAMILY_V6, MAX_RULES_PER_CGROUP, NetKind, PPM_ONE};

use super::{
    deepest_rule_set,
    peer::{Peer, matches},
};
use crate::counters;

/// sock_addr verdicts.
const ALLOW: i32 = 1;
const REJECT: i32 = 0;
/// What a rejection without `bpf_set_retval` returns to the caller.
const MINUS_EPERM: i32 = -1;

#[cgroup_sock_addr(connect4)]
pub fn chaosd_connect4(ctx: SockAddrContext) -> i32 {
    verdict::<true>(&ctx, FAMILY_V4)
}

#[cgroup_sock_addr(connect6)]
pub fn chaosd_connect6(ctx: SockAddrContext) -> i32 {
    verdict::<true>(&ctx, FAMILY_V6)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn chaosd_sendmsg4(ctx: SockAddrContext) -> i32 {
    verdict::<true>(&ctx, FAMILY_V4)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn chaosd_sendmsg6(ctx: SockAddrContext) -> i32 {
    verdict::<true>(&ctx, FAMILY_V6)
}

#[cgroup_sock_addr(connect4)]
pub fn chaosd_connect4_eperm(ctx: SockAddrContext) -> i32 {
    verdict::<false>(&ctx, FAMILY_V4)
}

#[cgroup_sock_addr(connect6)]
pub fn chaosd_connect6_eperm(ctx: SockAddrContext) -> i32 {
    verdict::<false>(&ctx, FAMILY_V6)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn chaosd_sendmsg4_eperm(ctx: SockAddrContext) -> i32 {
    verdict::<false>(&ctx, FAMILY_V4)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn chaosd_sendmsg6_eperm(ctx: SockAddrContext) -> i32 {
    verdict::<false>(&ctx, FAMILY_V6)
}

/// `SET_RETVAL`: the program may call `bpf_set_retval` (5.19+); without it only rules asking
/// for EPERM reject.
#[inline(always)]
fn verdict<const SET_RETVAL: bool>(ctx: &SockAddrContext, family: u32) -> i32 {
    // SAFETY: plain helper call about the current task.
    let found = deepest_rule_set(|level| unsafe { bpf_get_current_ancestor_cgroup_id(level) });
    let Some((_, set)) = found else { return ALLOW };
    // SAFETY: the kernel hands a valid bpf_sock_addr; these fields are readable in every
    // sock_addr hook.
    let peer = unsafe {
        let sa = &*ctx.sock_addr;
        let addr = if family == FAMILY_V4 {
            [sa.user_ip4, 0, 0, 0]
        } else {
            sa.user_ip6
        };
        let port = u32::from(u16::from_be(sa.user_port as u16));
        Peer {
            family,
            proto: sa.protocol,
            peer: addr,
            local: [0; 4],
            peer_port: port,
            local_port: 0,
        }
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let mut i = 0;
    while i < MAX_RULES_PER_CGROUP {
        let rule = &set.rules[i];
        i += 1;
        if rule.kind != NetKind::ConnectError.code()
            || now >= rule.deadline_ns
            || !matches(&rule.filter, &peer)
        {
            continue;
        }
        if !SET_RETVAL && rule.retval != MINUS_EPERM {
            continue;
        }
        let hit = unsafe { bpf_get_prandom_u32() } % PPM_ONE < rule.probability_ppm;
        counters::count(rule.counter_slot, hit);
        if hit && !SET_RETVAL {
            return REJECT;
        }
        if hit && rule.retval >= -4095 && rule.retval < 0 {
            // SAFETY: sets the syscall's return value; range checked above.
            unsafe { bpf_set_retval(rule.retval) };
            return REJECT;
        }
    }
    ALLOW
}
