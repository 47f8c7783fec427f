//! Per-cgroup packet loss, checked from outside: datagrams that do not arrive.

use std::time::Duration;

use chaosd::api::{Direction, FaultState};
use chaosd_common::heartbeat::HEARTBEAT_STALE_NS;
use chaosd_integration::{
    Daemon, TestCgroup, block_on, udp_from_cgroups, udp_into_cgroup, wait_for,
};

const DATAGRAMS: u32 = 2_000;

fn share(received: u32, sent: u32) -> f64 {
    100.0 * f64::from(received) / f64::from(sent)
}

#[test]
fn loss_drops_the_asked_share_and_spares_the_sibling() {
    let daemon = Daemon::start();
    let target = TestCgroup::new("target");
    let sibling = TestCgroup::new("sibling");

    let fault = daemon.inject_loss(&target, 30.0, Direction::Egress, "60s");
    let got = udp_from_cgroups(&[&target, &sibling], DATAGRAMS);
    let received = share(got[0], DATAGRAMS);
    assert!(
        (received - 70.0).abs() <= 5.0,
        "target received {received:.1} % of its datagrams, expected 70 ± 5"
    );
    assert_eq!(got[1], DATAGRAMS, "the sibling cgroup lost datagrams");

    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert_eq!(
        info.counters.seen,
        u64::from(DATAGRAMS),
        "every datagram of the target is counted once"
    );
    assert_eq!(
        info.counters.affected,
        u64::from(DATAGRAMS - got[0]),
        "dropped counter matches what did not arrive"
    );

    let ended = block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_eq!(ended.state, FaultState::Recovered);
    assert_eq!(
        udp_from_cgroups(&[&target], DATAGRAMS)[0],
        DATAGRAMS,
        "loss continued after recover"
    );
    assert!(
        !block_on(daemon.client().status())
            .unwrap()
            .net_programs_attached,
        "programs stay attached with no fault"
    );
}

#[test]
fn loss_covers_descendant_cgroups() {
    let daemon = Daemon::start();
    let parent = TestCgroup::new("parent");
    let child = parent.child("worker");
    daemon.inject_loss(&parent, 100.0, Direction::Egress, "60s");
    assert_eq!(
        udp_from_cgroups(&[&child], 300)[0],
        0,
        "a child of the target kept sending"
    );
}

#[test]
fn ingress_loss_hits_what_the_cgroup_receives() {
    let daemon = Daemon::start();
    let target = TestCgroup::new("ingress");
    let fault = daemon.inject_loss(&target, 30.0, Direction::Ingress, "60s");
    let received = share(udp_into_cgroup(&target, DATAGRAMS), DATAGRAMS);
    assert!(
        (received - 70.0).abs() <= 5.0,
        "receiver in the target got {received:.1} %, expected 70 ± 5"
    );
    // Egress of the same cgroup is untouched by an ingress-only fault.
    assert_eq!(udp_from_cgroups(&[&target], 500)[0], 500);
    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_eq!(udp_into_cgroup(&target, 500), 500);
}

#[test]
fn loss_stops_at_the_deadline() {
    let daemon = Daemon::start();
    let target = TestCgroup::new("deadline");
    let fault = daemon.inject_loss(&target, 100.0, Direction::Both, "1500ms");
    assert_eq!(
        udp_from_cgroups(&[&target], 200)[0],
        0,
        "100 % loss let datagrams through"
    );
    let expired = wait_for(Duration::from_secs(15), || {
        let f = block_on(daemon.client().get(&fault.id)).unwrap();
        (f.state == FaultState::Expired).then_some(f)
    });
    let expired = expired.expect("the fault did not expire within 15 s of a 1.5 s duration");
    assert!(expired.ended_at.is_some());
    assert!(block_on(daemon.client().list(false)).unwrap().is_empty());
    assert_eq!(
        udp_from_cgroups(&[&target], 200)[0],
        200,
        "loss outlived its deadline"
    );
}

/// The kernel enforces the deadline even when the daemon cannot: with chaosd stopped
/// (SIGSTOP), the rule stays in the map but is ignored once its deadline passes.
#[test]
fn a_stopped_daemon_s_faults_pause_until_it_runs_again() {
    let daemon = Daemon::start();
    let target = TestCgroup::new("deadman");
    daemon.inject_loss(&target, 100.0, Direction::Egress, "10m");
    assert_eq!(udp_from_cgroups(&[&target], 200)[0], 0);
    nix::sys::signal::kill(daemon.pid(), nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_nanos(HEARTBEAT_STALE_NS) + Duration::from_millis(100));
    let got = udp_from_cgroups(&[&target], 200)[0];
    nix::sys::signal::kill(daemon.pid(), nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(
        got, 200,
        "with the daemon stopped past the heartbeat limit, its rule still dropped packets"
    );
    let resumed = wait_for(Duration::from_secs(5), || {
        (udp_from_cgroups(&[&target], 50)[0] == 0).then_some(())
    });
    assert!(
        resumed.is_some(),
        "the fault did not resume with the daemon"
    );
}

#[test]
fn kill_9_of_the_daemon_ends_its_faults_at_once_and_restart_cleans_the_journal() {
    let mut daemon = Daemon::start();
    let target = TestCgroup::new("crash");
    let fault = daemon.inject_loss(&target, 100.0, Direction::Egress, "10m");
    assert_eq!(udp_from_cgroups(&[&target], 200)[0], 0);
    let journal = daemon
        .state_dir()
        .join("faults")
        .join(format!("{}.json", fault.id));
    assert!(journal.exists(), "an active fault must be journaled");

    daemon.kill9();
    assert_eq!(
        udp_from_cgroups(&[&target], 200)[0],
        200,
        "traffic still dropped after chaosd was killed"
    );

    let daemon = daemon.restart();
    assert!(
        !journal.exists(),
        "the restarted daemon left the dead instance's journal entry"
    );
    assert!(
        daemon.log_text().contains(&fault.id),
        "the restart did not report what it cleaned:\n{}",
        daemon.log_text()
    );
    assert!(block_on(daemon.client().list(false)).unwrap().is_empty());
    // Whoever reverted it (the guardian, or this start) says so in the ended list.
    let ended = block_on(daemon.client().list(true)).unwrap();
    assert!(
        ended
            .iter()
            .all(|f| f.id == fault.id && f.ended_at.is_some() && f.outcome.is_some()),
        "{ended:?}"
    );
}

#[test]
fn faults_on_two_cgroups_are_independent() {
    let daemon = Daemon::start();
    let a = TestCgroup::new("a");
    let b = TestCgroup::new("b");
    let fa = daemon.inject_loss(&a, 100.0, Direction::Egress, "60s");
    let _fb = daemon.inject_loss(&b, 100.0, Direction::Egress, "60s");
    assert_eq!(udp_from_cgroups(&[&a, &b], 200), vec![0, 0]);
    block_on(daemon.client().recover(&fa.id)).unwrap();
    assert_eq!(
        udp_from_cgroups(&[&a, &b], 200),
        vec![200, 0],
        "recovering one fault touched the other"
    );
}
