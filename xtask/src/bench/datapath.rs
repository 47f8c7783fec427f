//! Datapath overhead for untargeted traffic: TCP throughput and 1-byte request/response
//! latency between two namespaces over a veth pair. The bench's own threads are the endpoints;
//! they sit in the bench's cgroup, which no rule targets.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    netns::{ADDR_B, NetNs, join, server_addr},
    stats::{median, percentile, round3, spread, verdict},
};

/// How much traffic one configuration gets in each round (configurations take turns, so a
/// change in the host's background load hits all of them alike).
pub struct Plan {
    pub rounds: usize,
    pub throughput_run: Duration,
    pub round_trips_per_round: usize,
}

/// Throughput (Gbit/s, median of runs) and round-trip latency (µs, p50/p99 of every trip),
/// with each round's throughput and p50 kept for ratios round by round.
pub struct Figures {
    pub gbps: f64,
    pub rr_p50_us: f64,
    pub rr_p99_us: f64,
    round_gbps: Vec<f64>,
    round_p50_us: Vec<f64>,
}

impl Figures {
    pub fn json(&self) -> Value {
        json!({
            "tcp_throughput_gbps_median": round3(self.gbps),
            "tcp_throughput_gbps_spread": spread(&self.round_gbps),
            "tcp_rr_latency_us_p50": round3(self.rr_p50_us),
            "tcp_rr_latency_us_p50_spread": spread(&self.round_p50_us),
            "tcp_rr_latency_us_p99": round3(self.rr_p99_us),
        })
    }

    /// This configuration relative to `base`, round by round (the two took turns in each
    /// round): the median ratio, its spread over rounds, and what the spread allows to say.
    pub fn ratios(&self, base: &Figures) -> Value {
        let per_round = |ours: &[f64], theirs: &[f64]| -> Vec<f64> {
            ours.iter().zip(theirs).map(|(o, t)| o / t).collect()
        };
        let tput = per_round(&self.round_gbps, &base.round_gbps);
        let p50 = per_round(&self.round_p50_us, &base.round_p50_us);
        json!({
            "throughput_vs_baseline": round3(median(&tput)),
            "throughput_vs_baseline_spread": spread(&tput),
            "throughput_verdict": verdict(&tput, "faster", "slower"),
            "rr_latency_p50_vs_baseline": round3(median(&p50)),
            "rr_latency_p50_vs_baseline_spread": spread(&p50),
            "rr_latency_verdict": verdict(&p50, "slower", "faster"),
        })
    }
}

/// One configuration's samples over all rounds.
#[derive(Default)]
pub struct Samples {
    gbps: Vec<f64>,
    trips_us: Vec<f64>,
    round_p50_us: Vec<f64>,
}

impl Samples {
    /// One round: a throughput run and a batch of round trips.
    pub fn add_round(&mut self, a: &NetNs, b: &NetNs, plan: &Plan) -> Result<()> {
        self.gbps.push(throughput_once(a, b, plan.throughput_run)?);
        let trips = round_trips(a, b, plan.round_trips_per_round)?;
        self.round_p50_us.push(median(&trips));
        self.trips_us.extend(trips);
        Ok(())
    }

    pub fn figures(&self) -> Figures {
        Figures {
            gbps: median(&self.gbps),
            rr_p50_us: median(&self.trips_us),
            rr_p99_us: percentile(&self.trips_us, 99.0),
            round_gbps: self.gbps.clone(),
            round_p50_us: self.round_p50_us.clone(),
        }
    }
}

/// Runs `server` on one accepted connection in `b` and `client` against it from `a`.
fn client_server<T: Send + 'static>(
    a: &NetNs,
    b: &NetNs,
    server: fn(TcpStream) -> Result<T>,
    client: impl FnOnce(SocketAddr) -> Result<()> + Send + 'static,
) -> Result<T> {
    let (port_tx, port_rx) = mpsc::channel();
    let server = b.spawn(move || {
        let listener = TcpListener::bind((ADDR_B, 0))?;
        port_tx.send(listener.local_addr()?.port())?;
        let (stream, _) = listener.accept()?;
        server(stream)
    })?;
    let port = port_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the server in namespace B did not start")?;
    a.run(move || client(server_addr(port)))?;
    join(server)
}

/// Gbit/s received by the server, from its first byte to EOF.
/// Reads `s` to its end: the bytes read, and when the first of them arrived.
pub fn drain(s: &mut impl std::io::Read) -> std::io::Result<(u64, Option<Instant>)> {
    let mut buf = vec![0u8; 256 << 10];
    let (mut total, mut first) = (0u64, None);
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok((total, first));
        }
        first.get_or_insert_with(Instant::now);
        total += n as u64;
    }
}

pub fn throughput_once(a: &NetNs, b: &NetNs, run: Duration) -> Result<f64> {
    client_server(
        a,
        b,
        |mut s| {
            let (total, first) = drain(&mut s)?;
            let secs = first.map_or(f64::INFINITY, |t| t.elapsed().as_secs_f64());
            Ok(total as f64 * 8.0 / secs / 1e9)
        },
        move |addr| {
            let mut s = TcpStream::connect(addr)?;
            let chunk = vec![0x5au8; 128 << 10];
            let end = Instant::now() + run;
            while Instant::now() < end {
                s.write_all(&chunk)?;
            }
            Ok(())
        },
    )
}

/// Round-trip times in µs of `n` 1-byte request/responses on one connection (after a warm-up).
fn round_trips(a: &NetNs, b: &NetNs, n: usize) -> Result<Vec<f64>> {
    let (tx, rx) = mpsc::channel();
    client_server(
        a,
        b,
        |mut s| {
            s.set_nodelay(true)?;
            let mut byte = [0u8; 1];
            while s.read(&mut byte)? == 1 {
                s.write_all(&byte)?;
            }
            Ok(())
        },
        move |addr| {
            let mut s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            let mut byte = [7u8; 1];
            let mut trips = Vec::with_capacity(n);
            for i in 0..n + 200 {
                let t = Instant::now();
                s.write_all(&byte)?;
                s.read_exact(&mut byte)?;
                if i >= 200 {
                    trips.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            tx.send(trips)?;
            Ok(())
        },
    )?;
    Ok(rx.recv()?)
}
