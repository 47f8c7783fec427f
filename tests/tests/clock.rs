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
        offset: Some(offset.parse().unwrap()),
        drift: None,
        rate: None,
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
        let fault = format!(r#"{{"kind": "clock.skew", "params": {{"offset": "{offset}"}}}}"#);
        let (status, msg) = daemon.post_fault_text(&fault, target.rel(), "5s");
        assert!(
            status == 400 && msg.contains("offset"),
            "{offset}: {status} {msg}"
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

/// A runtime's program that answers each line on stdin with "realtime_ns monotonic_ns" as
/// that runtime reads them (its usual clock calls, through the vDSO), killed on drop.
struct Runtime {
    name: &'static str,
    /// Whether its realtime reading has the resolution to measure ±50 ppm over 10 s (Node's
    /// Date.now() has milliseconds only: its monotonic hrtime is measured).
    fine_realtime: bool,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PYTHON_CLOCKS: &str = "import sys, time\n\
    for _ in sys.stdin:\n\
    \x20   print(time.time_ns(), time.monotonic_ns(), flush=True)\n";

const NODE_CLOCKS: &str = "const rl = require('readline').createInterface({ input: process.stdin });\n\
    rl.on('line', () => process.stdout.write(`${BigInt(Date.now()) * 1000000n} ${process.hrtime.bigint()}\\n`));\n";

const JAVA_CLOCKS: &str = r#"
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.time.Instant;

public class Clocks {
    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        while (in.readLine() != null) {
            Instant now = Instant.now();
            long mono = System.nanoTime();
            System.out.println((now.getEpochSecond() * 1000000000L + now.getNano()) + " " + mono);
            System.out.flush();
        }
    }
}
"#;

const GO_CLOCKS: &str = r#"
package main

import (
	"bufio"
	"fmt"
	"os"
	"time"
)

func main() {
	start := time.Now()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		now := time.Now()
		fmt.Printf("%d %d\n", now.UnixNano(), now.Sub(start).Nanoseconds())
	}
}
"#;

impl Runtime {
    fn start(
        name: &'static str,
        cgroup: &TestCgroup,
        program: &std::path::Path,
        args: &[&str],
    ) -> Runtime {
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = spawn_in_cgroup(&mut cmd, cgroup.dir()).unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut r = Runtime {
            name,
            fine_realtime: name != "node",
            child,
            stdin,
            stdout,
        };
        // Started (a JVM takes a while) and past its first clock reads.
        for _ in 0..20 {
            r.ask();
        }
        r
    }

    fn ask(&mut self) -> (i128, i128) {
        writeln!(self.stdin, "?").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let f: Vec<i128> = line
            .split_whitespace()
            .map(|x| {
                x.parse()
                    .unwrap_or_else(|_| panic!("{}: {line:?}", self.name))
            })
            .collect();
        assert_eq!(f.len(), 2, "{}: {line:?}", self.name);
        (f[0], f[1])
    }

    /// The readings and the true clocks at the moment of the answer: of 30 tries, the one
    /// with the narrowest window between the true reads before and after.
    fn sample(&mut self) -> Sample {
        let mut best: Option<(i128, Sample)> = None;
        for _ in 0..30 {
            let (rt0, mono0) = (
                true_ns(libc::CLOCK_REALTIME),
                true_ns(libc::CLOCK_MONOTONIC),
            );
            let (rt, mono) = self.ask();
            let (rt1, mono1) = (
                true_ns(libc::CLOCK_REALTIME),
                true_ns(libc::CLOCK_MONOTONIC),
            );
            let window = mono1 - mono0;
            let s = Sample {
                rt,
                mono,
                true_rt: (rt0 + rt1) / 2,
                true_mono: (mono0 + mono1) / 2,
                window,
            };
            if best.as_ref().is_none_or(|(w, _)| window < *w) {
                best = Some((window, s));
            }
        }
        best.unwrap().1
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    rt: i128,
    mono: i128,
    true_rt: i128,
    true_mono: i128,
    /// ns between the true reads around the answer: the reading was taken within it.
    window: i128,
}

/// How far, in ppm, the measurement between `a` and `b` may be off by itself: each reading
/// lies within half its window of the midpoint it is compared with (microseconds on this
/// host, around a millisecond for a runtime under the VM harness's emulation).
fn measurement_bound_ppm(a: Sample, b: Sample) -> f64 {
    (a.window + b.window) as f64 / 2.0 / (b.true_mono - a.true_mono) as f64 * 1e6
}

/// (realtime, monotonic) drift in ppm between two samples, against the true clocks.
fn drift_ppm(a: Sample, b: Sample) -> (f64, f64) {
    let ppm = |read: i128, truth: i128| (read - truth) as f64 / truth as f64 * 1e6;
    (
        ppm(b.rt - a.rt, b.true_rt - a.true_rt),
        ppm(b.mono - a.mono, b.true_mono - a.true_mono),
    )
}

/// Builds the Java and Go programs (when those runtimes are here) into `dir`; the runtimes to
/// start as (name, program, args).
fn runtimes(dir: &std::path::Path) -> Vec<(&'static str, PathBuf, Vec<String>)> {
    let mut found = vec![(
        "python",
        PathBuf::from("python3"),
        vec!["-c".to_string(), PYTHON_CLOCKS.to_string()],
    )];
    if have("node") {
        found.push((
            "node",
            PathBuf::from("node"),
            vec!["-e".into(), NODE_CLOCKS.into()],
        ));
    } else {
        eprintln!("node not found: its check is left out");
    }
    let java = dir.join("Clocks.java");
    std::fs::write(&java, JAVA_CLOCKS).unwrap();
    if have("java") {
        found.push((
            "java",
            PathBuf::from("java"),
            vec![java.display().to_string()],
        ));
    } else {
        eprintln!("java not found: its check is left out");
    }
    let go_src = dir.join("clocks.go");
    let go_exe = dir.join("clocks");
    std::fs::write(&go_src, GO_CLOCKS).unwrap();
    let built = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&go_exe)
        .arg(&go_src)
        .status();
    if built.is_ok_and(|s| s.success()) {
        found.push(("go", go_exe, vec![]));
    } else {
        eprintln!("go not found or its build failed: its check is left out");
    }
    found
}

fn drift(offset: Option<&str>, drift: &str, clocks: &[ClockName]) -> FaultSpec {
    FaultSpec::ClockSkew(ClockSkewParams {
        offset: offset.map(|o| o.parse().unwrap()),
        drift: Some(drift.parse().unwrap()),
        rate: None,
        clocks: clocks.to_vec(),
    })
}

#[test]
fn drift_runs_the_clocks_of_python_node_java_and_go_fast_at_the_asked_rate() {
    let daemon = match daemon_or_skip() {
        Ok(d) => d,
        Err(reason) => skip!("{reason}"),
    };
    if !have("python3") {
        skip!("python3 not found");
    }
    const ASKED_PPM: f64 = 500.0;
    const TOLERANCE_PPM: f64 = 50.0;
    let dir = tempfile::tempdir().unwrap();
    let (target, sibling) = (
        TestCgroup::new("clock-drift"),
        TestCgroup::new("clock-still"),
    );
    let mut running: Vec<Runtime> = runtimes(dir.path())
        .into_iter()
        .map(|(name, program, args)| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Runtime::start(name, &target, &program, &args)
        })
        .collect();
    let mut still = Runtime::start(
        "python (sibling)",
        &sibling,
        std::path::Path::new("python3"),
        &["-c", PYTHON_CLOCKS],
    );
    let clocks = [ClockName::Realtime, ClockName::Monotonic];
    let fault = inject(
        &daemon,
        &target,
        drift(Some("+1h"), "+500ppm", &clocks),
        "60s",
    );

    let first: Vec<Sample> = running.iter_mut().map(Runtime::sample).collect();
    let still_first = still.sample();
    // The offset holds from the start (the drift adds microseconds so far).
    for (r, s) in running.iter().zip(&first) {
        let off = (s.rt - s.true_rt) as f64 / 1e9;
        assert!(
            (off - 3600.0).abs() < 0.05,
            "{}: realtime off by {off} s",
            r.name
        );
        let off = (s.mono - s.true_mono) as f64 / 1e9;
        if r.name != "go" {
            // Go's monotonic reading is relative to its own start: only its rate is checked.
            assert!(
                (off - 3600.0).abs() < 0.05,
                "{}: monotonic off by {off} s",
                r.name
            );
        }
    }
    std::thread::sleep(Duration::from_secs(10));
    let mut failures = Vec::new();
    for (r, a) in running.iter_mut().zip(&first) {
        let b = r.sample();
        assert!(b.mono > a.mono, "{}: the monotonic clock went back", r.name);
        let (rt, mono) = drift_ppm(*a, b);
        let bound = measurement_bound_ppm(*a, b);
        eprintln!(
            "measured: {} drift over {:.1} s: realtime {rt:+.1} ppm, monotonic {mono:+.1} ppm (asked {ASKED_PPM:+} ppm; measurement bound ±{bound:.1} ppm)",
            r.name,
            (b.true_mono - a.true_mono) as f64 / 1e9
        );
        let tolerance = TOLERANCE_PPM + bound;
        if r.fine_realtime && (rt - ASKED_PPM).abs() > tolerance {
            failures.push(format!("{} realtime {rt:+.1} ppm", r.name));
        }
        if (mono - ASKED_PPM).abs() > tolerance {
            failures.push(format!("{} monotonic {mono:+.1} ppm", r.name));
        }
    }
    let still_last = still.sample();
    let (rt, mono) = drift_ppm(still_first, still_last);
    eprintln!("measured: sibling python: realtime {rt:+.1} ppm, monotonic {mono:+.1} ppm");
    let tolerance = TOLERANCE_PPM + measurement_bound_ppm(still_first, still_last);
    if rt.abs() > tolerance || mono.abs() > tolerance {
        failures.push(format!("the sibling drifted: {rt:+.1} / {mono:+.1} ppm"));
    }
    assert!(
        failures.is_empty(),
        "not within ±{TOLERANCE_PPM} ppm (plus the measurement bound) of {ASKED_PPM:+} ppm: {failures:?}"
    );

    // Recovered, the clocks read true again (the drift so far and the offset both gone).
    block_on(daemon.client().recover(&fault.id)).unwrap();
    for r in running.iter_mut().filter(|r| r.name != "go") {
        let s = r.sample();
        let off = (s.rt - s.true_rt).abs();
        assert!(
            off < SLACK_NS,
            "{}: realtime {off} ns off after recover",
            r.name
        );
    }
}

