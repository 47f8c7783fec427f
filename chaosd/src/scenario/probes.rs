//! The steady-state checks: an HTTP `GET`, a TCP connect, a command's exit code. Each runs in
//! the daemon, outside the target cgroups, so a fault on a target shows as failed checks.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
};

use crate::scenario::format::{ProbeCheck, ProbeSpec};

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

/// Response bytes read at most; probes check a status, not a download.
const MAX_RESPONSE: u64 = 1 << 20;

/// Runs `spec` once: its check under its timeout, then its latency limit.
pub async fn check_once(spec: &ProbeSpec, run_as: RunAs) -> (Duration, Option<String>) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(spec.timeout, check(&spec.check, run_as)).await;
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

async fn check(check: &ProbeCheck, run_as: RunAs) -> Result<(), String> {
    match check {
        ProbeCheck::Http {
            authority,
            path,
            expect_status,
            ..
        } => {
            let status = http_get(authority, path).await?;
            if status == *expect_status {
                Ok(())
            } else {
                Err(format!("status {status}, expected {expect_status}"))
            }
        }
        ProbeCheck::Tcp { addr } => TcpStream::connect(addr.as_str())
            .await
            .map(drop)
            .map_err(|e| format!("connect {addr}: {e}")),
        ProbeCheck::Command { argv, expect_exit } => {
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
                Some(c) if c == *expect_exit => Ok(()),
                Some(c) => Err(format!("exit code {c}, expected {expect_exit}")),
                None => Err(format!("ended by a signal ({status})")),
            }
        }
    }
}

/// A plain HTTP/1.1 `GET` on a fresh connection; returns the response status.
async fn http_get(authority: &str, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: chaosd-probe\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("reading the response: {e}"))?;
    parse_status(&response)
}

fn parse_status(response: &[u8]) -> Result<u16, String> {
    let line = response.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    match (words.next(), words.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/") => Ok(code),
        _ if response.is_empty() => Err("the connection closed without a response".into()),
        _ => Err(format!("not an HTTP response: {:?}", line.trim())),
    }
}

/// Starts one task per probe, each checking at its interval and sending every outcome to `tx`.
/// The tasks end when `tx`'s receiver is gone or when aborted (see [`ProbeTasks`]).
pub fn start(probes: &[ProbeSpec], run_as: RunAs, tx: mpsc::Sender<Sample>) -> ProbeTasks {
    let tasks = probes
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let (spec, tx) = (spec.clone(), tx.clone());
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(spec.interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let started = Instant::now();
                    let (latency, error) = check_once(&spec, run_as).await;
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

/// The running probe tasks; dropping this stops them.
pub struct ProbeTasks(Vec<JoinHandle<()>>);

impl Drop for ProbeTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n\r\n"), Ok(204));
        assert_eq!(parse_status(b"HTTP/1.0 500 x\r\n"), Ok(500));
        assert!(
            parse_status(b"")
                .unwrap_err()
                .contains("without a response")
        );
        assert!(
            parse_status(b"SSH-2.0-OpenSSH\r\n")
                .unwrap_err()
                .contains("not an HTTP")
        );
    }
}
