//! The packet or connection a rule is matched against, seen from the target cgroup.

use chaosd_common::net::{PeerFilter, Prefix};

/// Addresses are raw words in network byte order; IPv4 uses word 0.
pub struct Peer {
    pub family: u32,
    pub proto: u32,
    pub peer: [u32; 4],
    pub local: [u32; 4],
    /// Host byte order; 0 when the protocol has no ports.
    pub peer_port: u32,
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
