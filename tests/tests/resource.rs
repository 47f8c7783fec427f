//! Resource faults through cgroup v2 knobs, checked from outside: a busy loop under
//! `cpu.limit` gets its quota of a core (the cgroup's own CPU accounting), a process touching
//! more than `mem.pressure`'s high is throttled and not killed, `process.limit` makes `fork()`
//! fail with EAGAIN; every knob reads as before after recover and after the deadline.
//! `fd.limit` (prlimit, no controller needed: it runs on this host too) makes the target's
//! next `open()` fail with EMFILE while a sibling's opens succeed, and the limit reads as
//! before after recover and after the deadline.
//!
//! `io.throttle` (`io.max`) makes `fio --direct=1` in the target read the VM's scratch disk at
//! the asked rate and IOPS while a sibling reading the same disk is not slowed; `io.max` and
//! every ancestor's `cgroup.subtree_control` read as before after recover, the deadline and a
//! `kill -9` (the guardian), and bad requests leave nothing written.
//!
//! They need the controllers in the cgroup2 hierarchy: the VM guests have them (pure cgroup2),
//! this host has them on cgroup v1, where each kind must be refused with that reason and a fix.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use chaosd::{
    api::{
        CpuLimitParams, FaultSpec, FaultState, FdLimitParams, InjectRequest, IoThrottleParams,
        MemPressureParams, ProcessLimitParams, TargetSelector,
    },
    host::cgroup::{cgroup2_mount, spawn_in_cgroup},
};
use chaosd_integration::{
    Daemon, TestCgroup, block_on, inject, inject_request, scratch_disk, skip, unsupported_reason,
    wait_for,
};

/// A process in a test cgroup, killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cg: &TestCgroup, program: &str, args: &[&str]) -> Guard {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
    Guard(spawn_in_cgroup(&mut cmd, cg.dir()).unwrap())
}

fn knob(cg: &TestCgroup, file: &str) -> String {
    fs::read_to_string(cg.dir().join(file))
        .unwrap_or_else(|e| panic!("reading {file}: {e}"))
        .trim()
        .to_string()
}

fn stat(dir: &Path, file: &str, key: &str) -> u64 {
    fs::read_to_string(dir.join(file))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {file}"))
}

fn cpu_limit(quota: f64) -> FaultSpec {
    FaultSpec::CpuLimit(CpuLimitParams {
        quota,
        period: None,
    })
}

/// The daemon and, where this host lacks `kind`'s controller, the reason (tested instead).
fn daemon_for(kind: &str) -> (Daemon, Option<String>) {
    let daemon = Daemon::start();
    let reason = unsupported_reason(&daemon, kind);
    (daemon, reason)
}

#[test]
fn cpu_limit_gives_a_busy_loop_its_quota_and_puts_cpu_max_back() {
    let (daemon, missing) = daemon_for("cpu.limit");
    if let Some(reason) = missing {
        skip!("{reason}");
    }
    let cg = TestCgroup::new("cpu-limit");
    let before = knob(&cg, "cpu.max");
    let _busy = spawn(&cg, "/bin/sh", &["-c", "while :; do :; done"]);
    let fault = inject(&daemon, &cg, cpu_limit(20.0), "60s");
    assert_eq!(knob(&cg, "cpu.max"), "20000 100000");
    assert_eq!(fault.knobs.len(), 1, "{:?}", fault.knobs);
    assert_eq!(fault.knobs[0].before, before);

    // Let the throttle settle, then measure the cgroup's own CPU time over wall time.
    std::thread::sleep(Duration::from_millis(500));
    let (t0, u0) = (Instant::now(), stat(cg.dir(), "cpu.stat", "usage_usec"));
    std::thread::sleep(Duration::from_secs(3));
    let used = stat(cg.dir(), "cpu.stat", "usage_usec") - u0;
    let share = used as f64 / t0.elapsed().as_micros() as f64 * 100.0;
    eprintln!("measured: a busy loop under cpu.limit 20 % used {share:.1} % of a core");
    assert!((17.0..=23.0).contains(&share), "{share:.1} % of a core");
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert!(info.counters.affected > 0, "no throttled period counted");

    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_eq!(knob(&cg, "cpu.max"), before, "cpu.max not put back");
}

