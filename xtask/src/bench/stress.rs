//! Stress accuracy next to stress-ng (Debian): both in the same cgroup, taking turns.
//!
//! - CPU: one worker at 25, 50 and 90 % of a core, chaosd's `stress.cpu` (`workers: 1`) and
//!   `stress-ng --cpu 1 --cpu-load P`. The load is the cgroup's CPU time (`cpu.stat`
//!   `usage_usec`, which cgroup2 keeps without the cpu controller) over a window of wall time,
//!   after a warm-up.
//! - Memory: 512 MiB resident, chaosd's `stress.mem` and
//!   `stress-ng --vm 1 --vm-bytes 512M --vm-keep`. Resident is the summed RSS of the cgroup's
//!   processes once it stopped growing; PSS (shared pages split between their users) beside
//!   it, and `memory.current` where the memory controller is enabled (not on the dev host).
//!
//! Each round both tools take one turn at every setting, which one goes first alternating by
//! round. A turn's error is measured minus asked, in percentage points (of one core; of the
//! asked size). The figure per tool is the median error and its spread (lowest..highest
//! round) against the goal of ±[`GOAL_PTS`].

use std::{
    io::{Read as _, Seek as _},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    cgroup::{BenchCgroups, join_before_exec},
    daemon::Daemon,
    stats::{median, round3},
};

/// How close to the asked load or size a tool should come, in percentage points.
pub const GOAL_PTS: f64 = 3.0;
/// The memory figure's size: 512 MiB.
const MEM_BYTES: u64 = 512 << 20;
/// How long either tool is told to run at most, so nothing outlives a killed bench for long.
const TURN_LIMIT_S: u64 = 300;

/// Sizes of the stress figures.
pub struct Plan {
    pub rounds: usize,
    /// From the first worker in the cgroup to the start of the window.
    pub warmup: Duration,
    /// CPU time is read at both ends of it; memory is sampled through it.
    pub window: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Chaosd,
    StressNg,
}

impl Tool {
    const BOTH: [Tool; 2] = [Tool::Chaosd, Tool::StressNg];

    fn key(self) -> &'static str {
        match self {
            Tool::Chaosd => "chaosd",
            Tool::StressNg => "stress_ng",
        }
    }

    /// Both tools, the first alternating with the round.
    fn order(round: usize) -> [Tool; 2] {
        if round.is_multiple_of(2) {
            Tool::BOTH
        } else {
            [Tool::StressNg, Tool::Chaosd]
        }
    }
}

#[derive(Clone, Copy)]
enum Work {
    /// Percent of one core.
    Cpu(f64),
    /// Bytes resident.
    Mem(u64),
}

