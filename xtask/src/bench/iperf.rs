//! Throughput next to a real tool: `iperf3` (Debian) between the bench's two namespaces, with
//! chaosd's programs detached and attached (1,000 rules on other cgroups) in interleaved
//! rounds, and a third condition beside them: an empty program at the same hooks, which
//! tells the kernel's cgroup-BPF hook's cost from chaosd's own code. Each round gives one
//! ratio per pair; the figure is their median and spread, and a spread that covers 1 is "no
//! measurable difference", never a speed-up.

use std::{
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    daemon::Daemon,
    netns::{ADDR_B, NetNs},
    stats::{median, percentile, ratios as per_round, round3},
    test_run::{BPF_CGROUP_INET_EGRESS, BPF_CGROUP_INET_INGRESS, link_to_cgroup},
};

/// `iperf3 -s` in `b`, killed and reaped on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cmd` started inside `ns` (the child enters it before exec).
fn spawn_in(ns: &NetNs, cmd: &mut Command) -> Result<Child> {
    let fd = ns.fd().as_raw_fd();
    // SAFETY: between fork and exec only setns(2), async-signal-safe; `ns` outlives the spawn.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .context("starting iperf3 (Debian package iperf3)")
}

/// Gbit/s `iperf3 -c` in `a` measured at the receiver over `secs`.
fn client_gbps(a: &NetNs, port: u16, secs: u32) -> Result<f64> {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-c", &ADDR_B.to_string(), "-p", &port.to_string()])
        .args(["-t", &secs.to_string(), "-J"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = spawn_in(a, &mut cmd)?.wait_with_output()?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    match v["end"]["sum_received"]["bits_per_second"].as_f64() {
        Some(bps) => Ok(bps / 1e9),
        None => bail!("iperf3 reported no throughput: {}", v["error"]),
    }
}

pub fn measure(
    daemon: &Daemon,
    a: &NetNs,
    b: &NetNs,
    others: &[String],
    rounds: usize,
    secs: u32,
) -> Result<Value> {
    let port = 5201;
    let mut cmd = Command::new("iperf3");
    cmd.args(["-s", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Server(spawn_in(b, &mut cmd)?);
    // The server needs a moment to listen.
    let mut ready = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        if client_gbps(a, port, 1).is_ok() {
            ready = true;
            break;
        }
    }
    if !ready {
        bail!("iperf3 -s in the bench namespace never answered");
    }
    let half_loss = json!({"kind": "net.loss", "params": {"percent": 50, "direction": "both"}});
    let empty = super::test_run::empty_cgroup_skb()?;
    let root = super::cgroup::cgroup2_mount()?;
    let mut gbps = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..rounds {
        // Rotate which goes first, so a drift in the host's load does not favour one.
        for step in 0..CONDITIONS.len() {
            let condition = CONDITIONS[(round + step) % CONDITIONS.len()];
            let measured = match condition {
                Condition::Detached => client_gbps(a, port, secs)?,
                Condition::EmptyPrograms => {
                    let _links = [
                        link_to_cgroup(&empty, &root, BPF_CGROUP_INET_INGRESS)?,
                        link_to_cgroup(&empty, &root, BPF_CGROUP_INET_EGRESS)?,
                    ];
                    client_gbps(a, port, secs)?
                }
                Condition::Attached => {
                    daemon.inject(half_loss.clone(), others, "1h")?;
                    let measured = client_gbps(a, port, secs);
                    daemon.delete("/v1/faults")?;
                    measured?
                }
            };
            gbps[condition as usize].push(measured);
        }
    }
    let [detached, empty_attached, attached] = gbps;
    let ratios = per_round(&attached, &detached);
    let empty_ratios = per_round(&empty_attached, &detached);
    let over_empty = per_round(&attached, &empty_attached);
    let (lo, hi) = (percentile(&ratios, 10.0), percentile(&ratios, 90.0));
    Ok(json!({
        "tool": "iperf3 (Debian), one TCP stream, namespace a -> b over the bench veth",
        "rounds": rounds,
        "seconds_per_run": secs,
        "rules_attached": others.len(),
        "detached_gbps_median": round3(median(&detached)),
        "attached_gbps_median": round3(median(&attached)),
        "ratio_median": round3(median(&ratios)),
        "ratio_p10": round3(lo),
        "ratio_p90": round3(hi),
        "ratios": ratios.iter().map(|r| round3(*r)).collect::<Vec<_>>(),
        "verdict": verdict(&ratios),
        "empty_programs": {
            "what": "an empty cgroup_skb program (returns pass) linked at the cgroup2 root for \
                ingress and egress, where chaosd attaches its own: the kernel's hook alone",
            "gbps_median": round3(median(&empty_attached)),
            "over_detached_median": round3(median(&empty_ratios)),
            "over_detached_p10": round3(percentile(&empty_ratios, 10.0)),
            "over_detached_p90": round3(percentile(&empty_ratios, 90.0)),
            "over_detached_verdict": verdict(&empty_ratios),
            "attached_over_empty_median": round3(median(&over_empty)),
            "attached_over_empty_p10": round3(percentile(&over_empty, 10.0)),
            "attached_over_empty_p90": round3(percentile(&over_empty, 90.0)),
            "attached_over_empty_verdict": verdict(&over_empty),
        },
    }))
}

/// What the rounds compare, in the order of the first round.
#[derive(Clone, Copy)]
enum Condition {
    Detached = 0,
    EmptyPrograms = 1,
    Attached = 2,
}

const CONDITIONS: [Condition; 3] = [
    Condition::Detached,
    Condition::EmptyPrograms,
    Condition::Attached,
];

/// A ratio over rounds: "no measurable difference" when its p10-p90 covers 1.
fn verdict(ratios: &[f64]) -> String {
    let (lo, hi) = (percentile(ratios, 10.0), percentile(ratios, 90.0));
    if lo <= 1.0 && hi >= 1.0 {
        "no measurable difference (the ratio's spread covers 1)".to_string()
    } else if hi < 1.0 {
        format!(
            "slower: {:.1} % at the median",
            (1.0 - median(ratios)) * 100.0
        )
    } else {
        "faster in every round: read as noise of a shared host, not a speed-up".to_string()
    }
}
