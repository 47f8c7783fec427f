//! chaosd's transparent TCP proxy (`tcp.*`) next to a direct connection and next to `fault`
//! (the Rust fault-injection proxy from crates.io, `fault-cli`), each with a fault that has no
//! effect, in one run: what routing a cgroup's connections through the proxy costs.
//!
//! The server is the bench's own, on loopback, outside every target cgroup. The client is a
//! hidden xtask subcommand (`__bench-tcp-client`) that first moves itself into a bench cgroup:
//! - **direct**: the client in a cgroup no fault targets, to the server;
//! - **chaosd**: the client in a cgroup with `tcp.latency` of 0 ms on both streams, filtered to
//!   the server's address and port (validation accepts 0; the connection still passes through
//!   the toxic path: a timer per chunk, each direction through a channel), to the server; the
//!   kernel sends its connect to chaosd's proxy;
//! - **fault**: the client in the untargeted cgroup, to `fault run`'s listener, whose upstream
//!   is the server, with a `jitter` fault of 0–0 ms at probability 1 on both flows (evaluated
//!   per read and write: the nearest to chaosd's per-chunk zero latency).
//!
//! Figures: round trips of a 64-byte request and 64-byte response on one connection (p50, p99
//! per round), and one-stream throughput (the client sends for a few seconds; the server
//! measures from its first byte to EOF). The paths take turns in each round, in a rotating
//! order, so a change in the host's load hits all of them alike. Each round gives a ratio
//! against direct; a spread of ratios that covers 1 is "no measurable difference".
//!
//! `fault` is installed by the bench if missing (`cargo install fault-cli` into
//! `<target>/bench/fault`); when it cannot be built or run here, its figures say so with the
//! error. The server, `fault` and the clients stop when the bench ends, also on error.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    cgroup::BenchCgroups,
    daemon::Daemon,
    stats::{median, min_max, percentile, ratios, round3, spread, verdict},
};

/// The `fault-cli` release the bench installs (pinned: its figures should not move with
/// upstream releases).
const FAULT_VERSION: &str = "1.2.1";
/// Request and response size of the round trips.
const MESSAGE: usize = 64;
/// Round trips before the measured ones (connection set-up, first-touch costs).
const WARM_UP: u32 = 200;
/// The first byte a client sends: which service it wants from the server.
const MODE_ECHO: u8 = b'E';
const MODE_SINK: u8 = b'S';
const GIB: f64 = (1u64 << 30) as f64;

/// Sizes of one run.
pub struct Plan {
    pub rounds: usize,
    pub trips_per_round: u32,
    pub bulk: Duration,
}

/// Arguments of `cargo xtask __bench-tcp-client`.
#[derive(clap::Args, Debug)]
pub struct TcpClientArgs {
    /// cgroup2 directory to join before connecting.
    #[arg(long)]
    cgroup: PathBuf,
    /// Where to connect (the server, or fault's listener).
    #[arg(long)]
    to: SocketAddr,
    /// Measured round trips of 64 bytes each way (after a warm-up).
    #[arg(long, conflicts_with = "bulk_ms")]
    trips: Option<u32>,
    /// Send as fast as possible for this long instead.
    #[arg(long)]
    bulk_ms: Option<u64>,
}