#[test]
fn mem_pressure_throttles_above_high_and_kills_nothing() {
    let (daemon, missing) = daemon_for("mem.pressure");
    if let Some(reason) = missing {
        skip!("{reason}");
    }
    let cg = TestCgroup::new("mem-pressure");
    let before = knob(&cg, "memory.high");
    let fault = inject(
        &daemon,
        &cg,
        FaultSpec::MemPressure(MemPressureParams {
            high: "64MiB".parse().unwrap(),
            max: None,
            allow_oom: false,
        }),
        "60s",
    );
    assert_eq!(knob(&cg, "memory.high"), (64u64 << 20).to_string());
    // Touches 192 MiB, a page at a time, then says so and waits.
    let toucher = "import sys, time\n\
        b = bytearray(192 << 20)\n\
        for i in range(0, len(b), 4096): b[i] = 1\n\
        print('touched', flush=True)\n\
        time.sleep(120)\n";
    let mut p = spawn(&cg, "python3", &["-c", toucher]);
    let high = wait_for(Duration::from_secs(60), || {
        let n = stat(cg.dir(), "memory.events", "high ");
        (n > 0).then_some(n)
    });
    assert!(high.is_some(), "no memory.events high under mem.pressure");
    let current = stat(cg.dir(), "memory.stat", "anon ");
    eprintln!(
        "measured: 192 MiB touched under memory.high 64 MiB: anon {} MiB",
        current >> 20
    );
    assert!(p.0.try_wait().unwrap().is_none(), "the process was killed");
    assert_eq!(stat(cg.dir(), "memory.events", "oom_kill "), 0);

    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_eq!(knob(&cg, "memory.high"), before, "memory.high not put back");
    // Released, it finishes touching.
    let mut line = String::new();
    BufReader::new(p.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "touched");
}

