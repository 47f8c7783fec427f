//! The steady-state checks: an HTTP(S) `GET`, a TCP connect, a command's exit code, a PromQL
//! query's value; and the abort rules' queries. Each runs in the daemon, outside the target
//! cgroups, so a fault on a target shows as failed checks.

use std::time::{Duration, Instant};

use tokio::{net::TcpStream, sync::mpsc, task::JoinHandle};

use crate::scenario::{
    fetch::{self, Tls},
    format::{AbortQuery, ProbeCheck, ProbeSpec, PromQuery},
    prometheus,
};

/// Whom commands (probes and services) run as: the user who started the run, so the API
/// grants no more than that user already has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// The user to drop to; none for root.
    pub fn user(self) -> Option<crate::host::cgroup::RunUser> {
        (self.uid != 0).then_some(crate::host::cgroup::RunUser {
            uid: self.uid,
            gid: self.gid,
        })
    }

    /// Drops to this user in a command about to be spawned (nothing to do for root).
    pub fn apply(self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt as _;
        if self.uid != 0 {
            cmd.uid(self.uid).gid(self.gid);
        }
    }
}

/// One check's outcome.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Index of the probe in the scenario.
    pub probe: usize,
    pub started: Instant,
    pub latency: Duration,
    /// Why it failed; `None` when it passed.
    pub error: Option<String>,
}

/// A probe ready to run: its spec and, for https, its TLS settings (read once, not per check).
#[derive(Clone)]
pub struct Prepared {
    spec: ProbeSpec,
    tls: Option<Tls>,
}

impl Prepared {
    /// Loads the trust store or CA file a probe needs; the error names the probe.
    pub fn new(spec: &ProbeSpec) -> Result<Prepared, String> {
        let tls = match &spec.check {
            ProbeCheck::Http {
                target, ca_file, ..
            } if target.https => Some(Tls::new(ca_file.as_deref())),
            ProbeCheck::Prometheus { query, .. } => tls_for(query),
            _ => None,
        }
        .transpose()
        .map_err(|e| format!("probe {}: {e}", spec.name))?;
        Ok(Prepared {
            spec: spec.clone(),
            tls,
        })
    }
}

/// The TLS settings of a query's server, if it speaks https.
pub fn tls_for(q: &PromQuery) -> Option<Result<Tls, String>> {
    q.server.https.then(|| Tls::new(q.ca_file.as_deref()))
}

/// Runs the probe once: its check under its timeout, then its latency limit.
pub async fn check_once(p: &Prepared, run_as: RunAs) -> (Duration, Option<String>) {
    let spec = &p.spec;
    let started = Instant::now();
    let outcome =
        tokio::time::timeout(spec.timeout, check(&spec.check, p.tls.as_ref(), run_as)).await;
    let latency = started.elapsed();
    let error = match outcome {
        Err(_) => Some(format!("no answer within {} ms", spec.timeout.as_millis())),
        Ok(Err(e)) => Some(e),
        Ok(Ok(())) => match spec.max_latency {
            Some(max) if latency > max => Some(format!(
                "took {} ms, above max_latency {} ms",
                latency.as_millis(),
                max.as_millis()
            )),
            _ => None,
        },
    };
    (latency, error)
}

async fn check(check: &ProbeCheck, tls: Option<&Tls>, run_as: RunAs) -> Result<(), String> {
    match check {
        ProbeCheck::Http {
            target,
            expect_status,
            ..
        } => {
            let status = fetch::get(target, &[], tls).await?.status;
            if status == *expect_status {
                Ok(())
            } else {
                Err(format!("status {status}, expected {expect_status}"))
            }
        }
        ProbeCheck::Prometheus { query, range } => {
            let value = prometheus::instant(query, tls).await?;
            if range.contains(value) {
                Ok(())
            } else {
                Err(format!("value {value}, expected {}", range.describe()))
            }
        }
        ProbeCheck::Tcp { addr } => TcpStream::connect(addr.as_str())
            .await
            .map(drop)
            .map_err(|e| format!("connect {addr}: {e}")),
        ProbeCheck::Command { argv, expect_exit } => command(argv, *expect_exit, run_as).await,
    }
}

async fn command(argv: &[String], expect_exit: i32, run_as: RunAs) -> Result<(), String> {
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    run_as.apply(&mut cmd);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let status = cmd
        .status()
        .await
        .map_err(|e| format!("starting {}: {e}", argv[0]))?;
    match status.code() {
        Some(c) if c == expect_exit => Ok(()),
        Some(c) => Err(format!("exit code {c}, expected {expect_exit}")),
        None => Err(format!("ended by a signal ({status})")),
    }
}

/// Starts one task per probe, each checking at its interval and sending every outcome to `tx`.
/// The tasks end when `tx`'s receiver is gone or when aborted (see [`ProbeTasks`]).
pub fn start(probes: &[Prepared], run_as: RunAs, tx: mpsc::Sender<Sample>) -> ProbeTasks {
    let tasks = probes
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let (p, tx) = (p.clone(), tx.clone());
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(p.spec.interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let started = Instant::now();
                    let (latency, error) = check_once(&p, run_as).await;
                    let sample = Sample {
                        probe: index,
                        started,
                        latency,
                        error,
                    };
                    if tx.send(sample).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    ProbeTasks(tasks)
}

/// One evaluation of an abort rule's query.
#[derive(Debug)]
pub struct RuleSample {
    /// Index of the rule in `[[abort.prometheus]]`.
    pub rule: usize,
    pub started: Instant,
    pub value: Result<f64, String>,
}

/// Starts one task per abort rule, each querying at its interval. Their TLS settings were
/// loaded by the caller (preflight), in the rules' order.
pub fn start_rules(
    rules: &[AbortQuery],
    tls: &[Option<Tls>],
    tx: mpsc::Sender<RuleSample>,
) -> ProbeTasks {
    let tasks = rules
        .iter()
        .zip(tls)
        .enumerate()
        .map(|(index, (rule, tls))| {
            let (rule, tls, tx) = (rule.clone(), tls.clone(), tx.clone());
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(rule.interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let started = Instant::now();
                    let value = tokio::time::timeout(
                        rule.timeout,
                        prometheus::instant(&rule.query, tls.as_ref()),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("no answer within {} ms", rule.timeout.as_millis()))
                    });
                    let sample = RuleSample {
                        rule: index,
                        started,
                        value,
                    };
                    if tx.send(sample).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    ProbeTasks(tasks)
}

/// The running probe tasks; dropping this stops them.
pub struct ProbeTasks(Vec<JoinHandle<()>>);

impl Drop for ProbeTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