/// The client: joins its cgroup, connects and prints one JSON line:
/// `{"p50_us":..,"p99_us":..}` for round trips, `{"bytes":..,"secs":..}` (the server's count
/// and time) for a bulk send.
pub fn client(args: &TcpClientArgs) -> Result<()> {
    std::fs::write(args.cgroup.join("cgroup.procs"), "0")
        .with_context(|| format!("joining {}", args.cgroup.display()))?;
    let mut s =
        TcpStream::connect(args.to).with_context(|| format!("connecting to {}", args.to))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    if let Some(ms) = args.bulk_ms {
        s.write_all(&[MODE_SINK])?;
        let chunk = vec![0x5au8; 128 << 10];
        let end = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < end {
            s.write_all(&chunk)?;
        }
        s.shutdown(Shutdown::Write)?;
        let mut answer = [0u8; 16];
        s.read_exact(&mut answer)
            .context("reading the server's count")?;
        let bytes = u64::from_le_bytes(answer[..8].try_into().expect("8 bytes"));
        let secs = f64::from_le_bytes(answer[8..].try_into().expect("8 bytes"));
        println!("{}", json!({"bytes": bytes, "secs": secs}));
        return Ok(());
    }
    let n = args.trips.unwrap_or(10_000);
    s.write_all(&[MODE_ECHO])?;
    let mut msg = [7u8; MESSAGE];
    let mut trips = Vec::with_capacity(n as usize);
    for i in 0..n + WARM_UP {
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut msg)?;
        if i >= WARM_UP {
            trips.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    println!(
        "{}",
        json!({
            "p50_us": round3(median(&trips)),
            "p99_us": round3(percentile(&trips, 99.0)),
        })
    );
    Ok(())
}

/// The bench's server on loopback: echoes 64-byte messages, or counts a bulk stream and
/// answers with the count and the time from its first byte to EOF. One thread per
/// connection; stopped on drop.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start() -> Result<Server> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the server")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        std::thread::spawn(move || {
                            let _ = serve(s);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: the mode byte, then echo or sink. Ends at the client's EOF (the clients
/// are killed when the bench ends, so no connection outlives it).
fn serve(mut s: TcpStream) -> Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut mode = [0u8; 1];
    s.read_exact(&mut mode)?;
    if mode[0] == MODE_ECHO {
        let mut msg = [0u8; MESSAGE];
        while s.read_exact(&mut msg).is_ok() {
            s.write_all(&msg)?;
        }
        return Ok(());
    }
    let (total, first) = super::datapath::drain(&mut s)?;
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let mut answer = [0u8; 16];
    answer[..8].copy_from_slice(&total.to_le_bytes());
    answer[8..].copy_from_slice(&secs.to_le_bytes());
    s.write_all(&answer)?;
    Ok(())
}

