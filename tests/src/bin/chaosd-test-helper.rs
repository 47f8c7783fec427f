//! `chaosd-test-helper`: the processes the integration tests (and `cargo xtask bench`) start
//! inside cgroups and namespaces to measure a fault from there. Not shipped: the `chaosd` and
//! `chaosctl` binaries carry no test-only verbs.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Result;
use chaosd::api::{Choice as _, IoOp};
use chaosd_integration::{probe, systemd_container::Boot};
use clap::{Parser, Subcommand};

/// Test probes for chaosd's integration tests; each prints what it saw on stdout.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Send numbered UDP datagrams `[tag, seq_le32]`.
    UdpSend {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        count: u32,
        #[arg(long, default_value_t = 0)]
        tag: u8,
    },
    /// Ping a UDP echo server; print the round trips (ns, null = lost) as JSON.
    UdpPing {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        count: u32,
        #[arg(long, default_value_t = 20)]
        gap_ms: u64,
    },
    /// Send sequence-numbered, send-time-stamped datagrams.
    UdpStamped {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        count: u32,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 0)]
        gap_us: u64,
    },
    /// Print a loopback UDP address, count datagrams until quiet, print the count.
    UdpRecv {
        /// Stop this long after the last datagram (or after the first wait of 10 s).
        #[arg(long, default_value_t = 300)]
        quiet_ms: u64,
    },
    /// Try one TCP connect; print "ok" or "error ERRNO".
    TcpConnect {
        #[arg(long)]
        to: SocketAddr,
    },
    /// Connect, send bytes, read until the end; print a JSON `probe::TcpTalk`.
    TcpTalk {
        #[arg(long)]
        to: SocketAddr,
        /// Bytes to send after the connect.
        #[arg(long, default_value_t = 0)]
        send: usize,
        /// Give up a read after this long without data.
        #[arg(long, default_value_t = 10_000)]
        read_ms: u64,
    },
    /// Perform one file operation N times; print a JSON report.
    FileOps {
        #[arg(long, value_parser = IoOp::from_name)]
        op: IoOp,
        /// A file (open, read, write, truncate) or a directory (create, unlink, rename,
        /// mkdir, rmdir).
        #[arg(long)]
        path: PathBuf,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Open the file first, print "ready" and wait for a line on stdin before the
        /// operations.
        #[arg(long)]
        hold: bool,
    },
    /// Time a patched clock_gettime against the native one in this process; print JSON
    /// {native_ns, patched_ns, ratio, iterations}.
    ClockBench {
        /// Calls per measuring round.
        #[arg(long, default_value_t = 1_000_000)]
        iterations: u64,
    },
    /// Boot the host's systemd as PID 1 of a container rooted in `cgroup`
    /// (`chaosd_integration::systemd_container`); returns when that PID 1 ends.
    SystemdContainer {
        #[arg(long)]
        cgroup: PathBuf,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        units: PathBuf,
        #[arg(long)]
        chaosd: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaosd-test-helper: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(verb: Verb) -> Result<()> {
    match verb {
        Verb::UdpSend { to, count, tag } => probe::send_datagrams(to, tag, count)?,
        Verb::UdpPing { to, count, gap_ms } => {
            let rtts = probe::udp_ping(to, count, Duration::from_millis(gap_ms))?;
            println!("{}", serde_json::to_string(&rtts)?);
        }
        Verb::UdpStamped {
            to,
            count,
            size,
            gap_us,
        } => probe::send_stamped(to, count, size, Duration::from_micros(gap_us))?,
        Verb::UdpRecv { quiet_ms } => {
            let sink = probe::UdpSink::bind_loopback()?;
            println!("{}", sink.addr());
            let received =
                sink.count_until_quiet(Duration::from_millis(quiet_ms), Duration::from_secs(60))?;
            println!("{received}");
        }
        Verb::TcpConnect { to } => match probe::tcp_connect(to) {
            Ok(()) => println!("ok"),
            Err(errno) => println!("error {errno}"),
        },
        Verb::TcpTalk { to, send, read_ms } => {
            let talk = probe::tcp_talk(to, send, Duration::from_millis(read_ms));
            println!("{}", serde_json::to_string(&talk)?);
        }
        Verb::FileOps {
            op,
            path,
            count,
            hold,
        } => {
            let report = chaosd_integration::file_ops::run(op, &path, count, hold)?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Verb::ClockBench { iterations } => clock_bench(iterations)?,
        Verb::SystemdContainer {
            cgroup,
            dir,
            units,
            chaosd,
        } => chaosd_integration::systemd_container::boot(&Boot {
            cgroup: &cgroup,
            dir: &dir,
            units: &units,
            chaosd: &chaosd,
        })?,
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
fn clock_bench(iterations: u64) -> Result<()> {
    let report = chaosd_integration::clock_bench::run(iterations)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
fn clock_bench(_iterations: u64) -> Result<()> {
    anyhow::bail!("clock skew is x86_64 only")
}
