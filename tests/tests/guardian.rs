//! The guardian (`chaosd::daemon::guardian`): what outlives chaosd (a frozen cgroup, a patched vDSO,
//! stress workers, a fill file, a lowered RLIMIT_NOFILE) ends within a second of a `kill -9`, and at its deadline while
//! the daemon is stopped; a killed guardian is replaced; a torn journal entry spoils nothing
//! else. Checked from outside (freeze files, vDSO bytes, /proc, free space).

use std::{
    fs,
    process::Command,
    time::{Duration, Instant},
};

use chaosd::{
    api::{
        ClockName, ClockSkewParams, DiskFillParams, FaultSpec, FaultState, FdLimitParams,
        ProcessPauseParams, StressCpuParams,
    },
    host::cgroup::spawn_in_cgroup,
};
use chaosd_integration::{
    Daemon, TestCgroup, Tmpfs, alive, block_on, children_of, max_open_files, netns::KillOnDrop,
    request, vdso_bytes, wait_for,
};
use nix::sys::signal::{Signal, kill};

/// How long after the daemon's death (or a deadline) everything must be reverted: a second,
/// plus slack for a loaded machine; more under the VM harness's emulation.
fn limit() -> Duration {
    if std::env::var_os("CHAOSD_VM").is_some() {
        Duration::from_millis(2500)
    } else {
        Duration::from_millis(1300)
    }
}

const CONFIG: &str = "[stress]\ndisk_floor = \"1MiB\"\n";

/// Targets with something in them, and a tmpfs to fill.
struct Scene {
    paused: TestCgroup,
    skewed: TestCgroup,
    stressed: TestCgroup,
    /// fd.limit lowers its sleeper's RLIMIT_NOFILE.
    fd_limited: TestCgroup,
    fill: Tmpfs,
    _holders: Vec<KillOnDrop>,
    skewed_holder: u32,
    fd_holder: u32,
}

impl Scene {
    fn new(label: &str) -> Scene {
        let paused = TestCgroup::new(&format!("{label}-pause"));
        let skewed = TestCgroup::new(&format!("{label}-skew"));
        let stressed = TestCgroup::new(&format!("{label}-stress"));
        let fd_limited = TestCgroup::new(&format!("{label}-fd"));
        let holders: Vec<KillOnDrop> = [&paused, &skewed, &fd_limited]
            .map(|cg| KillOnDrop(spawn_in_cgroup(&mut sleeper(), cg.dir()).unwrap()))
            .into_iter()
            .collect();
        let skewed_holder = holders[1].0.id();
        let fd_holder = holders[2].0.id();
        Scene {
            paused,
            skewed,
            stressed,
            fd_limited,
            fill: Tmpfs::new("16m"),
            _holders: holders,
            skewed_holder,
            fd_holder,
        }
    }

    fn faults(&self) -> Vec<(FaultSpec, Vec<&TestCgroup>)> {
        vec![
            (
                FaultSpec::ProcessPause(ProcessPauseParams {}),
                vec![&self.paused],
            ),
            (
                FaultSpec::ClockSkew(ClockSkewParams {
                    offset: Some("+2h".parse().unwrap()),
                    drift: None,
                    rate: None,
                    clocks: vec![ClockName::Realtime],
                }),
                vec![&self.skewed],
            ),
            (
                FaultSpec::StressCpu(StressCpuParams {
                    load: 5.0,
                    workers: Some(1),
                }),
                vec![&self.stressed],
            ),
            (
                FaultSpec::DiskFill(DiskFillParams {
                    path: self.fill.path().display().to_string(),
                    size: Some("4MiB".parse().unwrap()),
                    percent: None,
                    allow_below_floor: false,
                }),
                vec![],
            ),
            (
                FaultSpec::FdLimit(FdLimitParams { nofile: 16 }),
                vec![&self.fd_limited],
            ),
        ]
    }