pub fn measure(daemon: &Daemon, cgroups: &mut BenchCgroups, plan: &Plan) -> Result<Value> {
    let stress_ng = stress_ng_version()?;
    // One cgroup for both tools: the same accounting, the same place in the hierarchy.
    let target = cgroups.child("stress")?;
    let loads = [25.0, 50.0, 90.0];
    // errors[load][tool] over rounds, in points.
    let mut cpu: Vec<[Vec<f64>; 2]> = loads.iter().map(|_| Default::default()).collect();
    let mut mem: [Vec<MemSample>; 2] = Default::default();
    let started = Instant::now();
    for round in 0..plan.rounds {
        for (i, &load) in loads.iter().enumerate() {
            for tool in Tool::order(round) {
                let measured = cpu_turn(tool, daemon, cgroups, &target, load, plan)
                    .with_context(|| format!("{} at {load} % CPU", tool.key()))?;
                cpu[i][tool as usize].push(measured - load);
            }
        }
        for tool in Tool::order(round) {
            let sample = mem_turn(tool, daemon, cgroups, &target, plan)
                .with_context(|| format!("{} holding 512 MiB", tool.key()))?;
            mem[tool as usize].push(sample);
        }
    }
    let mut summary = Vec::new();
    let cpu_rows: Vec<Value> = loads
        .iter()
        .zip(&cpu)
        .map(|(load, errs)| {
            let mut row = json!({"asked_percent_of_a_core": load});
            for tool in Tool::BOTH {
                let e = &errs[tool as usize];
                summary.push(format!("cpu {load}% {}: {}", tool.key(), brief(e)));
                row[tool.key()] = error_figures(e, |err| load + err);
            }
            row
        })
        .collect();
    let mut mem_row = json!({"asked_bytes": MEM_BYTES});
    for tool in Tool::BOTH {
        let samples = &mem[tool as usize];
        let pts = |bytes: f64| 100.0 * (bytes - MEM_BYTES as f64) / MEM_BYTES as f64;
        let rss_err: Vec<f64> = samples.iter().map(|s| pts(s.rss)).collect();
        let pss_err: Vec<f64> = samples.iter().map(|s| pts(s.pss)).collect();
        let current: Vec<f64> = samples.iter().filter_map(|s| s.memory_current).collect();
        summary.push(format!(
            "mem 512MiB {} (rss): {}",
            tool.key(),
            brief(&rss_err)
        ));
        let mut figures =
            error_figures(&rss_err, |err| MEM_BYTES as f64 * (1.0 + err / 100.0) / MIB);
        let extra = json!({
            "pss_error_pts_median": round3(median(&pss_err)),
            "pss_error_pts_min": round3(min(&pss_err)),
            "pss_error_pts_max": round3(max(&pss_err)),
            "memory_current_error_pts_median": if current.is_empty() {
                json!("not measured: the memory controller is not enabled for the bench's cgroup")
            } else {
                json!(round3(median(&current.iter().map(|b| pts(*b)).collect::<Vec<_>>())))
            },
            "processes": samples.iter().map(|s| s.processes).max().unwrap_or(0),
            "settle_s_median": round3(median(&samples.iter().map(|s| s.settle_s).collect::<Vec<_>>())),
        });
        figures = super::merge(figures, extra);
        // error_figures names the measured value by the CPU figure's unit; here it is MiB.
        if let Some(obj) = figures.as_object_mut()
            && let Some(v) = obj.remove("measured_median")
        {
            obj.insert("rss_mib_median".into(), v);
        }
        mem_row[tool.key()] = figures;
    }
    Ok(json!({
        "peer": stress_ng,
        "cgroup": "one cgroup for both tools; they take turns, the first alternating by round",
        "cpu_measure": "the cgroup's cpu.stat usage_usec over the window / the window's wall \
            time, in % of one core; error = measured - asked, percentage points",
        "mem_measure": "summed RSS (and PSS) of the cgroup's processes once it stopped growing, \
            median of samples through the window; error in points of the asked 512 MiB",
        "rounds": plan.rounds,
        "warmup_s": plan.warmup.as_secs_f64(),
        "window_s": plan.window.as_secs_f64(),
        "goal": format!("every round within ±{GOAL_PTS} pts"),
        "cpu": cpu_rows,
        "mem_512mib": mem_row,
        "summary": summary.join("; "),
        "duration_s": round3(started.elapsed().as_secs_f64()),
    }))
}

const MIB: f64 = (1u64 << 20) as f64;

/// Median, spread and goal of one tool's errors (points); `value` turns an error back into the
/// measured figure.
fn error_figures(errs: &[f64], value: impl Fn(f64) -> f64) -> Value {
    let within = errs.iter().filter(|e| e.abs() <= GOAL_PTS).count();
    json!({
        "measured_median": round3(value(median(errs))),
        "error_pts_median": round3(median(errs)),
        "error_pts_min": round3(min(errs)),
        "error_pts_max": round3(max(errs)),
        "error_pts": errs.iter().map(|e| round3(*e)).collect::<Vec<_>>(),
        "rounds_within_goal": format!("{within}/{}", errs.len()),
        "goal_met": within == errs.len(),
    })
}

