//! Stress and disk faults, measured from outside: the workers' CPU time and resident memory,
//! free space on a tmpfs, and that every worker, cgroup and file is gone when the fault ends —
//! on recover, at the deadline and when chaosd is killed.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use chaosd::{
    api::{
        DiskFillParams, DiskIoParams, FaultSpec, FaultState, InjectRequest, IoMode,
        StressCpuParams, StressMemParams,
    },
    client::ClientError,
    host::cgroup::cgroup2_mount,
};
use chaosd_integration::{
    Daemon, TestCgroup, Tmpfs, alive, block_on, children_of, footprint::rss_bytes,
    inject_request as inject, request, wait_for,
};
use hyper::StatusCode;

fn cpu(load: f64, workers: Option<u32>) -> FaultSpec {
    FaultSpec::StressCpu(StressCpuParams { load, workers })
}

fn mem(size: &str) -> FaultSpec {
    FaultSpec::StressMem(StressMemParams {
        size: Some(size.parse().unwrap()),
        percent: None,
        rate: None,
    })
}

fn pids_in(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn cpu_usage_usec(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("cpu.stat"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<u64> = s
        .rsplit_once(") ")
        .unwrap()
        .1
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    f[0] + f[1]
}

fn expect_bad_request(daemon: &Daemon, req: &InjectRequest, needle: &str) {
    match daemon.try_inject(req) {
        Err(ClientError::Api(msg, status)) => {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
            assert!(
                msg.contains(needle),
                "error {msg:?} does not mention {needle:?}"
            );
        }
        other => panic!("expected a 400 mentioning {needle:?}, got {other:?}"),
    }
    assert!(
        block_on(daemon.client().list(false)).unwrap().is_empty(),
        "a refused request left a fault active"
    );
}

/// Nanoseconds `pid` has spent runnable but waiting for a CPU (`/proc/<pid>/schedstat`).
fn runqueue_wait_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap();
    stat.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn cpu_stress_burns_the_asked_load_inside_the_target() {
    let daemon = Daemon::start();
    let cg = TestCgroup::new("cpu");
    let fault = inject(&daemon, &request(cpu(50.0, Some(1)), &[&cg], "60s"));
    let pid = wait_for(Duration::from_secs(5), || {
        pids_in(cg.dir()).first().copied()
    })
    .expect("no worker appeared in the target cgroup");
    assert_eq!(pids_in(cg.dir()).len(), 1, "one worker was asked");
    std::thread::sleep(Duration::from_millis(500));

    let hz = 100.0; // USER_HZ on Linux
    let (u0, t0, q0, w0) = (
        cpu_usage_usec(cg.dir()),
        proc_cpu_ticks(pid),
        runqueue_wait_ns(pid),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(3));
    let (u1, t1, q1, wall) = (
        cpu_usage_usec(cg.dir()),
        proc_cpu_ticks(pid),
        runqueue_wait_ns(pid),
        w0.elapsed().as_secs_f64(),
    );
    let cores = (u1 - u0) as f64 / 1e6 / wall;
    let per_proc = (t1 - t0) as f64 / hz / wall;
    // The worker catches up on CPU time it was denied, but a busy host can deny more than it
    // can catch up on: time spent runnable yet waiting for a CPU (schedstat) counts as asked.
    let waited = (q1 - q0) as f64 / 1e9 / wall;
    eprintln!(
        "measured: cgroup {cores:.3} cores, worker /proc {per_proc:.3} cores, runnable but waiting {waited:.3} over {wall:.2}s"
    );
    assert!(
        cores <= 0.55 && cores + waited >= 0.45,
        "the target cgroup used {cores:.3} cores (and waited {waited:.3} for a CPU), expected 0.50 ± 0.05"
    );

    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    let achieved = info.counters.affected as f64 / info.counters.seen.max(1) as f64;
    assert!(
        (0.40..=0.60).contains(&achieved),
        "counters say load {achieved:.2}: {:?}",
        info.counters
    );

    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert!(!alive(pid), "the worker outlived recover");
    assert!(pids_in(cg.dir()).is_empty());
}

#[test]
fn mem_stress_holds_the_asked_bytes_resident_until_recover() {
    let daemon = Daemon::start();
    let cg = TestCgroup::new("mem");
    let fault = inject(&daemon, &request(mem("256MiB"), &[&cg], "60s"));
    let pid = wait_for(Duration::from_secs(5), || {
        pids_in(cg.dir()).first().copied()
    })
    .expect("no worker appeared in the target cgroup");
    let want = 256u64 << 20;
    let current = cg.dir().join("memory.current");
    let resident = wait_for(Duration::from_secs(15), || {
        let r = if current.exists() {
            std::fs::read_to_string(&current)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        } else {
            rss_bytes(pid)
        };
        (r >= want).then_some(r)
    });
    let resident = resident.unwrap_or_else(|| {
        panic!(
            "worker resident {} bytes, expected >= {want}",
            rss_bytes(pid)
        )
    });
    eprintln!("measured: {} MiB resident", resident >> 20);
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert_eq!(info.counters.seen, want);
    assert!(info.counters.affected >= want, "{:?}", info.counters);

    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert!(!alive(pid), "the worker outlived recover");
}

#[test]
fn stress_without_target_uses_an_own_cgroup_removed_at_recover_and_ends_at_deadline() {
    let daemon = Daemon::start();
    let fault = inject(&daemon, &request(cpu(10.0, Some(2)), &[], "60s"));
    assert!(fault.targets.is_empty());
    let mount = cgroup2_mount().unwrap();
    let own = mount.join(format!("chaosd-stress-{}", daemon.pid()));
    let pids = wait_for(Duration::from_secs(5), || {
        let p = children_of(daemon.pid().as_raw() as u32);
        (p.len() == 2).then_some(p)
    })
    .expect("two workers as children of chaosd");
    for pid in &pids {
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            cg.contains(&format!("/chaosd-stress-{}/", daemon.pid())),
            "worker {pid} is not in chaosd's stress cgroup: {cg}"
        );
    }
    assert!(own.exists());
    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert!(pids.iter().all(|p| !alive(*p)), "workers outlived recover");
    assert!(!own.exists(), "the stress cgroup {} is left", own.display());

    // At the deadline the fault expires and its worker is gone.
    let short = inject(&daemon, &request(cpu(10.0, Some(1)), &[], "1500ms"));
    let pid = wait_for(Duration::from_secs(5), || {
        children_of(daemon.pid().as_raw() as u32).first().copied()
    })
    .unwrap();
    let expired = wait_for(Duration::from_secs(10), || {
        let f = block_on(daemon.client().get(&short.id)).unwrap();
        (f.state == FaultState::Expired).then_some(f)
    });
    assert!(expired.is_some(), "the fault did not expire");
    assert!(
        wait_for(Duration::from_secs(1), || (!alive(pid)).then_some(())).is_some(),
        "the worker outlived the deadline"
    );
    assert!(!own.exists());
}

#[test]
fn kill_9_of_chaosd_ends_every_stressor_within_a_second() {
    let mut daemon = Daemon::start();
    let cg = TestCgroup::new("crash");
    let dpid = daemon.pid().as_raw() as u32;
    let _cpu = inject(&daemon, &request(cpu(20.0, Some(1)), &[&cg], "10m"));
    let _mem = inject(&daemon, &request(mem("16MiB"), &[], "10m"));
    let pids = wait_for(Duration::from_secs(5), || {
        let p = children_of(dpid);
        (p.len() == 2).then_some(p)
    })
    .expect("two workers as children of chaosd");
    let own = cgroup2_mount()
        .unwrap()
        .join(format!("chaosd-stress-{dpid}"));
    assert!(own.exists());

    daemon.kill9();
    let t = Instant::now();
    let gone = wait_for(Duration::from_secs(1), || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
    assert!(
        gone.is_some(),
        "stress workers {pids:?} outlived chaosd by more than a second"
    );
    eprintln!("measured: workers gone {:?} after kill -9", t.elapsed());
    assert!(pids_in(cg.dir()).is_empty());

    // A restarted daemon removes the dead one's stress cgroup when it makes its own.
    let daemon = daemon.restart();
    let f = inject(&daemon, &request(cpu(5.0, Some(1)), &[], "30s"));
    assert!(!own.exists(), "the dead daemon's stress cgroup is left");
    block_on(daemon.client().recover(&f.id)).unwrap();
}

fn fill(path: &Path, size: Option<&str>, percent: Option<f64>) -> FaultSpec {
    FaultSpec::DiskFill(DiskFillParams {
        path: path.display().to_string(),
        size: size.map(|v| v.parse().unwrap()),
        percent,
        allow_below_floor: false,
    })
}

const MIB: u64 = 1 << 20;

#[test]
fn disk_fill_allocates_honours_the_floor_and_frees_on_recover() {
    let fs = Tmpfs::new("64m");
    let daemon =
        Daemon::start_with_config("[stress]\ndisk_floor_percent = 10\ndisk_floor = \"1MiB\"\n");
    let before = fs.free();
    assert!(before >= 63 * MIB);

    let fault = inject(
        &daemon,
        &request(fill(&fs.path(), Some("40MiB"), None), &[], "60s"),
    );
    let used = before - fs.free();
    assert!(
        (40 * MIB..41 * MIB).contains(&used),
        "free space dropped by {used} bytes, expected 40 MiB"
    );
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert_eq!(info.counters.seen, 40 * MIB);
    assert!(info.counters.affected >= 40 * MIB, "{:?}", info.counters);

    // 20 MiB more would leave ~4 MiB, under the 6.4 MiB floor (10 % of 64 MiB).
    match daemon.try_inject(&request(fill(&fs.path(), Some("20MiB"), None), &[], "60s")) {
        Err(ClientError::Api(msg, status)) => {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
            assert!(msg.contains("safety floor"), "{msg}");
        }
        other => panic!("crossing the floor was not refused: {other:?}"),
    }
    // So would filling to 95 % used.
    match daemon.try_inject(&request(fill(&fs.path(), None, Some(95.0)), &[], "60s")) {
        Err(ClientError::Api(msg, _)) => assert!(msg.contains("safety floor"), "{msg}"),
        other => panic!("crossing the floor was not refused: {other:?}"),
    }
    assert_eq!(block_on(daemon.client().list(false)).unwrap().len(), 1);

    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_eq!(fs.free(), before, "the fill's space did not come back");
    assert_eq!(
        std::fs::read_dir(fs.path()).unwrap().count(),
        0,
        "a file is left in the filled directory"
    );
}

#[test]
fn disk_fill_frees_its_space_when_chaosd_is_killed() {
    let fs = Tmpfs::new("64m");
    let mut daemon = Daemon::start_with_config("[stress]\ndisk_floor = \"1MiB\"\n");
    let before = fs.free();
    inject(
        &daemon,
        &request(fill(&fs.path(), None, Some(50.0)), &[], "10m"),
    );
    assert!(before - fs.free() >= 30 * MIB);
    daemon.kill9();
    assert!(
        wait_for(Duration::from_secs(1), || (fs.free() == before)
            .then_some(()))
        .is_some(),
        "the space stayed allocated after chaosd died"
    );
}

#[test]
fn disk_io_loads_a_hidden_file_that_goes_at_recover() {
    // A small floor, so the 32 MiB tmpfs below has room for the I/O file.
    let daemon = Daemon::start_with_config("[stress]\ndisk_floor = \"1MiB\"\n");
    let cg = TestCgroup::new("io");
    // A disk-backed dir where there is one (O_DIRECT), else /tmp (the VM's root is read-only).
    let builder = || {
        let mut b = tempfile::Builder::new();
        b.prefix("chaosd-io-");
        b
    };
    let dir = builder()
        .tempdir_in("/var/tmp")
        .or_else(|_| builder().tempdir())
        .unwrap();
    let spec = FaultSpec::DiskIo(DiskIoParams {
        path: dir.path().display().to_string(),
        mode: IoMode::Mixed,
        rate: Some("20MiB/s".parse().unwrap()),
    });
    let fault = inject(&daemon, &request(spec, &[&cg], "60s"));
    let pid = wait_for(Duration::from_secs(5), || {
        pids_in(cg.dir()).first().copied()
    })
    .expect("no worker in the target cgroup");
    // I/O happens (however slowly a loaded machine lets it) ...
    let started = std::time::Instant::now();
    let info = wait_for(Duration::from_secs(20), || {
        let f = block_on(daemon.client().get(&fault.id)).unwrap();
        (f.counters.seen >= 8 * MIB).then_some(f)
    })
    .expect("the disk.io worker moved less than 8 MiB in 20 s");
    // ... and never faster than asked (a ceiling holds under any load); 2 MiB of slack for the
    // first block and the counter read.
    let elapsed = started.elapsed().as_secs_f64() + 0.5;
    eprintln!(
        "measured: disk.io counters {:?} after {elapsed:.1} s",
        info.counters
    );
    assert!(
        (info.counters.seen as f64) <= 20.0 * MIB as f64 * elapsed + 2.0 * MIB as f64,
        "the rate limit was not kept: {:?} in {elapsed:.1} s",
        info.counters
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the I/O file is visible"
    );
    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert!(!alive(pid));

    // tmpfs may lack O_DIRECT: the worker falls back to buffered I/O.
    let fs = Tmpfs::new("32m");
    let spec = FaultSpec::DiskIo(DiskIoParams {
        path: fs.path().display().to_string(),
        mode: IoMode::Write,
        rate: None,
    });
    let fault = inject(&daemon, &request(spec, &[], "60s"));
    std::thread::sleep(Duration::from_millis(500));
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert!(
        info.counters.seen > 0,
        "no I/O on tmpfs: {:?}",
        info.counters
    );
    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_eq!(std::fs::read_dir(fs.path()).unwrap().count(), 0);
}

#[test]
fn bad_stress_requests_get_clear_errors_and_change_nothing() {
    let daemon = Daemon::start();
    let cg = TestCgroup::new("bad");
    expect_bad_request(&daemon, &request(cpu(0.0, None), &[&cg], "30s"), "load");
    expect_bad_request(&daemon, &request(cpu(150.0, None), &[&cg], "30s"), "load");
    expect_bad_request(
        &daemon,
        &request(cpu(50.0, Some(0)), &[&cg], "30s"),
        "workers",
    );
    expect_bad_request(
        &daemon,
        &request(mem("100000GiB"), &[&cg], "30s"),
        "total memory",
    );
    expect_bad_request(&daemon, &request(mem("lots"), &[&cg], "30s"), "not valid");
    let missing = Path::new("/chaosd-no-such-dir");
    expect_bad_request(
        &daemon,
        &request(fill(missing, Some("1MiB"), None), &[], "30s"),
        "does not exist",
    );
    let io = FaultSpec::DiskIo(DiskIoParams {
        path: missing.display().to_string(),
        mode: IoMode::Read,
        rate: None,
    });
    expect_bad_request(&daemon, &request(io, &[], "30s"), "does not exist");
    let tmp = tempfile::tempdir().unwrap();
    expect_bad_request(
        &daemon,
        &request(fill(tmp.path(), Some("1MiB"), None), &[&cg], "30s"),
        "takes no targets",
    );
    expect_bad_request(
        &daemon,
        &request(fill(tmp.path(), None, None), &[], "30s"),
        "exactly one of size and percent",
    );
    assert!(block_on(daemon.client().list(true)).unwrap().is_empty());
    assert!(
        pids_in(cg.dir()).is_empty(),
        "a refused request started a worker"
    );
}

#[test]
fn workers_are_named_for_what_they_do_and_their_fault() {
    let daemon = Daemon::start();
    for (spec, what) in [(cpu(5.0, Some(1)), "cpu"), (mem("8MiB"), "mem")] {
        let cg = TestCgroup::new(&format!("named-{what}"));
        let fault = inject(&daemon, &request(spec, &[&cg], "30s"));
        let pid = wait_for(Duration::from_secs(5), || {
            let pid = *pids_in(cg.dir()).first()?;
            // comm is set by the worker itself, just after exec.
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "chaosd-stress").then_some(pid)
        })
        .unwrap_or_else(|| {
            let pid = pids_in(cg.dir()).first().copied();
            let comm = pid.map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")));
            panic!("no worker named chaosd-stress in the target (pid {pid:?}, comm {comm:?})")
        });
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap();
        let want = format!("chaosd-stress: {what} fault {}", fault.id);
        assert_eq!(String::from_utf8_lossy(argv0), want);
        block_on(daemon.client().recover(&fault.id)).unwrap();
    }
}