#[test]
fn process_limit_makes_fork_fail_with_eagain_until_the_deadline() {
    let (daemon, missing) = daemon_for("process.limit");
    if let Some(reason) = missing {
        skip!("{reason}");
    }
    let cg = TestCgroup::new("pids-limit");
    let before = knob(&cg, "pids.max");
    // Forks once per line it reads and says how that went.
    let forker = "import os, sys\n\
        for _ in sys.stdin:\n\
        \x20   try:\n\
        \x20       pid = os.fork()\n\
        \x20       if pid == 0: os._exit(0)\n\
        \x20       os.waitpid(pid, 0); print('forked', flush=True)\n\
        \x20   except OSError as e: print(os.strerror(e.errno), e.errno, flush=True)\n";
    let mut p = spawn(&cg, "python3", &["-c", forker]);
    let mut stdin = p.0.stdin.take().unwrap();
    let mut out = BufReader::new(p.0.stdout.take().unwrap());
    let mut fork = || {
        writeln!(stdin, "go").unwrap();
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    assert_eq!(fork(), "forked");
    let fault = inject(
        &daemon,
        &cg,
        FaultSpec::ProcessLimit(ProcessLimitParams { max: 1 }),
        "3s",
    );
    assert_eq!(knob(&cg, "pids.max"), "1");
    assert_eq!(
        fork(),
        format!("Resource temporarily unavailable {}", libc::EAGAIN)
    );
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert_eq!(info.counters.affected, 1, "refused forks counted");

    let ended = wait_for(Duration::from_secs(10), || {
        let f = block_on(daemon.client().get(&fault.id)).ok()?;
        (f.state != FaultState::Active).then_some(f)
    });
    assert!(ended.is_some(), "process.limit outlived its deadline");
    assert_eq!(knob(&cg, "pids.max"), before, "pids.max not put back");
    assert_eq!(fork(), "forked");
}

#[test]
fn a_knob_someone_changed_meanwhile_is_left_as_they_set_it_and_a_held_knob_is_refused() {
    let (daemon, missing) = daemon_for("cpu.limit");
    if let Some(reason) = missing {
        skip!("{reason}");
    }
    let cg = TestCgroup::new("cpu-theirs");
    let fault = inject(&daemon, &cg, cpu_limit(50.0), "60s");
    let second = daemon.try_inject(&chaosd_integration::request(cpu_limit(30.0), &[&cg], "60s"));
    let err = second
        .expect_err("a second cpu.limit on one cgroup")
        .to_string();
    assert!(err.contains("already set by another fault"), "{err}");
    assert_eq!(knob(&cg, "cpu.max"), "50000 100000");

    fs::write(cg.dir().join("cpu.max"), "30000 100000").unwrap();
    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_eq!(
        knob(&cg, "cpu.max"),
        "30000 100000",
        "someone else's value was replaced"
    );
}

#[test]
fn bad_values_are_refused_with_the_reason_and_hosts_without_the_controller_say_why() {
    let daemon = Daemon::start();
    let cg = TestCgroup::new("resource-bad");
    let bad = [
        (r#"{"kind":"cpu.limit","params":{"quota":0}}"#, "above 0"),
        (
            r#"{"kind":"cpu.limit","params":{"quota":20,"period":"5s"}}"#,
            "1ms to 1s",
        ),
        (
            r#"{"kind":"mem.pressure","params":{"high":"256MiB","max":"512MiB"}}"#,
            "allow_oom",
        ),
        (
            r#"{"kind":"process.limit","params":{"max":0}}"#,
            "at least 1",
        ),
    ];
    for (fault, says) in bad {
        let (status, body) = daemon.post_fault_text(fault, cg.rel(), "30s");
        assert!((400..500).contains(&status), "{fault}: {status} {body}");
        assert!(body.contains(says), "{fault}: {body}");
    }
    for (kind, controller) in [
        ("cpu.limit", "cpu"),
        ("mem.pressure", "memory"),
        ("process.limit", "pids"),
    ] {
        let Some(reason) = unsupported_reason(&daemon, kind) else {
            continue;
        };
        assert!(
            reason.contains(&format!("no {controller} controller")),
            "{kind}: {reason}"
        );
        let fault = match kind {
            "cpu.limit" => r#"{"kind":"cpu.limit","params":{"quota":20}}"#,
            "mem.pressure" => r#"{"kind":"mem.pressure","params":{"high":"256MiB"}}"#,
            _ => r#"{"kind":"process.limit","params":{"max":5}}"#,
        };
        let (status, body) = daemon.post_fault_text(fault, cg.rel(), "30s");
        assert_eq!(status, 422, "{kind}: {body}");
        assert!(body.contains("cgroup_no_v1"), "{kind} names no fix: {body}");
    }
}

/// `pid`'s "Max open files" (soft, hard) as `/proc/PID/limits` shows them.
fn nofile(pid: u32) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut words = line["Max open files".len()..].split_whitespace();
    let soft = words.next().unwrap().to_string();
    (soft, words.next().unwrap().to_string())
}

/// A process that opens /dev/null (and keeps it open) for each line it reads and says how
/// that went: "ok" or the errno's name and number.
struct Opener {
    p: Guard,
    stdin: std::process::ChildStdin,
    out: BufReader<std::process::ChildStdout>,
}

impl Opener {
    fn new(cg: &TestCgroup) -> Opener {
        let script = "import os, sys, errno\n\
            held = []\n\
            for _ in sys.stdin:\n\
            \x20   try: held.append(open('/dev/null')); print('ok', flush=True)\n\
            \x20   except OSError as e: print(errno.errorcode[e.errno], e.errno, flush=True)\n";
        let mut p = spawn(cg, "python3", &["-c", script]);
        let stdin = p.0.stdin.take().unwrap();
        let out = BufReader::new(p.0.stdout.take().unwrap());
        let mut opener = Opener { p, stdin, out };
        // Once it answered, the interpreter has started and imported what open() needs.
        assert_eq!(opener.open(), "ok");
        opener
    }

    fn pid(&self) -> u32 {
        self.p.0.id()
    }

    fn open(&mut self) -> String {
        writeln!(self.stdin, "open").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

fn fd_limit(nofile: u64) -> FaultSpec {
    FaultSpec::FdLimit(FdLimitParams { nofile })
}

#[test]
fn fd_limit_makes_the_next_open_fail_with_emfile_in_the_target_only_until_recover() {
    let daemon = Daemon::start();
    let (cg, sibling) = (TestCgroup::new("fd-limit"), TestCgroup::new("fd-sibling"));
    let (mut target, mut other) = (Opener::new(&cg), Opener::new(&sibling));
    let before = nofile(target.pid());
    let sibling_before = nofile(other.pid());

    // 0, 1 and 2 are open: with a soft limit of 3 no new descriptor fits.
    let fault = inject(&daemon, &cg, fd_limit(3), "60s");
    assert_eq!(nofile(target.pid()), ("3".to_string(), before.1.clone()));
    assert_eq!(target.open(), format!("EMFILE {}", libc::EMFILE));
    for _ in 0..5 {
        assert_eq!(other.open(), "ok", "the sibling was limited too");
    }
    assert_eq!(nofile(other.pid()), sibling_before);
    assert_eq!(fault.limits.len(), 1, "{:?}", fault.limits);
    let l = &fault.limits[0];
    assert_eq!(
        (l.pid, l.set, l.before.to_string()),
        (target.pid(), 3, before.0.clone())
    );
    assert_eq!(fault.counters.affected, 1);

    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_eq!(nofile(target.pid()), before, "RLIMIT_NOFILE not put back");
    assert_eq!(target.open(), "ok");
}

#[test]
fn fd_limit_on_a_pid_ends_at_its_deadline_and_refuses_what_it_cannot_lower() {
    let daemon = Daemon::start();
    let cg = TestCgroup::new("fd-pid");
    let (mut target, mut neighbour) = (Opener::new(&cg), Opener::new(&cg));
    let before = nofile(target.pid());
    let req = InjectRequest {
        fault: fd_limit(3),
        targets: vec![TargetSelector::Pid(target.pid())],
        duration: Some("2s".into()),
    };
    let fault = inject_request(&daemon, &req);
    assert_eq!(target.open(), format!("EMFILE {}", libc::EMFILE));
    assert_eq!(neighbour.open(), "ok", "--pid limited its whole cgroup");
    // A second fault on the same process is refused: it could not put back the first's value.
    let again = InjectRequest {
        fault: fd_limit(2),
        ..req.clone()
    };
    let second = daemon
        .try_inject(&again)
        .expect_err("a second fd.limit on one process");
    assert!(second.to_string().contains("already lowered"), "{second}");

    let ended = wait_for(Duration::from_secs(10), || {
        let f = block_on(daemon.client().get(&fault.id)).ok()?;
        (f.state != FaultState::Active).then_some(f)
    });
    assert!(ended.is_some(), "fd.limit outlived its deadline");
    assert_eq!(nofile(target.pid()), before, "RLIMIT_NOFILE not put back");
    assert_eq!(target.open(), "ok");

    let huge = format!(
        r#"{{"kind":"fd.limit","params":{{"nofile":{}}}}}"#,
        u64::MAX - 1
    );
    let (status, body) = daemon.post_fault_text(&huge, cg.rel(), "30s");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nothing to lower"), "{body}");
    let (status, body) = daemon.post_fault_text(
        r#"{"kind":"fd.limit","params":{"nofile":0}}"#,
        cg.rel(),
        "30s",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at least 1"), "{body}");
}

/// A parent and a middle cgroup without `io` in their `cgroup.subtree_control` (new cgroups
/// have none), the target and its sibling below them, and the scratch disk.
struct IoScene {
    parent: TestCgroup,
    middle: TestCgroup,
    target: TestCgroup,
    sibling: TestCgroup,
    /// The scratch disk's node and MAJ:MIN.
    disk: (std::path::PathBuf, String),
}

impl IoScene {
    fn new(label: &str) -> IoScene {
        let disk = scratch_disk().unwrap_or_else(|| {
            panic!(
                "no scratch disk (virtio-blk serial chaosd-scratch): the VM harness attaches one"
            )
        });
        let parent = TestCgroup::new(label);
        let middle = parent.child("mid");
        let target = middle.child("target");
        let sibling = middle.child("sibling");
        IoScene {
            parent,
            middle,
            target,
            sibling,
            disk,
        }
    }

    /// The cgroup2 root's, the parent's and the middle's `cgroup.subtree_control`, and the
    /// target's `io.max` ("absent" while `io` is off for it).
    fn knobs(&self) -> Vec<String> {
        let root = cgroup2_mount().unwrap();
        let mut out: Vec<String> = [root.as_path(), self.parent.dir(), self.middle.dir()]
            .iter()
            .map(|d| fs::read_to_string(d.join("cgroup.subtree_control")).unwrap())
            .collect();
        out.push(
            fs::read_to_string(self.target.dir().join("io.max"))
                .unwrap_or_else(|_| "absent".into()),
        );
        out
    }

    fn throttle(&self, rbps: Option<&str>, riops: Option<u64>) -> FaultSpec {
        FaultSpec::IoThrottle(IoThrottleParams {
            path: None,
            device: Some(self.disk.1.clone()),
            rbps: rbps.map(|r| r.parse().unwrap()),
            wbps: None,
            riops,
            wiops: None,
        })
    }
}

/// What `fio --output-format=json` measured for one read job.
#[derive(Debug)]
struct FioRead {
    bytes_per_sec: f64,
    iops: f64,
}

/// Starts `fio` in `cg`: direct (O_DIRECT, past the page cache) sequential reads of `disk`
/// in `bs` blocks for `secs` seconds.
fn start_fio(cg: &TestCgroup, disk: &Path, bs: &str, secs: u32) -> Child {
    let mut cmd = Command::new("fio");
    cmd.args([
        "--name=read",
        "--readonly",
        "--rw=read",
        "--direct=1",
        "--ioengine=psync",
        "--time_based",
        "--output-format=json",
    ])
    .arg(format!("--filename={}", disk.display()))
    .arg(format!("--bs={bs}"))
    .arg(format!("--runtime={secs}"))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    spawn_in_cgroup(&mut cmd, cg.dir()).unwrap_or_else(|e| {
        panic!("starting fio: {e} (cargo xtask test installs it: xtask/src/test_tools.rs)")
    })
}

fn fio_result(child: Child) -> FioRead {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fio failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    // fio may print notes before the JSON document.
    let json: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..])
        .unwrap_or_else(|e| panic!("fio's JSON: {e}\n{text}"));
    let read = &json["jobs"][0]["read"];
    FioRead {
        bytes_per_sec: read["bw_bytes"].as_f64().unwrap(),
        iops: read["iops"].as_f64().unwrap(),
    }
}

fn io_daemon() -> Option<Daemon> {
    let (daemon, missing) = daemon_for("io.throttle");
    if let Some(reason) = missing {
        assert!(reason.contains("no io controller"), "{reason}");
        // The guests mount a pure cgroup2 with every controller: there it must run.
        assert!(
            std::env::var_os("CHAOSD_VM").is_none(),
            "io.throttle refused in the VM: {reason}"
        );
        chaosd_integration::record_skip(&reason);
        return None;
    }
    Some(daemon)
}

#[test]
fn io_throttle_reads_at_rbps_while_the_sibling_is_free_and_recover_puts_everything_back() {
    let Some(daemon) = io_daemon() else { return };
    let scene = IoScene::new("io-throttle");
    let before = scene.knobs();
    assert_eq!(before[3], "absent", "io is on for a new cgroup: {before:?}");

    let rate = 2u64 << 20;
    let fault = inject(
        &daemon,
        &scene.target,
        scene.throttle(Some("2MiB/s"), None),
        "60s",
    );
    let dev = &scene.disk.1;
    assert_eq!(
        fs::read_to_string(scene.target.dir().join("io.max"))
            .unwrap()
            .trim(),
        format!("{dev} rbps={rate} wbps=max riops=max wiops=max")
    );
    // io.max, and +io in the parent and the middle (the root has it already).
    let files: Vec<(&str, &str)> = fault
        .knobs
        .iter()
        .map(|k| (k.cgroup.as_str(), k.file.as_str()))
        .collect();
    assert_eq!(
        files,
        [
            (scene.parent.rel(), "cgroup.subtree_control"),
            (scene.middle.rel(), "cgroup.subtree_control"),
            (scene.target.rel(), "io.max"),
        ],
        "{:?}",
        fault.knobs
    );

    let (throttled, free) = (
        start_fio(&scene.target, &scene.disk.0, "64k", 6),
        start_fio(&scene.sibling, &scene.disk.0, "64k", 6),
    );
    let (throttled, free) = (fio_result(throttled), fio_result(free));
    eprintln!(
        "measured: fio --direct=1 under rbps 2 MiB/s read {:.3} MiB/s ({:.1} IOPS); its sibling {:.2} MiB/s at the same time",
        throttled.bytes_per_sec / 1048576.0,
        throttled.iops,
        free.bytes_per_sec / 1048576.0
    );
    let ratio = throttled.bytes_per_sec / rate as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "read {:.0} B/s under rbps {rate}",
        throttled.bytes_per_sec
    );
    assert!(
        free.bytes_per_sec > 3.0 * rate as f64,
        "the sibling was slowed too: {:.0} B/s",
        free.bytes_per_sec
    );
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert!(info.counters.affected > 0, "no I/O counted");

    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_eq!(scene.knobs(), before, "not as before after recover");
}

#[test]
fn io_throttle_caps_iops_and_ends_at_its_deadline() {
    let Some(daemon) = io_daemon() else { return };
    let scene = IoScene::new("io-iops");
    let before = scene.knobs();
    // Room for fio's 4 s under emulation with another guest busy: a run that once took over
    // 8 s (its reads came after an 8 s deadline) measured no throttle at all.
    let fault = inject(
        &daemon,
        &scene.target,
        scene.throttle(None, Some(50)),
        "30s",
    );
    let injected = std::time::Instant::now();
    let in_force = scene.knobs();
    assert!(
        in_force[3].contains(&format!("{} ", scene.disk.1)) && in_force[3].contains("riops=50"),
        "io.max after the inject: {in_force:?}"
    );
    let read = fio_result(start_fio(&scene.target, &scene.disk.0, "4k", 4));
    let fio_done = injected.elapsed();
    eprintln!(
        "measured: fio --direct=1 4k reads under riops 50: {:.1} IOPS (fio done {:.1} s after the inject)",
        read.iops,
        fio_done.as_secs_f64()
    );
    // What the kernel charged to the target, and the knobs then: a miss says whether fio's
    // reads were the target's and whether the limit was still written.
    assert!(
        (45.0..=55.0).contains(&read.iops),
        "{:.1} IOPS, fio done {:.1} s after the inject; knobs after fio {:?} (after the inject {in_force:?}); the target's io.stat: {:?}\n{}",
        read.iops,
        fio_done.as_secs_f64(),
        scene.knobs(),
        fs::read_to_string(scene.target.dir().join("io.stat")).unwrap_or_default(),
        daemon.log_text()
    );

    let ended = wait_for(Duration::from_secs(45), || {
        let f = block_on(daemon.client().get(&fault.id)).ok()?;
        (f.state != FaultState::Active).then_some(f)
    });
    assert!(ended.is_some(), "io.throttle outlived its deadline");
    assert_eq!(scene.knobs(), before, "not as before after the deadline");
}

#[test]
fn io_throttle_is_put_back_by_the_guardian_after_kill_9() {
    let Some(mut daemon) = io_daemon() else {
        return;
    };
    let scene = IoScene::new("io-kill");
    let before = scene.knobs();
    inject(
        &daemon,
        &scene.target,
        scene.throttle(Some("1MiB/s"), None),
        "10m",
    );
    assert_ne!(scene.knobs(), before);
    let guardian = daemon.guardian().expect("no guardian");
    let killed = Instant::now();
    daemon.kill9();
    let limit = Duration::from_millis(2500);
    let back = wait_for(limit, || (scene.knobs() == before).then_some(()));
    assert!(
        back.is_some(),
        "not as before {limit:?} after kill -9: {:?} (before {before:?})\n{}",
        scene.knobs(),
        daemon.log_text()
    );
    eprintln!(
        "measured: io.max and subtree_control back {:?} after kill -9",
        killed.elapsed()
    );
    assert!(Daemon::reap_guardian(&guardian, Duration::from_secs(10)));
}

#[test]
fn io_throttle_refuses_bad_disks_and_limits_and_leaves_nothing_written() {
    let daemon = Daemon::start();
    let cg = TestCgroup::new("io-bad");
    // Refused before anything is looked at, on every host.
    let bad = [
        (r#"{"device":"8:0"}"#, "at least one limit"),
        (r#"{"device":"8:0","riops":0}"#, "operations per second"),
        (r#"{"device":"8:0","rbps":"0"}"#, "above zero"),
        (r#"{"rbps":"1MiB"}"#, "exactly one of path and device"),
        (
            r#"{"path":"/","device":"8:0","rbps":"1MiB"}"#,
            "exactly one of path and device",
        ),
        (r#"{"device":"sda","rbps":"1MiB"}"#, "MAJ:MIN"),
    ];
    for (params, says) in bad {
        let fault = format!(r#"{{"kind":"io.throttle","params":{params}}}"#);
        let (status, body) = daemon.post_fault_text(&fault, cg.rel(), "30s");
        assert!((400..500).contains(&status), "{fault}: {status} {body}");
        assert!(body.contains(says), "{fault}: {body}");
    }
    if let Some(reason) = unsupported_reason(&daemon, "io.throttle") {
        assert!(reason.contains("no io controller"), "{reason}");
        let (status, body) = daemon.post_fault_text(
            r#"{"kind":"io.throttle","params":{"device":"8:0","rbps":"1MiB"}}"#,
            cg.rel(),
            "30s",
        );
        assert_eq!(status, 422, "{body}");
        assert!(body.contains("cgroup_no_v1"), "no fix named: {body}");
        return;
    }
    // Refused when the disk is looked up or written, with nothing left behind.
    let scene = IoScene::new("io-refused");
    let before = scene.knobs();
    let disks = [
        (r#""path":"/no/such/dir""#, "No such file"),
        (r#""path":"/proc""#, "no block device of its own"),
        (r#""path":"/dev/null""#, "character device"),
        (r#""device":"1:3""#, "no block device 1:3"),
    ];
    for (disk, says) in disks {
        let fault = format!(r#"{{"kind":"io.throttle","params":{{{disk},"rbps":"1MiB/s"}}}}"#);
        let (status, body) = daemon.post_fault_text(&fault, scene.target.rel(), "30s");
        assert_eq!(status, 400, "{fault}: {body}");
        assert!(body.contains(says), "{fault}: {body}");
        assert_eq!(scene.knobs(), before, "{fault} left something written");
    }
    // The middle cgroup holds a process: it may not enable io for its children, and the
    // parent's +io written before that is taken back.
    let _holder = spawn(&scene.middle, "sleep", &["600"]);
    let err = daemon
        .try_inject(&chaosd_integration::request(
            scene.throttle(Some("1MiB/s"), None),
            &[&scene.target],
            "30s",
        ))
        .expect_err("+io in a cgroup with processes")
        .to_string();
    assert!(err.contains("processes of its own"), "{err}");
    assert_eq!(
        scene.knobs(),
        before,
        "a refused io.throttle left something"
    );
}
