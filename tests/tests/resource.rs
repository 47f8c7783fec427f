//! Resource faults through cgroup v2 knobs, checked from outside: a busy loop under
//! `cpu.limit` gets its quota of a core (the cgroup's own CPU accounting), a process touching
//! more than `mem.pressure`'s high is throttled and not killed, `process.limit` makes `fork()`
//! fail with EAGAIN; every knob reads as before after recover and after the deadline.
//! `fd.limit` (prlimit, no controller needed: it runs on this host too) makes the target's
//! next `open()` fail with EMFILE while a sibling's opens succeed, and the limit reads as
//! before after recover and after the deadline.
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
        CpuLimitParams, FaultSpec, FaultState, FdLimitParams, InjectRequest, MemPressureParams,
        ProcessLimitParams, TargetSelector,
    },
    host::cgroup::spawn_in_cgroup,
};
use chaosd_integration::{
    Daemon, TestCgroup, block_on, inject, inject_request, skip, unsupported_reason, wait_for,
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
