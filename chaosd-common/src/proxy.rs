//! The transparent TCP proxy (`tcp.*` kinds): what the kernel remembers of a redirected
//! connection so the daemon's proxy can reach its real destination and the application still
//! sees the address it asked for.
//!
//! 1. `connect4` (chaosd_proxy_connect4) matches a target's TCP connect against its
//!    [`crate::net::NetKind::Proxy`] rules, records a [`ProxyOrigin`] by socket cookie in
//!    [`PROXY_ORIGINS_MAP`] and rewrites the destination to the proxy's loopback listener
//!    ([`crate::net::NetRule::redirect_port`]).
//! 2. `sock_ops` (chaosd_proxy_sock_ops), when that socket sends its SYN, copies the record to
//!    [`PROXY_PEERS_MAP`] under the socket's local address and port: what the proxy sees as
//!    the peer of the connection it accepts.
//! 3. `getpeername4` (chaosd_proxy_getpeername4) answers with the original destination.
//!
//! DNS faults (`dns.*`) reuse the same records: their rules carry [`PROXY_FLAG_DNS`], the
//! same connect programs and `sendmsg4/6` (chaosd_dns_sendmsg4) redirect a target's port-53
//! UDP and TCP to chaosd's resolver, and `recvmsg4/6` (chaosd_dns_recvmsg4) shows the
//! resolver's replies as coming from the server the application asked. The resolver finds a
//! UDP query's record by the client socket's cookie (NETLINK_SOCK_DIAG): a UDP socket's local
//! port is often not bound yet at connect time, so it cannot be keyed by port as TCP is.

use crate::net::MAX_RULES_PER_CGROUP;

/// `LruHashMap<u64, ProxyOrigin>`: socket cookie of a redirected client socket → origin.
pub const PROXY_ORIGINS_MAP: &str = "PROXY_ORIGINS";
/// `LruHashMap<ProxyPeerKey, ProxyOrigin>`: the client socket's local address → origin.
pub const PROXY_PEERS_MAP: &str = "PROXY_PEERS";
/// Redirected connections remembered at once (LRU: the oldest are forgotten first).
pub const MAX_PROXY_CONNECTIONS: u32 = 65_536;
/// Global: chaosd's tgid; its own (upstream) connections are never redirected.
pub const PROXY_DAEMON_TGID_GLOBAL: &str = "PROXY_DAEMON_TGID";
/// `HashMap<u64, u32>`: network namespaces (by netns cookie) where chaosd listens: its own,
/// and those of target processes in other namespaces (containers) while a fault serves them.
/// Connects in any other namespace are left alone: nothing of chaosd's would answer there.
pub const PROXY_NETNS_MAP: &str = "PROXY_NETNS";
/// Namespaces served at once.
pub const MAX_SERVED_NETNS: u32 = 1024;
/// [`ProxyOrigin::slots`]: no fault in this entry.
pub const NO_SLOT: u32 = u32::MAX;
/// [`crate::net::NetRule::flags`] of a proxy rule: refuse the connection (`tcp.down`), i.e.
/// redirect it to a bound port nobody listens on.
pub const PROXY_FLAG_REFUSE: u32 = 1;
/// [`crate::net::NetRule::flags`] of a proxy rule of a DNS fault (`dns.*`): it redirects UDP
/// (sendmsg and connect) and TCP to chaosd's resolver, whose port is the rule's
/// `redirect_port` for both protocols. The kernel counts nothing for it: the resolver counts
/// queries.
pub const PROXY_FLAG_DNS: u32 = 2;

/// Where a redirected connection was going, and which faults (counter slots) hit it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyOrigin {
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u32,
    /// Host byte order.
    pub port: u32,
    /// Network byte order words; IPv4 uses word 0.
    pub addr: [u32; 4],
    /// Counter slots of the faults whose dice hit this connection; [`NO_SLOT`] pads.
    pub slots: [u32; MAX_RULES_PER_CGROUP],
    /// The loopback port (host byte order) the socket was sent to: a reply from
    /// `127.0.0.1`/`::1` on this port is shown as coming from the original address
    /// (`recvmsg4/6`, DNS over UDP).
    pub via_port: u32,
    /// The netns cookie of the socket's namespace, as two words (low first) so the record
    /// keeps 4-byte alignment: the key of the peer record ([`ProxyPeerKey::netns`]).
    pub netns: [u32; 2],
}

const _: () = assert!(core::mem::size_of::<ProxyOrigin>() == 36 + 4 * MAX_RULES_PER_CGROUP);

/// A client socket's local address, as the proxy sees the peer of an accepted connection, and
/// its namespace: clients in two namespaces may have the same loopback address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProxyPeerKey {
    pub family: u32,
    /// Host byte order.
    pub port: u32,
    /// Network byte order words; IPv4 uses word 0.
    pub addr: [u32; 4],
    /// The netns cookie as in [`ProxyOrigin::netns`].
    pub netns: [u32; 2],
}

const _: () = assert!(core::mem::size_of::<ProxyPeerKey>() == 32);

/// A netns cookie as the two words the records keep.
pub const fn netns_words(cookie: u64) -> [u32; 2] {
    [cookie as u32, (cookie >> 32) as u32]
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C) plain integers with no implicit padding (sizes asserted above).
    unsafe impl aya::Pod for super::ProxyOrigin {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProxyPeerKey {}
}
