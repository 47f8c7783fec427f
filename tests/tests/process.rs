//! Process faults, checked from outside: signalled processes die (only in the target), a
//! one-shot kill ends at once and holds no slot while a repeating one kills again until it
//! ends, a paused cgroup's process stops accumulating CPU time and runs again after recover.

use std::{
    process::{Child, Command},
    time::Duration,
};

use chaosd::{
    api::{FaultSpec, FaultState, ProcessKillParams, ProcessPauseParams},
    client::ClientError,
    host::cgroup::spawn_in_cgroup,
};
use chaosd_integration::{
    Daemon, TestCgroup, block_on, inject_request as inject, request, wait_for,
};
use hyper::StatusCode;

/// A helper process, killed and reaped on drop.
struct ChildGuard(Child);

impl ChildGuard {
    fn spawn_in(cg: &TestCgroup, script: &str) -> ChildGuard {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", script]);
        ChildGuard(spawn_in_cgroup(&mut cmd, cg.dir()).unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether it has exited (reaping it if so).
    fn exited(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill(signal: &str, count: Option<u32>) -> FaultSpec {
    FaultSpec::ProcessKill(ProcessKillParams {
        signal: signal.parse().unwrap(),
        count,
        percent: None,
        every: None,
    })
}

fn kill_every(every: &str) -> FaultSpec {
    FaultSpec::ProcessKill(ProcessKillParams {
        signal: "KILL".parse().unwrap(),
        count: None,
        percent: None,
        every: Some(every.parse().unwrap()),
    })
}

fn expect_refusal(
    daemon: &Daemon,
    req: &chaosd::api::InjectRequest,
    status: StatusCode,
    needle: &str,
) {
    match daemon.try_inject(req) {
        Err(ClientError::Api(msg, got)) => {
            assert_eq!(got, status, "{msg}");
            assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
        }
        other => panic!("expected a {status} mentioning {needle:?}, got {other:?}"),
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = s.rsplit_once(") ").unwrap().1.to_string();
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    f[0] + f[1]
}

#[test]
fn kill_signals_only_the_target_cgroup() {
    let daemon = Daemon::start();
    let target = TestCgroup::new("kill");
    let sibling = TestCgroup::new("kill-sibling");
    let mut victims: Vec<ChildGuard> = (0..3)
        .map(|_| ChildGuard::spawn_in(&target, "exec sleep 60"))
        .collect();
    let mut bystander = ChildGuard::spawn_in(&sibling, "exec sleep 60");

    let fault = inject(&daemon, &request(kill("SIGKILL", None), &[&target], "30s"));
    assert_eq!(fault.counters.seen, 3, "{:?}", fault.counters);
    assert_eq!(fault.counters.affected, 3, "{:?}", fault.counters);
    let all_dead = wait_for(Duration::from_secs(2), || {
        victims.iter_mut().all(ChildGuard::exited).then_some(())
    });
    assert!(all_dead.is_some(), "a process of the target survived");
    assert!(!bystander.exited(), "the sibling's process was killed");
    // One-shot: it ended at once, and shows with its counters among the ended faults.
    assert_eq!(fault.state, FaultState::Completed);
    assert!(fault.ended_at.is_some());
    assert!(block_on(daemon.client().list(false)).unwrap().is_empty());
    let ended = block_on(daemon.client().list(true)).unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].state, FaultState::Completed);
    assert_eq!((ended[0].counters.seen, ended[0].counters.affected), (3, 3));
    assert!(block_on(daemon.client().recover(&fault.id)).is_err());
    assert_eq!(block_on(daemon.client().status()).unwrap().active_faults, 0);
}

#[test]
fn a_one_shot_kill_holds_no_slot_and_a_repeating_one_does() {
    let daemon = Daemon::start_with_config("[policy]\nmax_concurrent_faults = 1\n");
    let paused = TestCgroup::new("slot-pause");
    let target = TestCgroup::new("slot-kill");
    let pause = inject(
        &daemon,
        &request(
            FaultSpec::ProcessPause(ProcessPauseParams {}),
            &[&paused],
            "30s",
        ),
    );
    // The only slot is taken, yet a one-shot kill goes through, and kills.
    let mut victim = ChildGuard::spawn_in(&target, "exec sleep 60");
    let shot = inject(&daemon, &request(kill("KILL", None), &[&target], "30s"));
    assert_eq!(shot.state, FaultState::Completed);
    assert_eq!(shot.counters.affected, 1);
    assert!(wait_for(Duration::from_secs(2), || victim.exited().then_some(())).is_some());
    // A repeating kill needs a slot.
    expect_refusal(
        &daemon,
        &request(kill_every("1s"), &[&target], "30s"),
        StatusCode::CONFLICT,
        "policy.max_concurrent_faults",
    );
    block_on(daemon.client().recover(&pause.id)).unwrap();
    let repeating = inject(&daemon, &request(kill_every("1s"), &[&target], "30s"));
    assert_eq!(repeating.state, FaultState::Active);
    let active = block_on(daemon.client().list(false)).unwrap();
    assert_eq!(active.len(), 1, "{active:?}");
    block_on(daemon.client().recover(&repeating.id)).unwrap();
}

#[test]
fn kill_every_repeats_until_the_fault_ends() {
    let daemon = Daemon::start();
    let target = TestCgroup::new("kill-every");
    let mut first = ChildGuard::spawn_in(&target, "exec sleep 60");
    let fault = inject(&daemon, &request(kill_every("200ms"), &[&target], "2s"));
    assert_eq!(fault.state, FaultState::Active);
    assert_eq!(fault.counters.affected, 1, "{:?}", fault.counters);
    assert!(wait_for(Duration::from_secs(1), || first.exited().then_some(())).is_some());
    // A process that joins later is killed by a later round.
    let mut later = ChildGuard::spawn_in(&target, "exec sleep 60");
    assert!(
        wait_for(Duration::from_secs(1), || later.exited().then_some(())).is_some(),
        "a process started after the first round survived"
    );
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert!(info.counters.affected >= 2, "{:?}", info.counters);
    assert_eq!(info.state, FaultState::Active);

    // At its duration it ends, and kills no more.
    let ended = wait_for(Duration::from_secs(4), || {
        let f = block_on(daemon.client().get(&fault.id)).ok()?;
        (f.state == FaultState::Expired).then_some(f)
    })
    .expect("the repeating kill did not expire");
    let mut survivor = ChildGuard::spawn_in(&target, "exec sleep 60");
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !survivor.exited(),
        "a process was killed after the fault ended"
    );
    let last = block_on(daemon.client().get(&fault.id)).unwrap();
    assert_eq!(last.counters, ended.counters, "counted after it ended");
}

#[test]
fn kill_count_signals_that_many() {
    let daemon = Daemon::start();
    let target = TestCgroup::new("kill-count");
    let mut procs: Vec<ChildGuard> = (0..3)
        .map(|_| ChildGuard::spawn_in(&target, "exec sleep 60"))
        .collect();
    let fault = inject(&daemon, &request(kill("TERM", Some(1)), &[&target], "30s"));
    assert_eq!((fault.counters.seen, fault.counters.affected), (3, 1));
    std::thread::sleep(Duration::from_millis(300));
    let dead = procs
        .iter_mut()
        .map(ChildGuard::exited)
        .filter(|e| *e)
        .count();
    assert_eq!(dead, 1, "--count 1 killed {dead} processes");
}

#[test]
fn pause_freezes_the_target_and_recover_thaws_it() {
    let daemon = Daemon::start();
    let target = TestCgroup::new("pause");
    let spinner = ChildGuard::spawn_in(&target, "while :; do :; done");
    std::thread::sleep(Duration::from_millis(300));

    let fault = inject(
        &daemon,
        &request(
            FaultSpec::ProcessPause(ProcessPauseParams {}),
            &[&target],
            "60s",
        ),
    );
    let frozen = std::fs::read_to_string(target.dir().join("cgroup.events")).unwrap();
    assert!(frozen.contains("frozen 1"), "{frozen}");
    let t0 = cpu_ticks(spinner.pid());
    std::thread::sleep(Duration::from_millis(700));
    let t1 = cpu_ticks(spinner.pid());
    assert!(t1 - t0 <= 1, "a paused process ran for {} ticks", t1 - t0);
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert_eq!((info.counters.seen, info.counters.affected), (1, 1));

    block_on(daemon.client().recover(&fault.id)).unwrap();
    let t2 = cpu_ticks(spinner.pid());
    std::thread::sleep(Duration::from_millis(500));
    let t3 = cpu_ticks(spinner.pid());
    assert!(
        t3 - t2 >= 10,
        "the process did not run after recover ({} ticks)",
        t3 - t2
    );
}

#[test]
fn a_restarted_daemon_thaws_what_a_killed_one_froze() {
    let mut daemon = Daemon::start();
    let target = TestCgroup::new("pause-crash");
    let _sleeper = ChildGuard::spawn_in(&target, "exec sleep 60");
    inject(
        &daemon,
        &request(
            FaultSpec::ProcessPause(ProcessPauseParams {}),
            &[&target],
            "10m",
        ),
    );
    daemon.kill9();
    let freeze = target.dir().join("cgroup.freeze");
    assert_eq!(std::fs::read_to_string(&freeze).unwrap().trim(), "1");
    let _daemon = daemon.restart();
    assert_eq!(
        std::fs::read_to_string(&freeze).unwrap().trim(),
        "0",
        "the restarted daemon left the cgroup frozen"
    );
}

#[test]
fn bad_process_requests_get_clear_errors() {
    let daemon = Daemon::start();
    let target = TestCgroup::new("kill-bad");
    let mut survivor = ChildGuard::spawn_in(&target, "exec sleep 60");
    let cases = [
        (
            request(kill("SIGNOPE", None), &[&target], "30s"),
            "unknown signal",
        ),
        (
            request(kill("KILL", None), &[], "30s"),
            "at least one target",
        ),
        (request(kill("KILL", Some(0)), &[&target], "30s"), "count"),
        (request(kill_every("10ms"), &[&target], "30s"), "every"),
        (
            request(kill_every("30s"), &[&target], "30s"),
            "shorter than the duration",
        ),
        (
            request(FaultSpec::ProcessPause(ProcessPauseParams {}), &[], "30s"),
            "at least one target",
        ),
    ];
    for (req, needle) in cases {
        match daemon.try_inject(&req) {
            Err(ClientError::Api(msg, status)) => {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
                assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
            }
            other => panic!("expected a 400 mentioning {needle:?}, got {other:?}"),
        }
    }
    assert!(block_on(daemon.client().list(true)).unwrap().is_empty());
    assert!(!survivor.exited(), "a refused kill signalled a process");

    // Pausing a cgroup twice is refused: the second would thaw the first's freeze.
    let pause = request(
        FaultSpec::ProcessPause(ProcessPauseParams {}),
        &[&target],
        "30s",
    );
    let first = inject(&daemon, &pause);
    match daemon.try_inject(&pause) {
        Err(ClientError::Api(msg, status)) => {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
            assert!(msg.contains("already frozen"), "{msg}");
        }
        other => panic!("a second pause was not refused: {other:?}"),
    }
    block_on(daemon.client().recover(&first.id)).unwrap();
}