/// Runs one client and returns its JSON line. The client bounds its own time (socket
/// timeouts); if the bench dies first, removing the bench cgroups kills it.
fn run_client(cgroup: &Path, to: SocketAddr, what: &[String]) -> Result<Value> {
    let out = Command::new(std::env::current_exe()?)
        .arg("__bench-tcp-client")
        .arg("--cgroup")
        .arg(cgroup)
        .args(["--to", &to.to_string()])
        .args(what)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .context("running the TCP client")?;
    if !out.status.success() {
        bail!(
            "TCP client to {to}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "TCP client printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `fault run` with one TCP proxy in front of the server, stopped (SIGINT, then SIGKILL) on
/// drop; its config lives in a temp dir removed after it.
struct FaultProxy {
    child: Child,
    /// The listener with the zero-effect jitter fault.
    zero: SocketAddr,
    /// The listener with no fault.
    bare: SocketAddr,
    _dir: tempfile::TempDir,
}

impl FaultProxy {
    fn start(bin: &Path, upstream: SocketAddr) -> Result<FaultProxy> {
        let dir = tempfile::Builder::new()
            .prefix("chaosd-bench-fault-")
            .tempdir()
            .context("creating fault's temp dir")?;
        // Free loopback ports for fault's listeners (bound and released: fault binds them).
        let free = || -> Result<SocketAddr> {
            Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?)
        };
        let (zero, bare) = (free()?, free()?);
        let config = dir.path().join("run.json");
        let proxy = |name: &str, listen: SocketAddr| {
            json!({"name": name, "protocol": "tcp", "listen": listen.to_string(),
                "upstream": upstream.to_string()})
        };
        // One phase with no end; the "bare" proxy has no fault in it.
        let run = json!({
            "schema_version": 1,
            "name": "chaosd bench: zero-effect jitter, and no fault",
            "proxies": [proxy("zero", zero), proxy("bare", bare)],
            "phases": [{
                "name": "zero effect",
                "proxies": [{
                    "proxy": "zero",
                    "faults": [{
                        "type": "jitter",
                        "flow": "both",
                        "min_delay_ms": 0.0,
                        "max_delay_ms": 0.0,
                        "probability": 1.0,
                    }],
                }],
            }],
        });
        std::fs::write(&config, serde_json::to_string_pretty(&run)?)?;
        let log = std::fs::File::create(dir.path().join("fault.log"))?;
        let child = Command::new(bin)
            .args(["--output", "json", "--color", "never", "run"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut proxy = FaultProxy {
            child,
            zero,
            bare,
            _dir: dir,
        };
        // Ready when a connection through it reaches the server and echoes.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                bail!("fault exited at start ({status}): {}", proxy.log());
            }
            if echo_once(zero).is_ok() && echo_once(bare).is_ok() {
                return Ok(proxy);
            }
            if Instant::now() > deadline {
                bail!("fault did not proxy within 15 s: {}", proxy.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self._dir.path().join("fault.log")).unwrap_or_default();
        last_lines(&text, 20)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One 64-byte round trip to `addr` from the bench itself (readiness check).
fn echo_once(addr: SocketAddr) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(&[MODE_ECHO])?;
    let mut msg = [1u8; MESSAGE];
    s.write_all(&msg)?;
    s.read_exact(&mut msg)?;
    Ok(())
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The `fault` binary: `<target>/bench/fault/bin/fault`, installed there with `cargo install`
/// if missing. `Err` carries why it is not available (the build's last lines).
fn ensure_fault() -> Result<PathBuf, String> {
    let root = super::default_out()
        .parent()
        .map(|d| d.join("fault"))
        .ok_or("no bench directory")?;
    let bin = root.join("bin/fault");
    if bin.exists() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    eprintln!(
        "bench: installing fault-cli {FAULT_VERSION} into {} (cargo install, several minutes \
         on 2 cores)",
        root.display()
    );
    let mut child = Command::new("cargo")
        .args([
            "install",
            "fault-cli",
            "--locked",
            "--version",
            FAULT_VERSION,
        ])
        .arg("--root")
        .arg(&root)
        .arg("--target-dir")
        .arg(root.join("build"))
        // Outside the workspace's cargo config; the build keeps its own target dir, so a
        // reinstall is quick.
        .current_dir(&root)
        .env("PATH", crate::util::path_with_cargo_bin())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running cargo install fault-cli: {e}"))?;
    // Cargo's progress goes on to the terminal; its last lines are kept for the report.
    let mut tail = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("  {line}");
            tail.push(line);
            if tail.len() > 30 {
                tail.remove(0);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo install: {e}"))?;
    if !status.success() || !bin.exists() {
        return Err(format!(
            "cargo install fault-cli --version {FAULT_VERSION} failed ({status}):\n{}",
            tail.join("\n")
        ));
    }
    Ok(bin)
}

/// One path's figures over the rounds.
#[derive(Default)]
struct Samples {
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    gib_s: Vec<f64>,
}

impl Samples {
    fn add_round(&mut self, cgroup: &Path, to: SocketAddr, plan: &Plan) -> Result<()> {
        let rr = run_client(
            cgroup,
            to,
            &["--trips".into(), plan.trips_per_round.to_string()],
        )?;
        let bulk = run_client(
            cgroup,
            to,
            &["--bulk-ms".into(), plan.bulk.as_millis().to_string()],
        )?;
        let num = |v: &Value, k: &str| {
            v[k].as_f64()
                .with_context(|| format!("client answer has no {k}: {v}"))
        };
        self.p50_us.push(num(&rr, "p50_us")?);
        self.p99_us.push(num(&rr, "p99_us")?);
        let secs = num(&bulk, "secs")?;
        if secs <= 0.0 {
            bail!("the bulk send to {to} delivered nothing: {bulk}");
        }
        self.gib_s.push(num(&bulk, "bytes")? / GIB / secs);
        Ok(())
    }

    fn json(&self) -> Value {
        json!({
            "rr_p50_us_median": round3(median(&self.p50_us)),
            "rr_p50_us_spread": spread(&self.p50_us),
            "rr_p99_us_median": round3(median(&self.p99_us)),
            "rr_p99_us_spread": spread(&self.p99_us),
            "throughput_gib_s_median": round3(median(&self.gib_s)),
            "throughput_gib_s_spread": spread(&self.gib_s),
        })
    }

    /// This path against `base`, round by round (the same round's runs are neighbours in
    /// time): added p50/p99 and throughput ratios, medians and spreads, with verdicts.
    fn against(&self, base: &Samples) -> Value {
        let diff =
            |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x - y).collect() };
        let added_p50 = diff(&self.p50_us, &base.p50_us);
        let added_p99 = diff(&self.p99_us, &base.p99_us);
        let tput = ratios(&self.gib_s, &base.gib_s);
        let p50_ratio = ratios(&self.p50_us, &base.p50_us);
        json!({
            "added_rr_p50_us_median": round3(median(&added_p50)),
            "added_rr_p50_us_spread": spread(&added_p50),
            "added_rr_p99_us_median": round3(median(&added_p99)),
            "added_rr_p99_us_spread": spread(&added_p99),
            "rr_p50_ratio_median": round3(median(&p50_ratio)),
            "rr_p50_ratio_spread": spread(&p50_ratio),
            "throughput_ratio_median": round3(median(&tput)),
            "throughput_ratio_spread": spread(&tput),
            "latency_verdict": verdict(&p50_ratio, "slower", "faster"),
            "throughput_verdict": verdict(&tput, "faster", "slower"),
        })
    }
}

/// One way from the client to the server, and its samples.
struct Route {
    /// Key in the JSON.
    name: &'static str,
    cgroup: PathBuf,
    to: SocketAddr,
    samples: Samples,
}

/// The paths in interleaved rounds; JSON figures (a "not measured" string for fault's paths
/// when it is not available here).
pub fn measure(daemon: &Daemon, cgroups: &mut BenchCgroups, plan: &Plan) -> Result<Value> {
    for kind in ["tcp.latency", "tcp.reset_peer"] {
        if let Some(reason) = daemon.unsupported_reason(kind)? {
            return Ok(json!(format!("not measured: {kind} {reason}")));
        }
    }
    let fault_bin = ensure_fault();
    let server = Server::start()?;
    echo_once(server.addr).context("the bench's TCP server does not answer")?;
    let plain = cgroups.child("proxy-direct")?;
    let plain = cgroups.dir_of(&plain);
    let zero_cg = cgroups.child("proxy-chaosd-latency0")?;
    let bare_cg = cgroups.child("proxy-chaosd-bare")?;
    let fault_proxy = match &fault_bin {
        Ok(bin) => FaultProxy::start(bin, server.addr).map_err(|e| format!("{e:#}")),
        Err(e) => Err(e.clone()),
    };
    let fault_version = fault_bin.as_ref().ok().and_then(|bin| {
        let out = Command::new(bin).arg("--version").output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    let filter = json!({"dst": "127.0.0.1/32", "port": server.addr.port().to_string()});
    // The fault the issue names, with no effect: every chunk through the toxic path.
    let zero = json!({"kind": "tcp.latency",
        "params": {"latency": "0ms", "direction": "both", "filter": filter}});
    // The proxy alone: the connection is proxied, no toxic acts on its data (plain copies),
    // and the reset comes long after the run.
    let bare = json!({"kind": "tcp.reset_peer", "params": {"after": "1h", "filter": filter}});
    let zero_id = daemon.inject(zero, std::slice::from_ref(&zero_cg), "1h")?;
    let bare_id = daemon.inject(bare, std::slice::from_ref(&bare_cg), "1h")?;
    let route = |name, cgroup, to| Route {
        name,
        cgroup,
        to,
        samples: Samples::default(),
    };
    let mut routes = vec![
        route("direct", plain.clone(), server.addr),
        route("chaosd_latency_0ms", cgroups.dir_of(&zero_cg), server.addr),
        route("chaosd_proxy_only", cgroups.dir_of(&bare_cg), server.addr),
    ];
    if let Ok(p) = &fault_proxy {
        routes.push(route("fault_jitter_0ms", plain.clone(), p.zero));
        routes.push(route("fault_no_fault", plain.clone(), p.bare));
    }
    let result = (|| -> Result<()> {
        for round in 0..plan.rounds {
            eprintln!("bench: tcp proxy round {}/{}", round + 1, plan.rounds);
            let n = routes.len();
            for step in 0..n {
                let r = &mut routes[(round + step) % n];
                r.samples
                    .add_round(&r.cgroup, r.to, plan)
                    .with_context(|| format!("path {}", r.name))?;
            }
        }
        Ok(())
    })();
    let infos = [&zero_id, &bare_id].map(|id| daemon.get(&format!("/v1/faults/{id}")));
    daemon.recover(&zero_id)?;
    daemon.recover(&bare_id)?;
    // fault stops here; what is left is whether it ran.
    let fault_ran: Result<(), String> = fault_proxy.map(drop);
    result?;
    // Each round made two connections on each chaosd path: all of them must have been
    // proxied, or its figures would be the direct path's.
    let expected = 2 * plan.rounds as u64;
    for info in infos {
        let info = info?;
        let affected = info["counters"]["affected"].as_u64().unwrap_or(0);
        if affected < expected {
            bail!(
                "a chaosd path was not proxied: the fault took {affected} of {expected} \
                 connections ({info})"
            );
        }
    }
    let by_name = |name: &str| routes.iter().find(|r| r.name == name).map(|r| &r.samples);
    let direct = by_name("direct").expect("always measured");
    let mut paths = serde_json::Map::new();
    for r in &routes {
        let mut v = r.samples.json();
        if r.name != "direct" {
            v = merge(v, r.samples.against(direct));
        }
        paths.insert(r.name.into(), v);
    }
    if let Err(e) = &fault_ran {
        for name in ["fault_jitter_0ms", "fault_no_fault"] {
            paths.insert(name.into(), json!(format!("not measured: {e}")));
        }
    }
    let zero = by_name("chaosd_latency_0ms").expect("always measured");
    let bare = by_name("chaosd_proxy_only").expect("always measured");
    let vs_fault = |ours: &Samples, theirs: Option<&Samples>| match theirs {
        Some(f) => {
            let tput = ratios(&ours.gib_s, &f.gib_s);
            let p50 = ratios(&ours.p50_us, &f.p50_us);
            json!({
                "throughput_ratio_median": round3(median(&tput)),
                "throughput_ratio_spread": spread(&tput),
                "throughput_verdict": verdict(&tput, "chaosd faster", "chaosd slower"),
                "rr_p50_ratio_median": round3(median(&p50)),
                "rr_p50_ratio_spread": spread(&p50),
                "latency_verdict": verdict(&p50, "chaosd slower", "chaosd faster"),
            })
        }
        None => json!(format!(
            "not measured: {}",
            fault_ran.as_ref().err().map_or("", String::as_str)
        )),
    };
    let met = |ok: bool| if ok { "met" } else { "not met" };
    // Judged on the median of the rounds' added p50 (each round against direct in the same
    // round: the difference of the two medians can come out negative when direct's p50 is
    // bimodal); the rounds' spread goes with it, since a median near the goal with a spread
    // across it is not a clear pass.
    let goal_p50 = |s: &Samples| {
        let added: Vec<f64> = s
            .p50_us
            .iter()
            .zip(&direct.p50_us)
            .map(|(x, y)| x - y)
            .collect();
        let m = median(&added);
        let (lo, hi) = min_max(&added);
        format!(
            "{} ({m:.1} us added at the median; rounds {lo:.1}-{hi:.1} us)",
            met(m <= 50.0)
        )
    };
    let goal_gib = |s: &Samples| {
        let m = median(&s.gib_s);
        let (lo, hi) = min_max(&s.gib_s);
        format!(
            "{} ({m:.3} GiB/s median; rounds {lo:.3}-{hi:.3})",
            met(m >= 1.0)
        )
    };
    let no_worse = |ours: &Samples, theirs: Option<&Samples>| match theirs {
        // Met unless slower than fault in every round.
        Some(f) => met(ratios(&ours.gib_s, &f.gib_s).iter().any(|r| *r >= 1.0)),
        None => "not measured: fault is not available",
    };
    let (fault_zero, fault_bare) = (by_name("fault_jitter_0ms"), by_name("fault_no_fault"));
    Ok(json!({
        "setup": format!("loopback, the bench's server on {} outside every target cgroup; the \
            client is an xtask subprocess in a bench cgroup. direct: to the server. \
            chaosd_latency_0ms: from a cgroup with tcp.latency 0ms, direction both (filter \
            dst 127.0.0.1/32, port {port}); chaosd_proxy_only: from a cgroup with \
            tcp.reset_peer after 1h (same filter: proxied, no toxic on the data); the kernel \
            redirects both to chaosd's proxy. fault_jitter_0ms: to a fault TCP listener \
            (upstream the server) with a jitter fault of 0-0 ms at probability 1, flow both; \
            fault_no_fault: to a second listener of the same fault run with no fault. Round \
            trips: {MESSAGE}-byte request and response on one connection with TCP_NODELAY \
            ({WARM_UP} warm-up trips not counted). Throughput: one stream, 128 KiB writes, \
            measured by the server from its first byte to EOF.",
            server.addr, port = server.addr.port()),
        "rounds": plan.rounds,
        "round_trips_per_round": plan.trips_per_round,
        "bulk_seconds_per_run": plan.bulk.as_secs_f64(),
        "fault_version": fault_version,
        "paths": paths,
        "chaosd_vs_fault": {
            "zero_effect_fault": vs_fault(zero, fault_zero),
            "proxy_only": vs_fault(bare, fault_bare),
        },
        "goals": {
            "added_p50_at_most_50us": {
                "chaosd_latency_0ms": goal_p50(zero),
                "chaosd_proxy_only": goal_p50(bare),
            },
            "throughput_at_least_1_gib_s": {
                "chaosd_latency_0ms": goal_gib(zero),
                "chaosd_proxy_only": goal_gib(bare),
            },
            "throughput_no_worse_than_fault": {
                "chaosd_latency_0ms_vs_fault_jitter_0ms": no_worse(zero, fault_zero),
                "chaosd_proxy_only_vs_fault_no_fault": no_worse(bare, fault_bare),
            },
        },
    }))
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}
