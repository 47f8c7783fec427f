//! clock.skew figures: what a patched `clock_gettime` costs next to the native one, and how
//! exact the offset a skewed process reads is.
//!
//! - `chaosd-test-helper clock-bench`: one process patches its own vDSO with the daemon's detour code
//!   and times both (best of 5 rounds each, interleaved).
//! - The real path: two probe processes ([`super::syscall_probe::clock_probe`]) in two cgroups,
//!   one under a `clock.skew` fault the daemon injected; they take turns measuring ns per
//!   `clock_gettime(CLOCK_REALTIME)` and the offset between the vDSO's answer and the
//!   kernel's (a system call, which the fault leaves alone).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    cgroup::BenchCgroups,
    daemon::Daemon,
    stats::{median, round3, spread},
};

/// Offsets asked, as the API spells them, and in ns.
const OFFSETS: &[(&str, f64)] = &[("+90s", 90e9), ("-2h30m", -9_000e9)];
/// Calls per timed run (the probe reports the median of 9 runs).
const ITERATIONS: u64 = 200_000;

pub fn measure(
    daemon: &Daemon,
    cgroups: &mut BenchCgroups,
    bin_dir: &Path,
    rounds: usize,
) -> Result<Value> {
    let micro = chaosctl_clock_bench(bin_dir)?;
    if let Some(reason) = daemon.unsupported_reason("clock.skew")? {
        return Ok(json!({ "chaosctl_clock_bench": micro, "under_a_fault": reason }));
    }
    let native_cg = cgroups.child("clock-native")?;
    let skewed_cg = cgroups.child("clock-skewed")?;
    let mut native = ClockProbe::start(&cgroups.dir_of(&native_cg))?;
    let mut skewed = ClockProbe::start(&cgroups.dir_of(&skewed_cg))?;
    let (mut native_ns, mut patched_ns, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    for &(offset, asked_ns) in OFFSETS {
        let fault =
            json!({"kind": "clock.skew", "params": {"offset": offset, "clocks": ["realtime"]}});
        let id = daemon.inject(fault, std::slice::from_ref(&skewed_cg), "300s")?;
        let (mut seen, mut native_offsets) = (Vec::new(), Vec::new());
        let run = (0..rounds).try_for_each(|_| {
            let n = native.measure()?;
            let s = skewed.measure()?;
            native_ns.push(n.ns_per_call);
            native_offsets.push(n.offset_ns);
            patched_ns.push(s.ns_per_call);
            seen.push(s.offset_ns);
            anyhow::Ok(())
        });
        daemon.recover(&id)?;
        run?;
        let error = median(&seen) - asked_ns;
        let errors: Vec<f64> = seen.iter().map(|s| s - asked_ns).collect();
        rows.push(json!({
            "asked_offset": offset,
            "offset_error_ns_median": round3(error),
            "offset_error_ns_spread": spread(&errors),
            "unskewed_process_offset_ns_median": round3(median(&native_offsets)),
            "unskewed_process_offset_ns_spread": spread(&native_offsets),
        }));
    }
    let (n, p) = (median(&native_ns), median(&patched_ns));
    Ok(json!({
        "chaosctl_clock_bench": micro,
        "under_a_fault": {
            "rounds_per_offset": rounds,
            "calls_per_run": ITERATIONS,
            "native_ns_per_call_median": round3(n),
            "native_ns_per_call_spread": spread(&native_ns),
            "patched_ns_per_call_median": round3(p),
            "patched_ns_per_call_spread": spread(&patched_ns),
            "patched_vs_native": round3(p / n),
            "offsets": rows,
        },
    }))
}

/// `chaosd-test-helper clock-bench`'s JSON, ratio rounded (the key stays
/// `chaosctl_clock_bench`, where chaosctl ran it before, so runs stay comparable).
fn chaosctl_clock_bench(bin_dir: &Path) -> Result<Value> {
    let helper = bin_dir.join("chaosd-test-helper");
    let out = Command::new(&helper)
        .args(["clock-bench", "--iterations", "1000000"])
        .output()
        .with_context(|| format!("running {} clock-bench", helper.display()))?;
    if !out.status.success() {
        return Ok(json!(format!(
            "not measured: chaosd-test-helper clock-bench failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut v: Value =
        serde_json::from_slice(&out.stdout).context("chaosd-test-helper clock-bench")?;
    for k in ["native_ns", "patched_ns", "ratio"] {
        v[k] = json!(round3(v[k].as_f64().unwrap_or(f64::NAN)));
    }
    v["note"] = json!("in-process: best of 5 rounds of 1,000,000 calls each");
    Ok(v)
}

/// One measurement of a probe.
struct Reading {
    ns_per_call: f64,
    offset_ns: f64,
}

/// A clock probe process in a cgroup, killed on drop.
struct ClockProbe {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl ClockProbe {
    fn start(cgroup: &Path) -> Result<ClockProbe> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("__bench-clock-probe")
            .arg("--cgroup")
            .arg(cgroup)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the clock probe")?;
        let out = BufReader::new(child.stdout.take().context("probe stdout")?);
        let mut probe = ClockProbe { child, out };
        if probe.line()? != "ready" {
            bail!("the clock probe did not start");
        }
        Ok(probe)
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.out.read_line(&mut line)? == 0 {
            bail!("the clock probe ended");
        }
        Ok(line.trim().to_owned())
    }

    fn measure(&mut self) -> Result<Reading> {
        let stdin = self.child.stdin.as_mut().context("probe stdin")?;
        writeln!(stdin, "{ITERATIONS}")?;
        let v: Value = serde_json::from_str(&self.line()?)?;
        Ok(Reading {
            ns_per_call: v["ns_per_call"].as_f64().unwrap_or(f64::NAN),
            offset_ns: v["offset_ns"].as_f64().unwrap_or(f64::NAN),
        })
    }
}

impl Drop for ClockProbe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
