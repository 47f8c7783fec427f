//! Network fault rules, looked up by cgroup id from the cgroup_skb programs.
//!
//! A targeted cgroup maps to one [`NetRuleSet`]: up to [`MAX_RULES_PER_CGROUP`] rules from
//! different faults, so faults on one cgroup stack instead of overwriting each other. A rule on
//! a cgroup also covers its descendants: the program walks the packet's cgroup ancestry and
//! uses the deepest set it finds, so the daemon copies an ancestor's rules into the sets of
//! targeted descendants.

/// Name of the `HashMap<u64, NetRuleSet>` map, keyed by cgroup v2 id (the directory's inode).
pub const NET_RULES_MAP: &str = "NET_RULES";
/// Name of the `Array<u64>` of each bandwidth fault's pacing clock, indexed by counter slot;
/// the daemon zeroes a slot's clock when a bandwidth fault takes the slot.
pub const NET_PACING_MAP: &str = "NET_PACING";
/// Name of the one-entry `Array<u32>` whose bit L is set while some cgroup at ancestry level L
/// has a rule set: the programs look up only those levels, so a packet of an untargeted
/// cgroup costs one lookup per level that holds a target, not one per level of its ancestry.
pub const NET_LEVELS_MAP: &str = "NET_LEVELS";
/// Cgroups that can carry network rules at once.
pub const MAX_NET_CGROUPS: u32 = 4096;
/// Faults that can stack on one cgroup.
pub const MAX_RULES_PER_CGROUP: usize = 8;
/// Ancestry levels the programs walk above the root (targets deeper than this are refused).
pub const MAX_CGROUP_LEVEL: u32 = 16;

/// What a [`NetRule`] does. The rule stores its code ([`NetKind::code`], in
/// [`NetRule::kind`]) rather than the enum: a map value is plain bytes that user space writes,
/// and a program must never read an out-of-range value as an enum.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NetKind {
    /// Drop packets with the rule's probability (loss, partition).
    Drop = 1,
    /// Fail `connect()` (and unconnected UDP `sendmsg()`) with `-errno`.
    ConnectError = 2,
    /// Hold egress packets back by `delay_ns` ± `jitter_ns` (departure time).
    Delay = 3,
    /// Pace egress packets to `rate_bytes_per_sec` (departure time).
    Bandwidth = 4,
    /// Corrupt packets (TC egress); [`NET_FLAG_PAYLOAD`] picks silent payload corruption over
    /// the default checksum-detectable kind.
    Corrupt = 5,
    /// Send packets twice (TC egress clone).
    Duplicate = 6,
    /// Redirect TCP connects to chaosd's proxy (`tcp.*`; see [`crate::proxy`]).
    Proxy = 7,
}

impl NetKind {
    pub const ALL: [NetKind; 7] = [
        NetKind::Drop,
        NetKind::ConnectError,
        NetKind::Delay,
        NetKind::Bandwidth,
        NetKind::Corrupt,
        NetKind::Duplicate,
        NetKind::Proxy,
    ];

    /// The value [`NetRule::kind`] holds.
    pub const fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<NetKind> {
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i].code() == code {
                return Some(Self::ALL[i]);
            }
            i += 1;
        }
        None
    }
}

/// [`NetRule::flags`] of [`NetKind::Corrupt`]: corrupt the payload and keep checksums valid-looking.
pub const NET_FLAG_PAYLOAD: u32 = 1;

/// The `skb->mark` bit the TC program sets on a packet copy it sends (`net.duplicate`), so it
/// knows the copy when it comes round again and lets it pass without copying it once more; it
/// clears the bit then, and the original keeps its mark throughout.
pub const TC_DUPLICATE_MARK: u32 = 0x0400_0000;

/// [`PeerFilter::family`]: any address family.
pub const FAMILY_ANY: u32 = 0;
pub const FAMILY_V4: u32 = 4;
pub const FAMILY_V6: u32 = 6;

