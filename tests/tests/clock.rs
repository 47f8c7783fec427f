//! Clock skew, checked from outside: programs in the target cgroup (running before the fault,
//! and exec'd after it) read their clocks shifted by the offset; a sibling cgroup reads the true
//! time; after recover, and after the deadline even with the daemon killed, everyone reads the
//! true time again.
//!
//! "True time" is read with the raw clock_gettime system call, which no vDSO patch can touch,
//! right before and right after the probe answers; a probe's reading must fall in that window
//! shifted by the offset, with [`SLACK_NS`] of tolerance.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use chaosd::{
    api::{ClockName, ClockSkewParams, FaultSpec},
    client::ClientError,
    host::cgroup::spawn_in_cgroup,
};
use chaosd_integration::{
    Daemon, TestCgroup, block_on, helper_bin, inject, inject_request, request, skip,
    unsupported_reason, wait_for,
};

const SLACK_NS: i128 = 50_000_000;
const HOUR_NS: i128 = 3_600_000_000_000;
/// -2h30m, the offset most tests inject.
const OFFSET_NS: i128 = -(2 * HOUR_NS + HOUR_NS / 2);

/// A C program that answers each line on stdin with its clock readings, from a second thread,
/// while `argv[1]` more threads call clock_gettime in a loop.
const PROBE_C: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static volatile int stop;

static void *spin(void *arg) {
    struct timespec ts;
    (void)arg;
    while (!stop) clock_gettime(CLOCK_REALTIME, &ts);
    return NULL;
}

static void *answer(void *arg) {
    char line[64];
    (void)arg;
    while (fgets(line, sizeof line, stdin)) {
        struct timespec rt, mono;
        struct timeval tv;
        clock_gettime(CLOCK_REALTIME, &rt);
        clock_gettime(CLOCK_MONOTONIC, &mono);
        gettimeofday(&tv, NULL);
        time_t t = time(NULL);
        printf("%lld %lld %lld %lld\n",
               (long long)rt.tv_sec * 1000000000LL + rt.tv_nsec,
               (long long)mono.tv_sec * 1000000000LL + mono.tv_nsec,
               (long long)tv.tv_sec * 1000000000LL + tv.tv_usec * 1000LL,
               (long long)t);
        fflush(stdout);
    }
    stop = 1;
    return NULL;
}

int main(int argc, char **argv) {
    int spinners = argc > 1 ? atoi(argv[1]) : 0;
    pthread_t threads[16], answerer;
    if (spinners > 16) spinners = 16;
    for (int i = 0; i < spinners; i++) pthread_create(&threads[i], NULL, spin, NULL);
    pthread_create(&answerer, NULL, answer, NULL);
    pthread_join(answerer, NULL);
    for (int i = 0; i < spinners; i++) pthread_join(threads[i], NULL);
    return 0;
}
"#;

/// The probe program, compiled once into a temp dir (None: no C compiler here).
struct ProbeProgram {
    _dir: tempfile::TempDir,
    exe: PathBuf,
}