/// `+0.4 pts (-0.2..+1.1), 5/5 within ±3`.
fn brief(errs: &[f64]) -> String {
    let within = errs.iter().filter(|e| e.abs() <= GOAL_PTS).count();
    format!(
        "{:+.1} pts ({:+.1}..{:+.1}), {within}/{} within ±{GOAL_PTS}",
        median(errs),
        min(errs),
        max(errs),
        errs.len()
    )
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// One turn at a CPU load: the cgroup's CPU time over the window, in % of one core.
fn cpu_turn(
    tool: Tool,
    daemon: &Daemon,
    cgroups: &BenchCgroups,
    target: &str,
    load: f64,
    plan: &Plan,
) -> Result<f64> {
    let mut turn = Turn::start(tool, daemon, cgroups, target, Work::Cpu(load))?;
    turn.wait_for_workers()?;
    thread::sleep(plan.warmup);
    let (used0, t0) = (cgroups.cpu_usage_usec(target)?, Instant::now());
    thread::sleep(plan.window);
    let (used1, wall) = (cgroups.cpu_usage_usec(target)?, t0.elapsed());
    turn.check_running()?;
    turn.stop()?;
    Ok(100.0 * used1.saturating_sub(used0) as f64 / wall.as_micros() as f64)
}

/// What a memory turn read.
struct MemSample {
    rss: f64,
    pss: f64,
    memory_current: Option<f64>,
    processes: usize,
    settle_s: f64,
}

/// One turn at holding [`MEM_BYTES`]: waits until the summed RSS stops growing, then samples
/// it through the window.
fn mem_turn(
    tool: Tool,
    daemon: &Daemon,
    cgroups: &BenchCgroups,
    target: &str,
    plan: &Plan,
) -> Result<MemSample> {
    let mut turn = Turn::start(tool, daemon, cgroups, target, Work::Mem(MEM_BYTES))?;
    turn.wait_for_workers()?;
    let started = Instant::now();
    // Settled: past half the size, and the last second's samples within 1 MiB of each other.
    const STEP: Duration = Duration::from_millis(200);
    let mut recent: Vec<u64> = Vec::new();
    loop {
        let rss = resident(cgroups, target).rss;
        recent.push(rss);
        if recent.len() > 5 {
            recent.remove(0);
        }
        let spread = recent.iter().max().unwrap_or(&0) - recent.iter().min().unwrap_or(&0);
        if recent.len() == 5 && rss > MEM_BYTES / 2 && spread < 1 << 20 {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "the cgroup's RSS did not settle within 60 s (last {} MiB)",
                rss >> 20
            );
        }
        turn.check_running()?;
        thread::sleep(STEP);
    }
    let settle_s = started.elapsed().as_secs_f64();
    let (mut rss, mut pss, mut current, mut processes) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let t0 = Instant::now();
    while t0.elapsed() < plan.window {
        let r = resident(cgroups, target);
        rss.push(r.rss as f64);
        pss.push(r.pss as f64);
        processes = processes.max(r.processes);
        if let Some(c) = cgroups.memory_current(target) {
            current.push(c as f64);
        }
        thread::sleep(Duration::from_millis(250));
    }
    turn.check_running()?;
    turn.stop()?;
    Ok(MemSample {
        rss: median(&rss),
        pss: median(&pss),
        memory_current: (!current.is_empty()).then(|| median(&current)),
        processes,
        settle_s,
    })
}

/// Summed resident memory of a cgroup's processes.
struct Resident {
    rss: u64,
    pss: u64,
    processes: usize,
}

fn resident(cgroups: &BenchCgroups, target: &str) -> Resident {
    let pids = cgroups.pids(target);
    let mut r = Resident {
        rss: 0,
        pss: 0,
        processes: pids.len(),
    };
    for pid in pids {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let kib = |field: &str| -> u64 {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(field)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
        };
        r.rss += kib("Rss:") * 1024;
        r.pss += kib("Pss:") * 1024;
    }
    r
}

/// One tool at work in the cgroup; stopped (and the cgroup emptied) by [`Turn::stop`] or on
/// drop.
struct Turn<'a> {
    cgroups: &'a BenchCgroups,
    target: &'a str,
    running: Running<'a>,
}

enum Running<'a> {
    Chaosd { daemon: &'a Daemon, id: String },
    StressNg { child: Child, stderr: std::fs::File },
    Stopped,
}