    /// Injects every fault for `duration`; returns their ids.
    fn inject_all(&self, daemon: &Daemon, duration: &str) -> Vec<String> {
        self.faults()
            .into_iter()
            .map(|(spec, targets)| {
                let kind = spec.kind();
                daemon
                    .try_inject(&request(spec, &targets, duration))
                    .unwrap_or_else(|e| panic!("{kind}: {e}\n{}", daemon.log_text()))
                    .id
            })
            .collect()
    }

    fn frozen(&self) -> bool {
        fs::read_to_string(self.paused.dir().join("cgroup.freeze"))
            .unwrap()
            .trim()
            == "1"
    }
}

fn sleeper() -> Command {
    let mut cmd = Command::new("sleep");
    cmd.arg("600");
    cmd
}

/// The host as before the faults, as far as each fault's residue shows.
struct Baseline {
    vdso: Vec<u8>,
    free: u64,
    nofile: String,
}

impl Baseline {
    fn take(scene: &Scene) -> Baseline {
        Baseline {
            vdso: vdso_bytes(scene.skewed_holder),
            free: scene.fill.free(),
            nofile: max_open_files(scene.fd_holder),
        }
    }

    /// What is still not as before (empty: all reverted).
    fn residue(&self, scene: &Scene, workers: &[u32]) -> Vec<&'static str> {
        let mut left = Vec::new();
        if scene.frozen() {
            left.push("frozen cgroup");
        }
        if vdso_bytes(scene.skewed_holder) != self.vdso {
            left.push("patched vDSO");
        }
        if workers.iter().any(|p| alive(*p)) {
            left.push("stress worker");
        }
        if scene.fill.free() < self.free {
            left.push("fill file");
        }
        if max_open_files(scene.fd_holder) != self.nofile {
            left.push("lowered RLIMIT_NOFILE");
        }
        left
    }
}

/// Polls until nothing is left; returns how long that took, or panics naming what is left.
fn wait_reverted(
    scene: &Scene,
    base: &Baseline,
    workers: &[u32],
    since: Instant,
    what: &str,
    daemon: &Daemon,
) -> Duration {
    let done = wait_for(limit() + Duration::from_secs(5), || {
        base.residue(scene, workers)
            .is_empty()
            .then(|| since.elapsed())
    });
    let took = done.unwrap_or_else(|| {
        panic!(
            "{what}: still left after {:?}: {:?}\n{}",
            since.elapsed(),
            base.residue(scene, workers),
            daemon.log_text()
        )
    });
    eprintln!("measured: {what}: everything reverted after {took:?}");
    assert!(
        took <= limit(),
        "{what}: reverted after {took:?}, above {:?}\n{}",
        limit(),
        daemon.log_text()
    );
    took
}

fn guardian_of(daemon: &Daemon) -> chaosd::engine::handoff::GuardianPid {
    let g = daemon
        .guardian()
        .expect("the daemon wrote no guardian.json");
    assert!(g.guardian_alive(), "the guardian is not running: {g:?}");
    assert_eq!(g.daemon_pid, daemon.pid().as_raw() as u32);
    g
}

/// Injects, kills the daemon and checks the guardian reverts everything within the limit.
fn kill_and_check(daemon: &mut Daemon, scene: &Scene, what: &str) -> Vec<String> {
    let base = Baseline::take(scene);
    let ids = scene.inject_all(daemon, "10m");
    assert!(scene.frozen(), "process.pause froze nothing");
    assert_ne!(vdso_bytes(scene.skewed_holder), base.vdso, "no vDSO patch");
    assert_ne!(max_open_files(scene.fd_holder), base.nofile, "no fd.limit");
    let workers = children_of(daemon.pid().as_raw() as u32);
    assert!(!workers.is_empty(), "no stress workers");
    let guardian = guardian_of(daemon);
    let killed = Instant::now();
    daemon.kill9();
    wait_reverted(scene, &base, &workers, killed, what, daemon);
    assert!(
        Daemon::reap_guardian(&guardian, Duration::from_secs(10)),
        "the guardian did not exit after reverting\n{}",
        daemon.log_text()
    );
    ids
}

