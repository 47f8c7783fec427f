//! The old-kernel path of `net.corrupt`/`net.duplicate` on this host: the daemon is told to
//! attach through netlink + clsact (as on kernels before 6.6, which have no TCX), so the
//! qdisc chaosd adds, the filter, their removal, and the cleanup after a crash are checked
//! here too. Its own test binary: the switch is an environment variable the daemons inherit.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use chaosd::api::{FaultSpec, NetDuplicateParams, NetFilter};
use chaosd_common::heartbeat::HEARTBEAT_STALE_NS;
use chaosd_integration::{
    Daemon, TestCgroup, inject,
    netns::{KillOnDrop, NetnsPair, spawn_in, tally},
    wait_for,
};

const COUNT: u32 = 100;

/// Whether namespace a has a clsact qdisc.
fn has_clsact(pair: &NetnsPair) -> bool {
    format!("{:?}", pair.a.qdiscs()).contains("clsact")
}

#[test]
fn netlink_attach_adds_and_removes_clsact_and_a_restart_cleans_a_crash() {
    // SAFETY: set before any other thread of this binary exists (its only test).
    unsafe { std::env::set_var("CHAOSD_TC_FORCE_NETLINK", "1") };
    let daemon = Daemon::start();
    let pair = NetnsPair::new();
    let target = TestCgroup::new("tc-netlink");
    let mut cmd = Command::new("sleep");
    cmd.arg("60");
    let _holder = KillOnDrop(spawn_in(&mut cmd, &pair.a.netns, Some(&target)));
    assert!(!has_clsact(&pair), "a fresh veth has no clsact");
    let dup = FaultSpec::NetDuplicate(NetDuplicateParams {
        percent: 100.0,
        filter: NetFilter::default(),
    });

    let id = inject(&daemon, &target, dup.clone(), "60s").id;
    assert!(has_clsact(&pair), "clsact was not added");
    assert!(!pair.a.tc_filters().is_empty(), "no filter on the veth");
    chaosd_integration::block_on(daemon.client().recover(&id)).unwrap();
    assert!(!has_clsact(&pair), "the clsact chaosd added is still there");
    assert!(pair.a.tc_filters().is_empty());

    // A crash leaves the filter and clsact (netlink attachments outlive the process); the
    // kernel's dead-man switch ends the fault once the daemon's heartbeat is stale, long
    // before its 60 s deadline; the next start removes them.
    inject(&daemon, &target, dup, "60s");
    let twice = tally(&pair.udp_exchange(&target, false, COUNT), COUNT);
    assert!(
        twice.len() == COUNT as usize && twice.values().all(|n| *n == 2),
        "the fault is not active: {twice:?}"
    );
    let mut daemon = daemon;
    daemon.kill9();
    let killed = Instant::now();
    assert!(
        has_clsact(&pair),
        "the filter went with the daemon: not the netlink path?"
    );
    std::thread::sleep(Duration::from_nanos(HEARTBEAT_STALE_NS).saturating_sub(killed.elapsed()));
    let once = tally(&pair.udp_exchange(&target, false, COUNT), COUNT);
    assert!(
        once.len() == COUNT as usize && once.values().all(|n| *n == 1),
        "a second after the daemon died, its orphaned filter must do nothing: {once:?}"
    );
    let daemon = daemon.restart();
    let cleaned = wait_for(Duration::from_secs(5), || {
        (!has_clsact(&pair)).then_some(())
    });
    assert!(
        cleaned.is_some(),
        "the restarted daemon left the clsact; its log:\n{}",
        daemon.log_text()
    );
    assert!(pair.a.tc_filters().is_empty());
}
