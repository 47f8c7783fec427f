//! The transparent proxy's kernel side (`tcp.*`): redirect a target's matching TCP connects to
//! chaosd's loopback listener, remember where they were going, and keep `getpeername()`
//! answering with that address. See `chaosd_common::proxy` for the three steps.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_pid_tgid, bpf_get_netns_cookie,
        bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns,
    },
    macros::{cgroup_sock_addr, map, sock_ops},
    maps::{HashMap, LruHashMap},
    programs::{SockAddrContext, SockOpsContext},
};
use chaosd_common::{
    net::{FAMILY_V4, FAMILY_V6, MAX_RULES_PER_CGROUP, NetKind, PPM_ONE},
    proxy::{
        MAX_PROXY_CONNECTIONS, MAX_SERVED_NETNS, NO_SLOT, PROXY_FLAG_DNS, PROXY_FLAG_REFUSE,
        ProxyOrigin, ProxyPeerKey, netns_words,
    },
};

use super::{
    deepest_rule_set,
    peer::{Peer, matches},
};
use crate::counters;

#[map]
static PROXY_ORIGINS: LruHashMap<u64, ProxyOrigin> =
    LruHashMap::with_max_entries(MAX_PROXY_CONNECTIONS, 0);

#[map]
static PROXY_PEERS: LruHashMap<ProxyPeerKey, ProxyOrigin> =
    LruHashMap::with_max_entries(MAX_PROXY_CONNECTIONS, 0);

/// chaosd's tgid, set by the loader: the proxy's own upstream connects go where they asked.
#[unsafe(no_mangle)]
static PROXY_DAEMON_TGID: u32 = 0;

/// The namespaces chaosd listens in (netns cookie → 1): a connect elsewhere is left alone.
#[map]
static PROXY_NETNS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_SERVED_NETNS, 0);

const ALLOW: i32 = 1;
/// `BPF_SOCK_OPS_TCP_CONNECT_CB`: an active connect is about to send its SYN; the local
/// address and port are set by then.
const SOCK_OPS_TCP_CONNECT_CB: u32 = 3;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// 127.0.0.1 as the word `user_ip4` holds (network byte order).
const LOOPBACK4: u32 = u32::from_ne_bytes([127, 0, 0, 1]);
/// ::1 as the words `user_ip6` holds.
const LOOPBACK6: [u32; 4] = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];
/// Word 2 of an IPv4-mapped IPv6 address (::ffff:a.b.c.d).
const V4_MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
/// ::ffff:127.0.0.1, where a dual-stack socket's IPv4-mapped connect is sent (it reaches the
/// IPv4 listener).
const MAPPED_LOOPBACK4: [u32; 4] = [0, 0, V4_MAPPED, LOOPBACK4];
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

#[cgroup_sock_addr(connect4)]
pub fn chaosd_proxy_connect4(ctx: SockAddrContext) -> i32 {
    redirect4(&ctx, false)
}

#[cgroup_sock_addr(connect6)]
pub fn chaosd_proxy_connect6(ctx: SockAddrContext) -> i32 {
    redirect6(&ctx, false)
}