impl ProbeProgram {
    fn build() -> Option<ProbeProgram> {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("probe.c");
        let exe = dir.path().join("probe");
        std::fs::write(&src, PROBE_C).unwrap();
        let built = Command::new("cc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&exe)
            .arg(&src)
            .status()
            .ok()?;
        built.success().then_some(ProbeProgram { _dir: dir, exe })
    }

    fn start(&self, cgroup: &TestCgroup, spinners: u32) -> RunningProbe {
        let mut cmd = Command::new(&self.exe);
        cmd.arg(spinners.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = spawn_in_cgroup(&mut cmd, cgroup.dir()).unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        RunningProbe {
            child,
            stdin,
            stdout,
        }
    }
}

/// One probe's clock readings, ns (time(2): whole seconds).
#[derive(Debug)]
struct Readings {
    realtime: i128,
    monotonic: i128,
    gettimeofday: i128,
    time_s: i128,
}

/// A running probe, killed on drop.
struct RunningProbe {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl RunningProbe {
    fn ask(&mut self) -> Readings {
        self.stdin.write_all(b"?\n").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let f: Vec<i128> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(f.len(), 4, "bad probe line {line:?}");
        Readings {
            realtime: f[0],
            monotonic: f[1],
            gettimeofday: f[2],
            time_s: f[3],
        }
    }

    /// Asks and checks every clock against the true ones, shifted by `realtime_offset` (and
    /// `monotonic_offset` for CLOCK_MONOTONIC).
    fn expect(&mut self, realtime_offset: i128, monotonic_offset: i128) {
        let (rt0, mono0) = (
            true_ns(libc::CLOCK_REALTIME),
            true_ns(libc::CLOCK_MONOTONIC),
        );
        let r = self.ask();
        let (rt1, mono1) = (
            true_ns(libc::CLOCK_REALTIME),
            true_ns(libc::CLOCK_MONOTONIC),
        );
        within("CLOCK_REALTIME", r.realtime - realtime_offset, rt0, rt1);
        within(
            "CLOCK_MONOTONIC",
            r.monotonic - monotonic_offset,
            mono0,
            mono1,
        );
        within(
            "gettimeofday",
            r.gettimeofday - realtime_offset,
            rt0 - 1000,
            rt1,
        );
        let t = r.time_s * 1_000_000_000 - realtime_offset;
        within("time", t, rt0 - 1_000_000_000, rt1);
    }
}

impl Drop for RunningProbe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A clock read by the raw system call: what the kernel says, whatever the vDSO does.
fn true_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the raw system call with a valid timespec pointer.
    let rc = unsafe { libc::syscall(libc::SYS_clock_gettime, clock, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

fn within(what: &str, unskewed: i128, from: i128, to: i128) {
    assert!(
        unskewed >= from - SLACK_NS && unskewed <= to + SLACK_NS,
        "{what}: read {unskewed} minus the offset, but the true clock was between {from} and {to} \
         ({:.3} s off)",
        (unskewed - from) as f64 / 1e9
    );
}

/// Runs a program in `cgroup` that prints the realtime clock in seconds; checks it against
/// the true one shifted by `offset`.
fn expect_program(cgroup: &TestCgroup, program: &str, args: &[&str], offset: i128) {
    let mut cmd = Command::new(program);
    cmd.args(args).stdout(Stdio::piped());
    let before = true_ns(libc::CLOCK_REALTIME);
    let out = spawn_in_cgroup(&mut cmd, cgroup.dir())
        .unwrap()
        .wait_with_output()
        .unwrap();
    let after = true_ns(libc::CLOCK_REALTIME);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{program} failed: {text}");
    let seconds: f64 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{program}: {text:?}"));
    within(program, (seconds * 1e9) as i128 - offset, before, after);
}

fn date_in(cgroup: &TestCgroup, offset: i128) {
    expect_program(cgroup, "date", &["+%s.%N"], offset);
}

fn python_in(cgroup: &TestCgroup, offset: i128) {
    let code = "import time; print('%.6f' % time.time())";
    expect_program(cgroup, "python3", &["-c", code], offset);
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn skew(offset: &str, clocks: &[ClockName]) -> FaultSpec {
    FaultSpec::ClockSkew(ClockSkewParams {
        offset: offset.parse().unwrap(),
        clocks: clocks.to_vec(),
    })
}

/// The daemon, or the reason this host cannot skew clocks.
fn daemon_or_skip() -> Result<Daemon, String> {
    let daemon = Daemon::start();
    match unsupported_reason(&daemon, "clock.skew") {
        None => Ok(daemon),
        Some(reason) => Err(reason),
    }
}

#[test]
fn running_and_new_processes_are_skewed_until_recover() {
    let daemon = match daemon_or_skip() {
        Ok(d) => d,
        Err(reason) => skip!("clock.skew unsupported: {reason}"),
    };
    let Some(probe) = ProbeProgram::build() else {
        skip!("no working C compiler (cc) to build the clock probe");
    };
    let target = TestCgroup::new("clock");
    let sibling = TestCgroup::new("clock-sibling");
    // Four threads hammer clock_gettime while the daemon patches the process.
    let mut running = probe.start(&target, 4);
    let mut bystander = probe.start(&sibling, 0);
    running.expect(0, 0);

    let clocks = [ClockName::Realtime, ClockName::Monotonic];
    let fault = inject(&daemon, &target, skew("-2h30m", &clocks), "30s");
    assert!(fault.counters.affected >= 1, "{:?}", fault.counters);
    running.expect(OFFSET_NS, OFFSET_NS);
    bystander.expect(0, 0);

    // Started after the fault: caught at exec and patched before they read a clock.
    let mut late = probe.start(&target, 2);
    late.expect(OFFSET_NS, OFFSET_NS);
    date_in(&target, OFFSET_NS);
    date_in(&sibling, 0);
    if have("python3") {
        python_in(&target, OFFSET_NS);
    } else {
        eprintln!("python3 not found: its check is left out");
    }

    block_on(daemon.client().recover(&fault.id)).unwrap();
    running.expect(0, 0);
    late.expect(0, 0);
    date_in(&target, 0);
    bystander.expect(0, 0);
}

#[test]
fn the_skew_ends_at_the_deadline_even_if_the_daemon_is_killed() {
    let mut daemon = match daemon_or_skip() {
        Ok(d) => d,
        Err(reason) => skip!("clock.skew unsupported: {reason}"),
    };
    let Some(probe) = ProbeProgram::build() else {
        skip!("no working C compiler (cc) to build the clock probe");
    };
    let target = TestCgroup::new("clock-deadline");
    let mut running = probe.start(&target, 1);
    inject(&daemon, &target, skew("+90s", &[ClockName::Realtime]), "2s");
    running.expect(90_000_000_000, 0);
    // Nobody restores the vDSO now: the detour must stop by itself.
    daemon.kill9();
    let unskewed = wait_for(Duration::from_secs(5), || {
        let r = running.ask();
        (r.realtime - true_ns(libc::CLOCK_REALTIME) < 1_000_000_000).then_some(())
    });
    assert!(unskewed.is_some(), "still skewed 5 s after the deadline");
    running.expect(0, 0);
}

#[test]
fn a_restarted_daemon_restores_what_a_killed_one_skewed() {
    let daemon = match daemon_or_skip() {
        Ok(d) => d,
        Err(reason) => skip!("clock.skew unsupported: {reason}"),
    };
    let Some(probe) = ProbeProgram::build() else {
        skip!("no working C compiler (cc) to build the clock probe");
    };
    let target = TestCgroup::new("clock-restart");
    let mut running = probe.start(&target, 1);
    inject(&daemon, &target, skew("+1h", &[ClockName::Realtime]), "60s");
    running.expect(HOUR_NS, 0);
    // The new daemon finds the fault in the journal and restores the vDSO long before the
    // deadline.
    let _daemon = daemon.restart();
    running.expect(0, 0);
}

#[test]
fn forked_children_inherit_the_skew() {
    let daemon = match daemon_or_skip() {
        Ok(d) => d,
        Err(reason) => skip!("clock.skew unsupported: {reason}"),
    };
    if !have("python3") {
        skip!("python3 not found: it forks the child under test");
    }
    let target = TestCgroup::new("clock-fork");
    let fault = inject(&daemon, &target, skew("-1h", &[ClockName::Realtime]), "20s");
    // The parent is patched at exec; the child only by inheriting its memory.
    let code = "import os, time\nif os.fork() == 0:\n    print('%.6f' % time.time())\nelse:\n    os.wait()";
    expect_program(&target, "python3", &["-c", code], -HOUR_NS);
    block_on(daemon.client().recover(&fault.id)).unwrap();
}

/// A shell loop that execs `true` over and over and counts its rounds in a file.
struct ExecLoop {
    child: Child,
    counter: PathBuf,
}

impl ExecLoop {
    fn start(cgroup: &TestCgroup, dir: &std::path::Path, name: &str) -> ExecLoop {
        let counter = dir.join(name);
        let script = format!(
            "t=/bin/true; [ -x $t ] || t=/usr/bin/true; i=0; while :; do $t; i=$((i+1)); echo $i > {}; done",
            counter.display()
        );
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", &script]);
        let child = spawn_in_cgroup(&mut cmd, cgroup.dir()).unwrap();
        ExecLoop { child, counter }
    }

    fn rounds(&self) -> u64 {
        std::fs::read_to_string(&self.counter)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until the loop has gone `more` rounds further: it is neither stuck nor stopped.
    fn progresses(&self, more: u64) -> bool {
        let start = self.rounds();
        wait_for(Duration::from_secs(5), || {
            (self.rounds() >= start + more).then_some(())
        })
        .is_some()
    }
}

impl Drop for ExecLoop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn processes_exiting_and_execing_mid_patch_never_break_the_fault() {
    let daemon = match daemon_or_skip() {
        Ok(d) => d,
        Err(reason) => skip!("clock.skew unsupported: {reason}"),
    };
    let target = TestCgroup::new("clock-churn");
    let dir = tempfile::tempdir().unwrap();
    // Each round forks and execs a process that exits at once: the inject's walk over the
    // cgroup meets processes that vanish, and the exec hook stops and patches each new one.
    let loops: Vec<ExecLoop> = (0..2)
        .map(|i| ExecLoop::start(&target, dir.path(), &format!("loop{i}")))
        .collect();
    assert!(loops[0].progresses(20), "the exec loop does not run");
    let fault = inject(&daemon, &target, skew("-1h", &[ClockName::Realtime]), "20s");
    for l in &loops {
        assert!(l.progresses(20), "an exec loop got stuck under the fault");
    }
    date_in(&target, -HOUR_NS);
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert!(info.counters.affected >= 20, "{:?}", info.counters);
    block_on(daemon.client().recover(&fault.id)).unwrap();
    for l in &loops {
        assert!(l.progresses(20), "an exec loop got stuck after recover");
    }
    date_in(&target, 0);
    block_on(daemon.client().status()).expect("the daemon still answers");
}

#[test]
fn bad_offsets_and_overlapping_skews_are_refused() {
    let daemon = match daemon_or_skip() {
        Ok(d) => d,
        Err(reason) => skip!("clock.skew unsupported: {reason}"),
    };
    let target = TestCgroup::new("clock-refuse");
    let child = target.child("inner");
    for offset in ["soon", "0s", "-"] {
        let err = daemon
            .try_inject(&request(
                skew(offset, &[ClockName::Realtime]),
                &[&target],
                "5s",
            ))
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Api(m, s) if s.as_u16() == 400 && m.contains("offset")),
            "{offset}: {err}"
        );
    }
    let first = inject(&daemon, &target, skew("1h", &[ClockName::Realtime]), "10s");
    let err = daemon
        .try_inject(&request(skew("2h", &[ClockName::Tai]), &[&child], "5s"))
        .unwrap_err();
    assert!(err.to_string().contains("overlaps"), "{err}");
    block_on(daemon.client().recover(&first.id)).unwrap();
    // Once the first is gone, the inner cgroup can be skewed.
    let second = inject_request(
        &daemon,
        &request(skew("2h", &[ClockName::Tai]), &[&child], "5s"),
    );
    block_on(daemon.client().recover(&second.id)).unwrap();
}

#[test]
fn the_benchmark_measures_a_working_detour() {
    if !cfg!(target_arch = "x86_64") {
        skip!("clock skew is x86_64 only");
    }
    let out = Command::new(helper_bin())
        .args(["clock-bench", "--iterations", "20000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // The benchmark fails unless the patched clock really reads one hour ahead.
    assert!(
        out.status.success(),
        "clock-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    for field in ["native_ns", "patched_ns", "ratio"] {
        assert!(report[field].as_f64().is_some_and(|v| v > 0.0), "{report}");
    }
}