#[test]
fn a_slow_drift_alone_never_takes_monotonic_back_and_ends_at_the_deadline() {
    let daemon = match daemon_or_skip() {
        Ok(d) => d,
        Err(reason) => skip!("{reason}"),
    };
    let Some(probe) = ProbeProgram::build() else {
        skip!("no C compiler for the probe");
    };
    let target = TestCgroup::new("clock-slow");
    let mut p = probe.start(&target, 2);
    let spec = FaultSpec::ClockSkew(ClockSkewParams {
        offset: None,
        drift: None,
        rate: Some(0.5),
        clocks: vec![ClockName::Realtime, ClockName::Monotonic],
    });
    // From the moment of injection: no step, then half speed. The clock is anchored while the
    // inject runs, so the first reading lies between the true time before the inject and the
    // true time after the reading (however long emulation makes the inject and the ask).
    let before = true_ns(libc::CLOCK_MONOTONIC);
    let fault = inject(&daemon, &target, spec, "3s");
    let a = p.ask();
    let t0 = true_ns(libc::CLOCK_MONOTONIC);
    within("CLOCK_MONOTONIC at injection", a.monotonic, before, t0);
    let mut last = a.monotonic;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        let r = p.ask();
        assert!(r.monotonic >= last, "CLOCK_MONOTONIC went back under drift");
        last = r.monotonic;
    }
    let (read, truth) = (last - a.monotonic, true_ns(libc::CLOCK_MONOTONIC) - t0);
    let rate = read as f64 / truth as f64;
    assert!(
        (0.45..0.55).contains(&rate),
        "monotonic ran at {rate:.3}, asked 0.5"
    );
    // gettimeofday and time() drift with CLOCK_REALTIME.
    let r = p.ask();
    assert!((r.gettimeofday - r.realtime).abs() < 1_000_000, "{r:?}");
    assert!(
        (r.time_s * 1_000_000_000 - r.realtime).abs() <= 1_000_000_000,
        "{r:?}"
    );

    let ended = wait_for(Duration::from_secs(10), || {
        let f = block_on(daemon.client().get(&fault.id)).ok()?;
        (f.state != chaosd::api::FaultState::Active).then_some(f)
    });
    assert!(ended.is_some(), "the drift outlived its deadline");
    p.expect(0, 0);
}