impl<'a> Turn<'a> {
    fn start(
        tool: Tool,
        daemon: &'a Daemon,
        cgroups: &'a BenchCgroups,
        target: &'a str,
        work: Work,
    ) -> Result<Turn<'a>> {
        if !cgroups.pids(target).is_empty() {
            bail!("{target} is not empty before a turn");
        }
        let running = match tool {
            Tool::Chaosd => {
                let fault = match work {
                    Work::Cpu(load) => {
                        json!({"kind": "stress.cpu", "params": {"load": load, "workers": 1}})
                    }
                    Work::Mem(bytes) => {
                        json!({"kind": "stress.mem", "params": {"size": format!("{}MiB", bytes >> 20)}})
                    }
                };
                let duration = format!("{TURN_LIMIT_S}s");
                let id = daemon.inject(fault, &[target.to_owned()], &duration)?;
                Running::Chaosd { daemon, id }
            }
            Tool::StressNg => {
                let mut cmd = Command::new("stress-ng");
                match work {
                    Work::Cpu(load) => {
                        cmd.args(["--cpu", "1", "--cpu-load", &format!("{load}")]);
                    }
                    Work::Mem(bytes) => {
                        cmd.args(["--vm", "1", "--vm-bytes", &format!("{}M", bytes >> 20)])
                            .arg("--vm-keep");
                    }
                }
                let stderr = tempfile::tempfile().context("a file for stress-ng's stderr")?;
                cmd.args(["--timeout", &format!("{TURN_LIMIT_S}s"), "--quiet"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(stderr.try_clone()?);
                join_before_exec(&mut cmd, &cgroups.dir_of(target))?;
                let child = cmd
                    .spawn()
                    .context("starting stress-ng (Debian package stress-ng)")?;
                Running::StressNg { child, stderr }
            }
        };
        Ok(Turn {
            cgroups,
            target,
            running,
        })
    }

    /// Until the worker (not only a launcher) is in the cgroup: chaosd's worker is the only
    /// process there, stress-ng's stressor is its second.
    fn wait_for_workers(&mut self) -> Result<()> {
        let want = match self.running {
            Running::StressNg { .. } => 2,
            _ => 1,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cgroups.pids(self.target).len() < want {
            self.check_running()?;
            if Instant::now() > deadline {
                bail!("no worker appeared in {} within 10 s", self.target);
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Fails when stress-ng exited (with what it printed), or chaosd's fault ended early.
    fn check_running(&mut self) -> Result<()> {
        match &mut self.running {
            Running::StressNg { child, stderr } => {
                if let Some(status) = child.try_wait()? {
                    let mut text = String::new();
                    stderr.rewind()?;
                    stderr.read_to_string(&mut text)?;
                    bail!("stress-ng exited early ({status}): {}", text.trim());
                }
            }
            Running::Chaosd { daemon, id } => {
                let info = daemon.get(&format!("/v1/faults/{id}"))?;
                if info["state"] != "active" {
                    bail!("chaosd's fault is no longer active: {info}");
                }
            }
            Running::Stopped => {}
        }
        Ok(())
    }

    /// Stops the tool; checks its processes left the cgroup on their own within 5 s (then
    /// kills whatever is left).
    fn stop(&mut self) -> Result<()> {
        let result = match std::mem::replace(&mut self.running, Running::Stopped) {
            Running::Chaosd { daemon, id } => daemon.recover(&id).map(drop),
            Running::StressNg { mut child, .. } => {
                // SIGTERM: stress-ng passes it to its stressors and reaps them.
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                wait_bounded(&mut child, Duration::from_secs(5))
            }
            Running::Stopped => Ok(()),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.cgroups.pids(self.target).is_empty() {
            if Instant::now() > deadline {
                self.cgroups.empty_child(self.target);
                return result.and(Err(anyhow::anyhow!(
                    "processes stayed in {} 5 s after the tool was stopped",
                    self.target
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
        result
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.running, Running::Stopped) {
            Running::Chaosd { daemon, id } => {
                let _ = daemon.recover(&id);
            }
            Running::StressNg { mut child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Running::Stopped => return,
        }
        self.cgroups.empty_child(self.target);
    }
}

/// Waits up to `limit` for `child`, then kills it; an error if it had to be killed.
fn wait_bounded(child: &mut Child, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("stress-ng did not exit within {limit:?} of SIGTERM");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `stress-ng, version 0.15.06 ...`: the peer's version line.
fn stress_ng_version() -> Result<String> {
    let out = Command::new("stress-ng")
        .arg("--version")
        .output()
        .context("running stress-ng --version (Debian package stress-ng)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(format!(
        "{} (Debian)",
        text.lines().next().unwrap_or("stress-ng").trim()
    ))
}
