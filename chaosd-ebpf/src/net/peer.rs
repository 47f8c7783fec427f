//! The packet or connection a rule is matched against, seen from the target cgroup.

use aya_ebpf::programs::sk_buff::SkBuff;
use chaosd_common::net::{DIR_EGRESS, FAMILY_V4, FAMILY_V6, PeerFilter, Prefix};

/// Addresses are raw words in network byte order; IPv4 uses word 0.
pub struct Peer {
    pub family: u32,
    pub proto: u32,
    pub peer: [u32; 4],
    pub local: [u32; 4],
    /// Host byte order; 0 when the protocol has no ports.
    pub peer_port: u32,
    /// Host byte order; 0 when the protocol has no ports.
    pub local_port: u32,
}

/// Reads family, protocol, addresses and the peer port from the IP header at `base` (0 where
/// `skb` data starts at the IP header, as in cgroup_skb; 14 after an Ethernet header at TC),
/// and the first four bytes of TCP/UDP. Returns the packet seen from the socket's side and the
/// offset of its L4 header. IPv6 extension headers are not followed.
#[inline(always)]
pub fn parse(skb: &SkBuff, base: usize, direction: u32) -> Option<(Peer, usize)> {
    let version = skb.load::<u8>(base).ok()? >> 4;
    let (family, proto, src, dst, l4) = if version == 4 {
        let ihl = usize::from(skb.load::<u8>(base).ok()? & 0x0f) * 4;
        let proto = u32::from(skb.load::<u8>(base + 9).ok()?);
        let src = [skb.load::<u32>(base + 12).ok()?, 0, 0, 0];
        let dst = [skb.load::<u32>(base + 16).ok()?, 0, 0, 0];
        (FAMILY_V4, proto, src, dst, base + ihl)
    } else if version == 6 {
        let proto = u32::from(skb.load::<u8>(base + 6).ok()?);
        let src = skb.load::<[u32; 4]>(base + 8).ok()?;
        let dst = skb.load::<[u32; 4]>(base + 24).ok()?;
        (FAMILY_V6, proto, src, dst, base + 40)
    } else {
        return None;
    };
    let (sport, dport) = if proto == 6 || proto == 17 {
        let sport = u16::from_be(skb.load::<u16>(l4).unwrap_or(0));
        let dport = u16::from_be(skb.load::<u16>(l4 + 2).unwrap_or(0));
        (u32::from(sport), u32::from(dport))
    } else {
        (0, 0)
    };
    let peer = if direction == DIR_EGRESS {
        Peer {
            family,
            proto,
            peer: dst,
            local: src,
            peer_port: dport,
            local_port: sport,
        }
    } else {
        Peer {
            family,
            proto,
            peer: src,
            local: dst,
            peer_port: sport,
            local_port: dport,
        }
    };
    Some((peer, l4))
}

#[inline(always)]
pub fn matches(f: &PeerFilter, p: &Peer) -> bool {
    if f.family != 0 && f.family != p.family {
        return false;
    }
    // Protocol 1 stands for ICMP of either family.
    if f.proto != 0 && f.proto != p.proto && !(f.proto == 1 && p.proto == 58) {
        return false;
    }
    if f.port_hi != 0 && (p.peer_port < f.port_lo || p.peer_port > f.port_hi) {
        return false;
    }
    if f.has_peer != 0 && !in_prefix(&f.peer, &p.peer) {
        return false;
    }
    if f.has_local != 0 && !in_prefix(&f.local, &p.local) {
        return false;
    }
    true
}

#[inline(always)]
fn in_prefix(prefix: &Prefix, addr: &[u32; 4]) -> bool {
    (addr[0] & prefix.mask[0]) == prefix.addr[0]
        && (addr[1] & prefix.mask[1]) == prefix.addr[1]
        && (addr[2] & prefix.mask[2]) == prefix.addr[2]
        && (addr[3] & prefix.mask[3]) == prefix.addr[3]
}
