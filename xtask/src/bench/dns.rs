//! Resolution latency through chaosd's resolver (`dns.*`) for a name no fault matches, next
//! to the same query sent direct, in one run: what a DNS fault costs the names it leaves alone.
//!
//! The server is a minimal UDP responder of the bench's own on 127.0.0.153:53 (an address of
//! the loopback range, no interface touched). The client is a hidden xtask subcommand in a
//! cgroup of the bench's, sending one query at a time on a connected UDP socket (as glibc
//! does); rounds alternate direct and with a `dns.error` fault on other names.

use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    process::Command,
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
    stats::{median, percentile, round3},
};

const SERVER: &str = "127.0.0.153:53";
const NAME: &str = "bench.test";

/// Arguments of `cargo xtask __bench-dns-queries`.
#[derive(clap::Args, Debug)]
pub struct DnsQueriesArgs {
    /// cgroup2 directory to join first.
    #[arg(long)]
    cgroup: PathBuf,
    #[arg(long)]
    server: SocketAddr,
    #[arg(long)]
    count: u32,
}

/// Prints `{"p50_us":.., "p90_us":.., "p99_us":.., "lost": N}` for `count` A queries of
/// [`NAME`], one at a time.
pub fn queries(args: &DnsQueriesArgs) -> Result<()> {
    std::fs::write(args.cgroup.join("cgroup.procs"), "0")
        .with_context(|| format!("joining {}", args.cgroup.display()))?;
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(args.server)?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut samples = Vec::with_capacity(args.count as usize);
    let mut lost = 0u32;
    let mut buf = [0u8; 512];
    for i in 0..args.count {
        let id = (i & 0xffff) as u16;
        let q = query(id);
        let t = Instant::now();
        sock.send(&q)?;
        match sock.recv(&mut buf) {
            Ok(n) if n >= 2 && buf[..2] == id.to_be_bytes() => {
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
            _ => lost += 1,
        }
    }
    println!(
        "{}",
        json!({
            "p50_us": round3(median(&samples)),
            "p90_us": round3(percentile(&samples, 90.0)),
            "p99_us": round3(percentile(&samples, 99.0)),
            "lost": lost,
        })
    );
    Ok(())
}

/// An A query for [`NAME`] with recursion desired.
fn query(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in NAME.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Answers every query with one A record (10.0.0.1), until dropped.
struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    fn start() -> Result<Responder> {
        let sock = UdpSocket::bind(SERVER).with_context(|| format!("binding {SERVER}"))?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if n < 12 {
                    continue;
                }
                let mut r = buf[..n].to_vec();
                r[2] |= 0x80; // QR
                r[3] = 0x80; // RA, NOERROR
                r[7] = 1; // ANCOUNT = 1
                r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
                let _ = sock.send_to(&r, from);
            }
        });
        Ok(Responder {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_client(cgroups: &BenchCgroups, rel: &str, count: u32) -> Result<Value> {
    let out = Command::new(std::env::current_exe()?)
        .arg("__bench-dns-queries")
        .arg("--cgroup")
        .arg(cgroups.dir_of(rel))
        .args(["--server", SERVER, "--count", &count.to_string()])
        .output()
        .context("running the dns client")?;
    if !out.status.success() {
        bail!("dns client: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Rounds alternating direct and through the resolver; medians and spreads of each.
pub fn measure(
    daemon: &Daemon,
    cgroups: &mut BenchCgroups,
    rounds: usize,
    count: u32,
) -> Result<Value> {
    if let Some(reason) = daemon.unsupported_reason("dns.error")? {
        return Ok(json!(format!("not measured: {reason}")));
    }
    let responder = match Responder::start() {
        Ok(r) => r,
        Err(e) => return Ok(json!(format!("not measured: {e:#}"))),
    };
    let target = cgroups.child("dns")?;
    let fault = json!({"kind": "dns.error",
        "params": {"rcode": "NXDOMAIN", "domains": ["*.elsewhere.test"]}});
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    let (mut direct_p99, mut through_p99) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let d = run_client(cgroups, &target, count)?;
        let id = daemon.inject(fault.clone(), std::slice::from_ref(&target), "10m")?;
        let t = run_client(cgroups, &target, count);
        daemon.recover(&id)?;
        let t = t?;
        if d["lost"] != 0 || t["lost"] != 0 {
            bail!("dns queries lost: direct {d}, through the resolver {t}");
        }
        direct.push(d["p50_us"].as_f64().unwrap_or(f64::NAN));
        through.push(t["p50_us"].as_f64().unwrap_or(f64::NAN));
        direct_p99.push(d["p99_us"].as_f64().unwrap_or(f64::NAN));
        through_p99.push(t["p99_us"].as_f64().unwrap_or(f64::NAN));
    }
    drop(responder);
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        json!([round3(lo), round3(hi)])
    };
    Ok(json!({
        "setup": format!("one A query at a time on a connected UDP socket from a bench cgroup to \
            a responder on {SERVER}; through the resolver: a dns.error fault on *.elsewhere.test \
            (the name {NAME} does not match, so it is forwarded)"),
        "rounds": rounds,
        "queries_per_round": count,
        "direct_p50_us_median": round3(median(&direct)),
        "direct_p50_us_spread": spread(&direct),
        "direct_p99_us_median": round3(median(&direct_p99)),
        "resolver_p50_us_median": round3(median(&through)),
        "resolver_p50_us_spread": spread(&through),
        "resolver_p99_us_median": round3(median(&through_p99)),
        "added_p50_us": round3(median(&through) - median(&direct)),
        "goal": "<= 100 us added p50 (issue 17)",
    }))
}