#[test]
fn kill_9_reverts_what_outlives_chaosd_within_a_second_and_says_so() {
    let scene = Scene::new("g-kill");
    let mut daemon = Daemon::start_with_config(CONFIG);
    let ids = kill_and_check(&mut daemon, &scene, "after kill -9");
    let log = daemon.log_text();
    assert!(
        log.contains("the guardian reverted what it left"),
        "the guardian logged nothing:\n{log}"
    );

    // The next daemon shows what the guardian did, in the list and in the history.
    let daemon = daemon.restart();
    let listed = block_on(daemon.client().list(true)).unwrap();
    for id in &ids {
        let f = listed
            .iter()
            .find(|f| &f.id == id)
            .unwrap_or_else(|| panic!("fault {id} is not in list --all: {listed:?}"));
        assert_ne!(f.state, FaultState::Active, "{f:?}");
        let outcome = f.outcome.as_deref().unwrap_or_default();
        assert!(outcome.contains("the guardian"), "{id}: {outcome:?}");
    }
    let pause = listed.iter().find(|f| f.kind == "process.pause").unwrap();
    let outcome = pause.outcome.as_deref().unwrap();
    assert!(
        outcome.contains("still frozen") && outcome.contains("thawed"),
        "{outcome}"
    );
    assert!(block_on(daemon.client().list(false)).unwrap().is_empty());
    let table = daemon.chaosctl_ok(&["list", "--all"]);
    assert!(
        table.contains(scene.fill.path().to_str().unwrap()),
        "{table}"
    );
    let history = daemon.chaosctl_ok(&["history"]);
    assert!(
        history.contains("REVERT") && history.contains(&ids[0]),
        "the history does not show the guardian's reverts:\n{history}"
    );
}

#[test]
fn a_stopped_daemon_s_faults_end_at_their_deadlines() {
    let scene = Scene::new("g-stop");
    let daemon = Daemon::start_with_config(CONFIG);
    let base = Baseline::take(&scene);
    let workers_before = children_of(daemon.pid().as_raw() as u32);
    // The deadlines lie between these two (each fault's starts when it is applied).
    let first = Instant::now() + Duration::from_secs(3);
    let ids = scene.inject_all(&daemon, "3s");
    let last = Instant::now() + Duration::from_secs(3);
    let workers: Vec<u32> = children_of(daemon.pid().as_raw() as u32)
        .into_iter()
        .filter(|p| !workers_before.contains(p))
        .collect();
    assert!(scene.frozen());
    kill(daemon.pid(), Signal::SIGSTOP).unwrap();
    // Never before the deadline: the pause (the first fault) still holds just before it.
    let early = first - Duration::from_millis(300);
    if let Some(wait) = early.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
        assert!(
            scene.frozen(),
            "the guardian ended the pause before its deadline"
        );
    }
    let took = wait_reverted(
        &scene,
        &base,
        &workers,
        last,
        "past the deadline while stopped",
        &daemon,
    );
    eprintln!("measured: everything ended by {took:?} after the last deadline");
    // Someone freezes the cgroup again: the daemon, resumed, must not thaw it a second time.
    fs::write(scene.paused.dir().join("cgroup.freeze"), "1").unwrap();
    kill(daemon.pid(), Signal::SIGCONT).unwrap();
    let listed = wait_for(Duration::from_secs(10), || {
        let all = block_on(daemon.client().list(true)).ok()?;
        ids.iter()
            .all(|id| {
                all.iter()
                    .any(|f| &f.id == id && f.state != FaultState::Active)
            })
            .then_some(all)
    })
    .unwrap_or_else(|| {
        panic!(
            "the resumed daemon still lists active faults\n{}",
            daemon.log_text()
        )
    });
    for id in &ids {
        let f = listed.iter().find(|f| &f.id == id).unwrap();
        assert_eq!(f.state, FaultState::Expired, "{f:?}");
        let outcome = f.outcome.as_deref().unwrap_or_default();
        assert!(outcome.contains("the guardian"), "{id}: {outcome:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        scene.frozen(),
        "the resumed daemon thawed the cgroup a second time"
    );
    fs::write(scene.paused.dir().join("cgroup.freeze"), "0").unwrap();
    assert!(block_on(daemon.client().list(false)).unwrap().is_empty());
}