/// [`PeerFilter::proto`]: any protocol; otherwise an IP protocol number (6 TCP, 17 UDP;
/// 1 matches ICMP and ICMPv6).
pub const PROTO_ANY: u32 = 0;

/// [`NetRule::direction`] bit: packets a socket of the cgroup sends.
pub const DIR_EGRESS: u32 = 1;
/// [`NetRule::direction`] bit: packets delivered to a socket of the cgroup.
pub const DIR_INGRESS: u32 = 2;

/// Probabilities are parts per million: 1 % is 10_000.
pub const PPM_ONE: u32 = 1_000_000;

/// An address prefix: `addr` is already masked; IPv4 uses word 0 only. Words are in network
/// byte order as they sit in the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefix {
    pub addr: [u32; 4],
    pub mask: [u32; 4],
}

/// Which packets a rule applies to, seen from the target cgroup: the *peer* is the remote end
/// (destination of egress packets, source of ingress ones), *local* the cgroup's own address.
/// Zero everywhere matches everything.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerFilter {
    /// `FAMILY_*`: 4 or 6 when a prefix is set (a prefix only matches its own family).
    pub family: u32,
    /// `PROTO_*`.
    pub proto: u32,
    /// Peer port range, inclusive, host byte order; `0..=0` is any port.
    pub port_lo: u32,
    pub port_hi: u32,
    /// 1 when `peer` is set.
    pub has_peer: u32,
    /// 1 when `local` is set.
    pub has_local: u32,
    pub peer: Prefix,
    pub local: Prefix,
}

const _: () = assert!(core::mem::size_of::<PeerFilter>() == 24 + 64);

/// One fault's rule on one cgroup. `kind == 0` marks an empty slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetRule {
    /// CLOCK_MONOTONIC ns (`bpf_ktime_get_ns`) after which the program ignores the rule, so a
    /// rule the daemon could not remove never outlives its fault.
    pub deadline_ns: u64,
    /// Index into the fault counters map.
    pub counter_slot: u32,
    /// [`NetKind::code`].
    pub kind: u32,
    /// `DIR_*` bits.
    pub direction: u32,
    /// Chance in parts per million that a matching packet is affected.
    pub probability_ppm: u32,
    /// [`NetKind::ConnectError`]: the errno to fail with, negative (e.g. -111).
    pub retval: i32,
    /// `NET_FLAG_*` of the kind.
    pub flags: u32,
    /// [`NetKind::Delay`]: added to the departure time.
    pub delay_ns: u64,
    /// [`NetKind::Delay`]: uniform extra delay in `0..=jitter_ns` (flow order is kept).
    pub jitter_ns: u64,
    /// [`NetKind::Bandwidth`]: pacing rate.
    pub rate_bytes_per_sec: u64,
    /// [`NetKind::Bandwidth`]: bytes that may leave back to back before pacing starts.
    pub burst_bytes: u64,
    pub filter: PeerFilter,
    /// [`NetKind::Proxy`]: the loopback port (host byte order) a matching connect goes to.
    pub redirect_port: u32,
    /// Keeps the size a multiple of 8 without implicit padding.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<NetRule>() == 64 + 88 + 8);

/// All rules on one cgroup; the program checks each non-empty slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetRuleSet {
    pub rules: [NetRule; MAX_RULES_PER_CGROUP],
}

const _: () = assert!(core::mem::size_of::<NetRuleSet>() == 160 * MAX_RULES_PER_CGROUP);

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C) plain integers with no implicit padding (sizes asserted above).
    unsafe impl aya::Pod for super::NetRule {}
    // SAFETY: an array of Pod rules.
    unsafe impl aya::Pod for super::NetRuleSet {}
}

#[cfg(test)]
mod kind_tests {
    use super::NetKind;

    #[test]
    fn every_code_names_one_kind_and_zero_names_none() {
        for kind in NetKind::ALL {
            assert_eq!(NetKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(NetKind::from_code(0), None, "a zeroed rule slot is no rule");
        assert_eq!(NetKind::from_code(8), None);
    }
}