/// Unconnected UDP sends (`sendto`/`sendmsg` with an address): DNS rules only.
#[cgroup_sock_addr(sendmsg4)]
pub fn chaosd_dns_sendmsg4(ctx: SockAddrContext) -> i32 {
    redirect4(&ctx, true)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn chaosd_dns_sendmsg6(ctx: SockAddrContext) -> i32 {
    redirect6(&ctx, true)
}

/// A datagram from the resolver's loopback port to a redirected socket is shown as from the
/// server the application asked (glibc and Go drop answers from another address).
#[cgroup_sock_addr(recvmsg4)]
pub fn chaosd_dns_recvmsg4(ctx: SockAddrContext) -> i32 {
    // SAFETY: helper on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: map values are plain data written whole.
    if let Some(origin) = unsafe { PROXY_ORIGINS.get(&cookie) } {
        // SAFETY: the kernel hands a valid bpf_sock_addr; recvmsg4 may rewrite user_ip4
        // and user_port (4-byte loads and stores).
        unsafe {
            let sa = &mut *ctx.sock_addr;
            let from_port = u32::from(u16::from_be(sa.user_port as u16));
            if origin.family == FAMILY_V4
                && sa.user_ip4 == LOOPBACK4
                && from_port == origin.via_port
            {
                sa.user_ip4 = origin.addr[0];
                sa.user_port = u32::from((origin.port as u16).to_be());
            }
        }
    }
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn chaosd_dns_recvmsg6(ctx: SockAddrContext) -> i32 {
    // SAFETY: helper on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: map values are plain data written whole.
    if let Some(origin) = unsafe { PROXY_ORIGINS.get(&cookie) } {
        // SAFETY: as in recvmsg4, for user_ip6 (4-byte loads and stores).
        unsafe {
            let sa = &mut *ctx.sock_addr;
            let from_port = u32::from(u16::from_be(sa.user_port as u16));
            let ip = [
                sa.user_ip6[0],
                sa.user_ip6[1],
                sa.user_ip6[2],
                sa.user_ip6[3],
            ];
            // A dual-stack socket's unconnected send to an IPv4-mapped server went through
            // sendmsg4 (an IPv4 record); its connect went through connect6 (a mapped one).
            let shown = if origin.family == FAMILY_V4 {
                [0, 0, V4_MAPPED, origin.addr[0]]
            } else {
                origin.addr
            };
            let loopback = ip == LOOPBACK6 && origin.family == FAMILY_V6 || ip == MAPPED_LOOPBACK4;
            if loopback && from_port == origin.via_port {
                sa.user_ip6[0] = shown[0];
                sa.user_ip6[1] = shown[1];
                sa.user_ip6[2] = shown[2];
                sa.user_ip6[3] = shown[3];
                sa.user_port = u32::from((origin.port as u16).to_be());
            }
        }
    }
    ALLOW
}

/// connect4 / sendmsg4: send a matching socket to chaosd's loopback port.
#[inline(always)]
fn redirect4(ctx: &SockAddrContext, send: bool) -> i32 {
    // SAFETY: the kernel hands a valid bpf_sock_addr.
    let addr = unsafe { (*ctx.sock_addr).user_ip4 };
    if let Some(port) = redirect(ctx, FAMILY_V4, [addr, 0, 0, 0], None, send) {
        // SAFETY: connect4 and sendmsg4 may rewrite user_ip4 and user_port (4-byte stores).
        unsafe {
            (*ctx.sock_addr).user_ip4 = LOOPBACK4;
            (*ctx.sock_addr).user_port = u32::from((port as u16).to_be());
        }
    }
    ALLOW
}

#[inline(always)]
fn redirect6(ctx: &SockAddrContext, send: bool) -> i32 {
    // SAFETY: the kernel hands a valid bpf_sock_addr; 4-byte loads of user_ip6.
    let addr = unsafe {
        let sa = &*ctx.sock_addr;
        [
            sa.user_ip6[0],
            sa.user_ip6[1],
            sa.user_ip6[2],
            sa.user_ip6[3],
        ]
    };
    // A dual-stack socket's IPv4-mapped destination (::ffff:a.b.c.d) is an IPv4 connect: the
    // rules match it as IPv4, and it goes to the IPv4 listener through ::ffff:127.0.0.1.
    let mapped = is_mapped(addr);
    let redirected = if mapped {
        redirect(ctx, FAMILY_V4, [addr[3], 0, 0, 0], Some(addr), send)
    } else {
        redirect(ctx, FAMILY_V6, addr, None, send)
    };
    if let Some(port) = redirected {
        let to = if mapped { MAPPED_LOOPBACK4 } else { LOOPBACK6 };
        // SAFETY: connect6 and sendmsg6 may rewrite user_ip6 (4-byte stores) and user_port.
        unsafe {
            let sa = &mut *ctx.sock_addr;
            sa.user_ip6[0] = to[0];
            sa.user_ip6[1] = to[1];
            sa.user_ip6[2] = to[2];
            sa.user_ip6[3] = to[3];
            sa.user_port = u32::from((port as u16).to_be());
        }
    }
    ALLOW
}

#[inline(always)]
fn is_mapped(addr: [u32; 4]) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == V4_MAPPED
}

#[sock_ops]
pub fn chaosd_proxy_sock_ops(ctx: SockOpsContext) -> u32 {
    if ctx.op() == SOCK_OPS_TCP_CONNECT_CB {
        let family = ctx.family();
        if family == AF_INET || family == AF_INET6 {
            remember_local_port(&ctx, family == AF_INET6);
        }
    }
    1
}

/// The socket's local IPv6 address, read a word at a time: the verifier allows only 4-byte
/// loads of `local_ip6`, and copying the array whole may compile to 8-byte ones.
#[inline(always)]
fn local_ip6(ctx: &SockOpsContext) -> [u32; 4] {
    // SAFETY: `ops` is the kernel's bpf_sock_ops; each word is a readable 4-byte field.
    unsafe {
        let words = core::ptr::addr_of!((*ctx.ops).local_ip6).cast::<u32>();
        [
            core::ptr::read_volatile(words),
            core::ptr::read_volatile(words.add(1)),
            core::ptr::read_volatile(words.add(2)),
            core::ptr::read_volatile(words.add(3)),
        ]
    }
}

#[cgroup_sock_addr(getpeername6)]
pub fn chaosd_proxy_getpeername6(ctx: SockAddrContext) -> i32 {
    // SAFETY: helper on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: map values are plain data written whole.
    if let Some(origin) = unsafe { PROXY_ORIGINS.get(&cookie) }
        && origin.family == FAMILY_V6
    {
        // SAFETY: getpeername6 may rewrite user_ip6 (4-byte stores) and user_port.
        unsafe {
            let sa = &mut *ctx.sock_addr;
            sa.user_ip6[0] = origin.addr[0];
            sa.user_ip6[1] = origin.addr[1];
            sa.user_ip6[2] = origin.addr[2];
            sa.user_ip6[3] = origin.addr[3];
            sa.user_port = u32::from((origin.port as u16).to_be());
        }
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn chaosd_proxy_getpeername4(ctx: SockAddrContext) -> i32 {
    // SAFETY: helper on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: map values are plain data written whole.
    if let Some(origin) = unsafe { PROXY_ORIGINS.get(&cookie) }
        && origin.family == FAMILY_V4
    {
        // SAFETY: getpeername4 may rewrite user_ip4 and user_port (4-byte stores).
        unsafe {
            (*ctx.sock_addr).user_ip4 = origin.addr[0];
            (*ctx.sock_addr).user_port = u32::from((origin.port as u16).to_be());
        }
    }
    ALLOW
}

/// The loopback port to send the connect (or, `send`, the UDP datagram) to, if a live proxy
/// rule of the caller's cgroup matches and its dice hit; the origin is recorded by then (not
/// for a refusal). TCP connects take every proxy rule; UDP (connect or send) only DNS rules.
/// `family` and `addr` are what the rules match; `mapped`, a dual-stack socket's
/// IPv4-mapped destination as it asked for it, which the record keeps (for getpeername6).
#[inline(always)]
fn redirect(
    ctx: &SockAddrContext,
    family: u32,
    addr: [u32; 4],
    mapped: Option<[u32; 4]>,
    send: bool,
) -> Option<u32> {
    // SAFETY: plain helper calls about the current task and the program's own context.
    let (tgid, netns) = unsafe {
        (
            (bpf_get_current_pid_tgid() >> 32) as u32,
            bpf_get_netns_cookie(ctx.as_ptr()),
        )
    };
    // SAFETY: a global in .rodata, set by the loader.
    let daemon = unsafe { core::ptr::read_volatile(&PROXY_DAEMON_TGID) };
    // SAFETY: map values are plain data.
    if tgid == daemon || unsafe { PROXY_NETNS.get(&netns) }.is_none() {
        return None;
    }
    // SAFETY: the kernel hands a valid bpf_sock_addr.
    let (proto, port) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.protocol, u32::from(u16::from_be(sa.user_port as u16)))
    };
    let udp = proto == IPPROTO_UDP;
    if !(udp || proto == IPPROTO_TCP && !send) {
        return None;
    }
    // SAFETY: plain helper call about the current task.
    let found = deepest_rule_set(|level| unsafe { bpf_get_current_ancestor_cgroup_id(level) });
    let (_, set) = found?;
    let peer = Peer {
        family,
        proto,
        peer: addr,
        local: [0; 4],
        peer_port: port,
        local_port: 0,
    };
    let mut origin = ProxyOrigin {
        family: if mapped.is_some() { FAMILY_V6 } else { family },
        port,
        addr: match mapped {
            Some(m) => m,
            None => addr,
        },
        slots: [NO_SLOT; MAX_RULES_PER_CGROUP],
        via_port: 0,
        netns: netns_words(netns),
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut to_port = 0u32;
    let mut refuse_port = 0u32;
    let mut i = 0;
    while i < MAX_RULES_PER_CGROUP {
        let j = i;
        i += 1;
        let rule = &set.rules[j];
        let dns = rule.flags & PROXY_FLAG_DNS != 0;
        if rule.kind != NetKind::Proxy.code()
            || (udp && !dns)
            || now >= rule.deadline_ns
            || !matches(&rule.filter, &peer)
        {
            continue;
        }
        // A DNS rule takes every query; its resolver rolls the dice and counts per query.
        // SAFETY: plain helper call.
        let hit = dns || unsafe { bpf_get_prandom_u32() } % PPM_ONE < rule.probability_ppm;
        if !dns {
            counters::count(rule.counter_slot, hit);
        }
        if !hit {
            continue;
        }
        if rule.flags & PROXY_FLAG_REFUSE != 0 {
            refuse_port = rule.redirect_port;
        } else {
            to_port = rule.redirect_port;
            if let Some(s) = origin.slots.get_mut(j) {
                *s = rule.counter_slot;
            }
        }
    }
    let target = if refuse_port != 0 {
        refuse_port
    } else {
        to_port
    };
    if target == 0 || target > 65_535 {
        return None;
    }
    if refuse_port == 0 {
        origin.via_port = target;
        // SAFETY: helper on the program's own context.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        // No room in the map: leave the connect alone rather than lose where it was going.
        PROXY_ORIGINS.insert(&cookie, &origin, 0).ok()?;
    }
    Some(target)
}

/// Files a redirected socket's record under its local address and port and its namespace,
/// which the proxy reads as the peer of the connection it accepts. A dual-stack socket's
/// IPv4-mapped connect is an IPv4 connection by then: filed under its IPv4 address.
#[inline(always)]
fn remember_local_port(ctx: &SockOpsContext, v6: bool) {
    // SAFETY: helper on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: map values are plain data written whole.
    let Some(origin) = (unsafe { PROXY_ORIGINS.get(&cookie) }) else {
        return;
    };
    let (family, addr) = if v6 && !is_mapped(origin.addr) {
        (FAMILY_V6, local_ip6(ctx))
    } else {
        (FAMILY_V4, [ctx.local_ip4(), 0, 0, 0])
    };
    let key = ProxyPeerKey {
        family,
        port: ctx.local_port(),
        addr,
        netns: origin.netns,
    };
    let _ = PROXY_PEERS.insert(&key, origin, 0);
}
