//! A real chaosd for the bench: built in release mode, started on a temp socket and state dir,
//! stopped (SIGTERM, then SIGKILL) on drop; and a minimal client for its HTTP/JSON API.
//!
//! xtask does not link chaosd (it must build before the eBPF toolchain exists), so requests are
//! plain HTTP/1.1 over the Unix socket, one connection each, as any client would send them.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::util::{DaemonChild, cargo, workspace_root};

/// Builds the release binaries (chaosd's, and the tests' `chaosd-test-helper` that the
/// clock figures run) and returns the directory holding them.
pub fn build() -> Result<PathBuf> {
    cargo(&[
        "build",
        "--release",
        "-p",
        "chaosd",
        "-p",
        "chaosd-integration",
        "--bins",
    ])?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let dir = target.join("release");
    if !dir.join("chaosd").exists() {
        bail!("{} was not built", dir.join("chaosd").display());
    }
    Ok(dir)
}

pub struct Daemon {
    /// Stopped before `dir` goes (fields drop in order).
    child: DaemonChild,
    dir: tempfile::TempDir,
    /// From spawning the process to its first answer on the socket.
    pub ready_after: Duration,
}

impl Daemon {
    pub fn start(bin_dir: &Path) -> Result<Daemon> {
        let dir = tempfile::Builder::new()
            .prefix("chaosd-bench-")
            .tempdir()
            .context("creating the daemon's temp dir")?;
        let config = dir.path().join("chaosd.toml");
        // Room for the concurrent-faults figure (1,000 faults at once; the default is 64).
        std::fs::write(&config, "[policy]\nmax_concurrent_faults = 1100\n")
            .context("writing the daemon's config")?;
        let log = std::fs::File::create(dir.path().join("chaosd.log"))?;
        let spawned = Instant::now();
        let mut cmd = Command::new(bin_dir.join("chaosd"));
        // A bench killed by a signal runs no Drop: the daemon then stops (and reverts its
        // faults) when the bench's thread dies. Daemons are started from the main thread.
        // SAFETY: prctl(2) only, between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(dir.path().join("chaosd.sock"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("CHAOSD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting chaosd")?;
        let mut daemon = Daemon {
            child: DaemonChild(child),
            dir,
            ready_after: Duration::ZERO,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while daemon.get("/v1/status").is_err() {
            if Instant::now() > deadline {
                bail!(
                    "chaosd did not answer within 30 s; its log:\n{}",
                    daemon.log()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
        daemon.ready_after = spawned.elapsed();
        Ok(daemon)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The guardian's pid, from the state dir's `guardian.json` (None without a guardian).
    pub fn guardian_pid(&self) -> Option<u32> {
        let bytes = std::fs::read(self.dir.path().join("state/guardian.json")).ok()?;
        let record: Value = serde_json::from_slice(&bytes).ok()?;
        record["pid"].as_u64().map(|p| p as u32)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chaosd.log")).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.request("POST", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<Value> {
        self.request("DELETE", path, None)
    }

    /// Injects `fault` (`{"kind":..,"params":..}`) on the cgroups (paths under the cgroup2
    /// mount) for `duration`; returns the fault id.
    pub fn inject(&self, fault: Value, cgroups: &[String], duration: &str) -> Result<String> {
        let targets: Vec<Value> = cgroups
            .iter()
            .map(|c| serde_json::json!({ "cgroup": c }))
            .collect();
        let body = serde_json::json!({ "fault": fault, "targets": targets, "duration": duration });
        let info = self.post("/v1/faults", &body)?;
        info["id"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("inject answer has no id: {info}"))
    }

    /// Why `kind` does not work on this kernel (its /v1/capabilities row); `None` if it does.
    pub fn unsupported_reason(&self, kind: &str) -> Result<Option<String>> {
        let caps = self.get("/v1/capabilities")?;
        let row = caps["kinds"]
            .as_array()
            .and_then(|kinds| kinds.iter().find(|k| k["kind"] == kind))
            .with_context(|| format!("/v1/capabilities has no {kind} row: {caps}"))?;
        Ok((row["supported"] != true).then(|| {
            format!(
                "unsupported on this kernel: {}",
                row["reason"].as_str().unwrap_or("no reason given")
            )
        }))
    }

    pub fn recover(&self, id: &str) -> Result<Value> {
        self.delete(&format!("/v1/faults/{id}"))
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let socket = self.dir.path().join("chaosd.sock");
        let mut s = UnixStream::connect(&socket)
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut response = String::new();
        s.read_to_string(&mut response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .with_context(|| format!("malformed response to {method} {path}"))?;
        let ok = head
            .split_whitespace()
            .nth(1)
            .is_some_and(|code| code.starts_with('2'));
        // Responses are small and sent whole; chunked framing shows up only as a size line.
        let json = dechunk(head, body);
        if !ok {
            bail!(
                "{method} {path}: {}: {json}",
                head.lines().next().unwrap_or("")
            );
        }
        serde_json::from_str(&json).with_context(|| format!("{method} {path} answered {json:?}"))
    }
}

/// The payload of a `Transfer-Encoding: chunked` body (or `body` unchanged).
fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}
