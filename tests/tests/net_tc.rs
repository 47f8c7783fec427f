//! `net.corrupt` and `net.duplicate` end to end: a UDP sender in a test cgroup inside network
//! namespace `a` sends numbered datagrams over a veth to a receiver in namespace `b`; what
//! arrives (nothing, altered bytes, every datagram twice) is checked from outside.

use std::process::Command;

use chaosd::api::{Counters, FaultSpec, NetCorruptParams, NetDuplicateParams, NetFilter};
use chaosd_integration::{
    Daemon, TestCgroup, block_on, inject,
    netns::{KillOnDrop, NetnsPair, VETH_A, VETH_B, spawn_in, tally},
    unsupported_reason,
};

const COUNT: u32 = 200;

/// Sends `COUNT` datagrams from `cgroup` (namespace a) to namespace b; returns what arrived.
fn exchange(pair: &NetnsPair, cgroup: &TestCgroup, v6: bool) -> Vec<Vec<u8>> {
    pair.udp_exchange(cgroup, v6, COUNT)
}

fn assert_all_once(datagrams: &[Vec<u8>]) {
    let counts = tally(datagrams, COUNT);
    assert_eq!(
        counts.len(),
        COUNT as usize,
        "distinct datagrams: {counts:?}"
    );
    assert!(
        counts.iter().all(|(k, n)| k.is_some() && *n == 1),
        "{counts:?}"
    );
}

#[test]
fn netns_pair_carries_udp_both_families_and_leaves_nothing() {
    let cg = TestCgroup::new("netns-pair");
    let pair = NetnsPair::new();
    assert_ne!(pair.a.netns.inode, pair.b.netns.inode);
    for v6 in [false, true] {
        assert_all_once(&exchange(&pair, &cg, v6));
    }
    let host_links = || {
        let names: Vec<_> = std::fs::read_dir("/sys/class/net")
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names
    };
    let during = host_links();
    assert!(
        !during.iter().any(|n| n == VETH_A || n == VETH_B),
        "a veth end is in the host namespace: {during:?}"
    );
    drop(pair);
    assert_eq!(host_links(), during, "the host's links changed");
}

/// A target cgroup with a process inside namespace `a` (the daemon finds the namespace through
/// it), a sibling cgroup, and the pair's qdiscs and filters as they were before any fault.
struct Setup {
    daemon: Daemon,
    pair: NetnsPair,
    target: TestCgroup,
    sibling: TestCgroup,
    _holder: KillOnDrop,
    before: String,
}

impl Setup {
    /// Every kernel chaosd runs on (cgroup bpf links: 5.7+) can run the TC classifier, so an
    /// unsupported kind is a failure here, not a skip.
    fn new(kind: &str) -> Setup {
        let daemon = Daemon::start();
        if let Some(reason) = unsupported_reason(&daemon, kind) {
            panic!("{kind} is unsupported: {reason}");
        }
        let pair = NetnsPair::new();
        let target = TestCgroup::new("tc-target");
        let sibling = TestCgroup::new("tc-sibling");
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        let holder = KillOnDrop(spawn_in(&mut cmd, &pair.a.netns, Some(&target)));
        let before = device_state(&pair);
        Setup {
            daemon,
            pair,
            target,
            sibling,
            _holder: holder,
            before,
        }
    }

    fn inject(&self, fault: FaultSpec) -> String {
        inject(&self.daemon, &self.target, fault, "60s").id
    }

    fn counters(&self, id: &str) -> Counters {
        block_on(self.daemon.client().get(id)).unwrap().counters
    }

    fn tcx_attached(&self) -> bool {
        self.pair
            .a
            .tcx_egress_programs()
            .iter()
            .any(|p| p.starts_with("chaosd_tc"))
    }

    /// Recovers `id`; then the devices must be as before and the target's traffic clean.
    fn recover_and_check_clean(&self, id: &str) {
        block_on(self.daemon.client().recover(id)).unwrap();
        assert!(!self.tcx_attached(), "the classifier is still attached");
        assert_eq!(
            device_state(&self.pair),
            self.before,
            "qdiscs/filters changed"
        );
        assert_all_once(&exchange(&self.pair, &self.target, false));
    }
}

/// Every qdisc and TC filter of both namespaces, printed (to compare before and after).
fn device_state(pair: &NetnsPair) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}",
        pair.a.qdiscs(),
        pair.a.tc_filters(),
        pair.b.qdiscs(),
        pair.b.tc_filters()
    )
}

fn corrupt(payload: bool) -> FaultSpec {
    FaultSpec::NetCorrupt(NetCorruptParams {
        percent: 100.0,
        payload,
        filter: NetFilter::default(),
    })
}

#[test]
fn corrupt_is_dropped_by_the_receiver_v4_and_v6_and_spares_the_sibling() {
    let s = Setup::new("net.corrupt");
    let id = s.inject(corrupt(false));
    assert!(s.tcx_attached() || !s.pair.a.tc_filters().is_empty());
    for v6 in [false, true] {
        let got = exchange(&s.pair, &s.target, v6);
        assert!(
            got.is_empty(),
            "v6={v6}: {} corrupted datagrams arrived",
            got.len()
        );
        assert_all_once(&exchange(&s.pair, &s.sibling, v6));
    }
    let c = s.counters(&id);
    assert!(
        c.affected >= 2 * u64::from(COUNT) && c.seen == c.affected,
        "{c:?}"
    );
    s.recover_and_check_clean(&id);
}

#[test]
fn corrupt_payload_arrives_altered() {
    let s = Setup::new("net.corrupt");
    let id = s.inject(corrupt(true));
    let got = exchange(&s.pair, &s.target, false);
    // Every datagram arrives (the checksum is fixed up) but none as sent: the program always
    // flips a bit of the tag byte or of the sequence number's upper bytes.
    assert_eq!(
        got.len(),
        COUNT as usize,
        "payload corruption must not drop"
    );
    let intact = tally(&got, COUNT)
        .into_iter()
        .filter(|(k, _)| k.is_some())
        .count();
    assert_eq!(intact, 0, "datagrams arrived unaltered");
    let c = s.counters(&id);
    assert_eq!(c.affected, u64::from(COUNT), "{c:?}");
    s.recover_and_check_clean(&id);
}

#[test]
fn duplicate_sends_everything_exactly_twice_and_spares_the_sibling() {
    let s = Setup::new("net.duplicate");
    let id = s.inject(FaultSpec::NetDuplicate(NetDuplicateParams {
        percent: 100.0,
        filter: NetFilter::default(),
    }));
    for v6 in [false, true] {
        let counts = tally(&exchange(&s.pair, &s.target, v6), COUNT);
        assert_eq!(counts.len(), COUNT as usize, "v6={v6}: {counts:?}");
        assert!(
            counts.iter().all(|(k, n)| k.is_some() && *n == 2),
            "v6={v6}: {counts:?}"
        );
        assert_all_once(&exchange(&s.pair, &s.sibling, v6));
    }
    let c = s.counters(&id);
    assert_eq!(c.affected, 2 * u64::from(COUNT), "{c:?}");
    s.recover_and_check_clean(&id);
}
