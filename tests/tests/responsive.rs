//! The daemon stays responsive while an inject does slow kernel work, and an inject slower
//! than `faults.apply_timeout` is rolled back whole.
//!
//! The slow inject is real work, not a test hook: clock skew on a cgroup of a few hundred
//! processes ptrace-attaches and patches each one in turn.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use chaosd::{
    api::{ClockName, ClockSkewParams, FaultSpec},
    host::cgroup::spawn_in_cgroup,
};
use chaosd_integration::{
    Daemon, TestCgroup, block_on, netns::KillOnDrop, request, skip, unsupported_reason, vdso_bytes,
    wait_for,
};

/// Enough processes that patching them all takes seconds on the host.
const PROCESSES: usize = 300;

fn skew() -> FaultSpec {
    FaultSpec::ClockSkew(ClockSkewParams {
        offset: Some("-1h".parse().unwrap()),
        drift: None,
        rate: None,
        clocks: vec![ClockName::Realtime],
    })
}

/// `PROCESSES` sleepers in `cgroup`, killed on drop.
fn sleepers(cgroup: &TestCgroup) -> Vec<KillOnDrop> {
    (0..PROCESSES)
        .map(|_| {
            KillOnDrop(spawn_in_cgroup(Command::new("sleep").arg("600"), cgroup.dir()).unwrap())
        })
        .collect()
}

#[test]
fn status_list_and_metrics_answer_while_a_slow_inject_applies() {
    let daemon = Daemon::start();
    if let Some(reason) = unsupported_reason(&daemon, "clock.skew") {
        skip!("clock.skew unsupported here: {reason}");
    }
    let target = TestCgroup::new("responsive");
    let _procs = sleepers(&target);
    let req = request(skew(), &[&target], "30s");
    let socket = daemon.socket();
    let started = Instant::now();
    let inject = std::thread::spawn(move || {
        let client = chaosd::client::Client::new(&socket);
        let out = block_on(client.inject(&req));
        (out, started.elapsed())
    });
    // Read-only requests, one after the other, for as long as the inject runs.
    let client = daemon.client();
    let mut answered = Vec::new();
    while !inject.is_finished() {
        let t = Instant::now();
        block_on(client.status()).unwrap();
        block_on(client.list(false)).unwrap();
        let (code, _) = block_on(client.raw(hyper::Method::GET, "/metrics", None)).unwrap();
        assert!(code.is_success());
        answered.push(t.elapsed());
    }
    let (out, inject_took) = inject.join().unwrap();
    let info = out.unwrap_or_else(|e| panic!("inject failed: {e}\n{}", daemon.log_text()));
    assert_eq!(info.counters.affected, PROCESSES as u64, "{info:?}");
    let slowest = answered.iter().max().copied().unwrap_or_default();
    eprintln!(
        "measured: inject took {inject_took:.2?}; {} status+list+metrics rounds meanwhile, slowest {slowest:.2?}",
        answered.len()
    );
    // Had they waited on the inject, at most one round would have fitted in it, taking about
    // as long as the inject itself.
    assert!(
        answered.len() >= 5,
        "only {} rounds answered during a {inject_took:.2?} inject",
        answered.len()
    );
    assert!(
        slowest < inject_took / 2,
        "a round took {slowest:.2?} of the {inject_took:.2?} inject"
    );
}

#[test]
fn an_inject_slower_than_the_apply_timeout_is_rolled_back_whole() {
    let daemon = Daemon::start_with_config("[faults]\napply_timeout = \"100ms\"\n");
    if let Some(reason) = unsupported_reason(&daemon, "clock.skew") {
        skip!("clock.skew unsupported here: {reason}");
    }
    let target = TestCgroup::new("apply-timeout");
    let procs = sleepers(&target);
    let pids: Vec<u32> = procs.iter().map(|p| p.0.id()).collect();
    let before: Vec<Vec<u8>> = pids.iter().map(|&p| vdso_bytes(p)).collect();
    let err = daemon
        .try_inject(&request(skew(), &[&target], "30s"))
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("apply_timeout") && msg.contains("rolled back"),
        "{msg}"
    );
    // The late apply finishes in the background, then is reverted: every process gets its
    // vDSO back, the journal empties, nothing is listed.
    let restored = wait_for(Duration::from_secs(60), || {
        daemon
            .log_text()
            .contains("rolled back an inject that applied after its time-out")
            .then_some(())
    });
    assert!(
        restored.is_some(),
        "no rollback logged:\n{}",
        daemon.log_text()
    );
    for (pid, bytes) in pids.iter().zip(&before) {
        assert_eq!(&vdso_bytes(*pid), bytes, "pid {pid} still patched");
    }
    assert!(block_on(daemon.client().list(true)).unwrap().is_empty());
    let journal = std::fs::read_dir(daemon.state_dir().join("faults"))
        .unwrap()
        .count();
    assert_eq!(journal, 0, "journal left behind");
}