#[test]
fn a_killed_guardian_is_replaced_and_still_guards() {
    let scene = Scene::new("g-replace");
    let mut daemon = Daemon::start_with_config(CONFIG);
    let first = guardian_of(&daemon);
    kill(
        nix::unistd::Pid::from_raw(first.pid as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let second = wait_for(Duration::from_secs(20), || {
        daemon
            .guardian()
            .filter(|g| g.pid != first.pid && g.guardian_alive())
    })
    .unwrap_or_else(|| panic!("no new guardian\n{}", daemon.log_text()));
    assert!(
        daemon
            .log_text()
            .contains("the guardian died; starting a new one"),
        "{}",
        daemon.log_text()
    );
    eprintln!("guardian {} replaced by {}", first.pid, second.pid);
    kill_and_check(&mut daemon, &scene, "after kill -9, second guardian");
}

#[test]
fn a_torn_journal_entry_is_logged_and_the_rest_reverted() {
    let scene = Scene::new("g-torn");
    let mut daemon = Daemon::start_with_config(CONFIG);
    let torn = daemon.state_dir().join("faults").join("0badf00d.json");
    fs::write(
        &torn,
        br#"{"id": "0badf00d", "kind": "process.pause", "fau"#,
    )
    .unwrap();
    kill_and_check(&mut daemon, &scene, "with a torn journal entry");
    let log = daemon.log_text();
    assert!(
        log.contains("journal entry is torn or unreadable") && log.contains("0badf00d.json"),
        "no clear line about the torn entry:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// The daemon's beat as the guardian reads it (`state/heartbeat`: CLOCK_MONOTONIC ns, or
/// `u64::MAX` while idle), and how old it is.
fn beat_file(daemon: &Daemon) -> Option<(u64, Duration)> {
    let bytes = fs::read(daemon.state_dir().join("heartbeat")).ok()?;
    let beat = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let now_ns = now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64;
    Some((beat, Duration::from_nanos(now_ns.saturating_sub(beat))))
}

/// An idle daemon does not beat (no rule to keep alive, nothing for the guardian to end) and
/// says so in the file; the first fault has a fresh beat before its inject returns, the beat
/// goes on while the fault lives, and stops again once the last one has ended.
#[test]
fn an_idle_daemon_does_not_beat_and_its_first_fault_beats_before_it_is_in_force() {
    let daemon = Daemon::start();
    let idle = |what: &str| {
        let seen = wait_for(Duration::from_secs(3), || {
            beat_file(&daemon).filter(|(b, _)| *b == u64::MAX)
        });
        assert!(
            seen.is_some(),
            "{what}: the beat file is not marked idle: {:?}\n{}",
            beat_file(&daemon),
            daemon.log_text()
        );
    };
    idle("after the start");
    let paused = TestCgroup::new("g-idle");
    let _holder = KillOnDrop(spawn_in_cgroup(&mut sleeper(), paused.dir()).unwrap());
    let id = daemon
        .try_inject(&request(
            FaultSpec::ProcessPause(ProcessPauseParams {}),
            &[&paused],
            "30s",
        ))
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()))
        .id;
    let (beat, age) = beat_file(&daemon).expect("no beat file");
    assert_ne!(beat, u64::MAX, "still idle with a live fault");
    assert!(age < Duration::from_millis(500), "a first beat {age:?} old");
    std::thread::sleep(Duration::from_millis(1500));
    let (_, age) = beat_file(&daemon).expect("no beat file");
    assert!(
        age < Duration::from_millis(500),
        "the beat is {age:?} old while a fault lives"
    );
    block_on(daemon.client().recover(&id)).unwrap();
    idle("after the last fault ended");
}
