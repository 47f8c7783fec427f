//! `chaosctl inject tcp ...`: the transparent proxy's faults, on a cgroup's TCP connects.

use std::time::Duration;

use chaosd::api::{
    ByteCount, Cidr, FaultSpec, LinkRate, NetFilter, PortRange, Stream, TcpBandwidthParams,
    TcpDownParams, TcpLatencyParams, TcpLimitDataParams, TcpResetPeerParams, TcpSlicerParams,
    TcpSlowCloseParams, TcpTimeoutParams, Written,
};
use clap::{Args, Subcommand};

use crate::args::{Common, choice};

#[derive(Subcommand)]
pub enum TcpFault {
    /// Hold back the data of the target's TCP connections by a latency (± jitter), per chunk.
    Latency {
        /// Added to every chunk of data, e.g. 500ms.
        #[arg(long)]
        latency: Written<Duration>,
        /// Uniform spread around the latency, at most the latency; order is kept.
        #[arg(long)]
        jitter: Option<Written<Duration>>,
        #[command(flatten)]
        direction: DirectionArg,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Refuse the target's new TCP connects (ECONNREFUSED); open connections are left alone.
    Down {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Reset the target's TCP connections (ECONNRESET), at once or --after a time.
    ResetPeer {
        /// How long after the connect the reset comes, e.g. 2s; at once by default.
        #[arg(long)]
        after: Option<Written<Duration>>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Close the target's TCP connections once so many bytes have passed.
    LimitData {
        /// Bytes that pass before the close, e.g. 1000 or 64KiB.
        #[arg(long)]
        bytes: Written<ByteCount>,
        #[command(flatten)]
        direction: DirectionArg,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Stop all data of the target's TCP connections; close them --after a time, or when the
    /// fault ends.
    Timeout {
        /// Close the connection this long after it was made; never by default (until the
        /// fault ends).
        #[arg(long)]
        after: Option<Written<Duration>>,
        #[command(flatten)]
        direction: DirectionArg,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Cap the data rate of the target's TCP connections; --direction downstream caps what it
    /// receives (net bandwidth paces only what a cgroup sends).
    Bandwidth {
        /// tc-style rate: 1mbit, 500kbit (bits/s) or 10mbps (bytes/s).
        #[arg(long)]
        rate: Written<LinkRate>,
        #[command(flatten)]
        direction: DirectionArg,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Pass on the close of the target's TCP connections late.
    SlowClose {
        /// How late the close arrives, e.g. 2s.
        #[arg(long)]
        delay: Written<Duration>,
        #[command(flatten)]
        direction: DirectionArg,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Write the data of the target's TCP connections in small slices, optionally delayed.
    Slicer {
        /// Average slice, e.g. 64 (bytes).
        #[arg(long)]
        size: Written<ByteCount>,
        /// Slices vary by up to this many bytes around the size; below the size.
        #[arg(long)]
        variation: Option<Written<ByteCount>>,
        /// Pause between slices, e.g. 1ms.
        #[arg(long)]
        delay: Option<Written<Duration>>,
        #[command(flatten)]
        direction: DirectionArg,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// Which half of the connection, named as in Toxiproxy.
#[derive(Args)]
pub struct DirectionArg {
    /// upstream: what the target sends; downstream: what it receives.
    #[arg(long, value_parser = choice::<Stream>(), default_value = "downstream")]
    pub direction: Stream,
}

/// Which connects, how many of them, and the common target/duration flags.
#[derive(Args)]
pub struct ConnArgs {
    /// Destination prefix the target connects to (IPv4 CIDR or address).
    #[arg(long)]
    pub dst: Option<Written<Cidr>>,
    /// Destination port or range, e.g. 6379 or 8000-8080.
    #[arg(long)]
    pub port: Option<Written<PortRange>>,
    /// Share of matching connections affected, above 0 and at most 100.
    #[arg(long, default_value_t = 100.0)]
    pub percent: f64,
    #[command(flatten)]
    pub common: Common,
}

impl ConnArgs {
    fn filter(&self) -> NetFilter {
        NetFilter {
            dst: self.dst.clone(),
            port: self.port.clone(),
            ..NetFilter::default()
        }
    }
}

impl TcpFault {
    pub fn into_spec(self) -> (FaultSpec, Common) {
        match self {
            TcpFault::Latency {
                latency,
                jitter,
                direction,
                conn,
            } => (
                FaultSpec::TcpLatency(TcpLatencyParams {
                    latency,
                    jitter,
                    direction: direction.direction,
                    percent: conn.percent,
                    filter: conn.filter(),
                }),
                conn.common,
            ),
            TcpFault::Down { conn } => (
                FaultSpec::TcpDown(TcpDownParams {
                    percent: conn.percent,
                    filter: conn.filter(),
                }),
                conn.common,
            ),
            TcpFault::ResetPeer { after, conn } => (
                FaultSpec::TcpResetPeer(TcpResetPeerParams {
                    after,
                    percent: conn.percent,
                    filter: conn.filter(),
                }),
                conn.common,
            ),
            TcpFault::LimitData {
                bytes,
                direction,
                conn,
            } => (
                FaultSpec::TcpLimitData(TcpLimitDataParams {
                    bytes,
                    direction: direction.direction,
                    percent: conn.percent,
                    filter: conn.filter(),
                }),
                conn.common,
            ),
            TcpFault::Timeout {
                after,
                direction,
                conn,
            } => (
                FaultSpec::TcpTimeout(TcpTimeoutParams {
                    after,
                    direction: direction.direction,
                    percent: conn.percent,
                    filter: conn.filter(),
                }),
                conn.common,
            ),
            TcpFault::Bandwidth {
                rate,
                direction,
                conn,
            } => (
                FaultSpec::TcpBandwidth(TcpBandwidthParams {
                    rate,
                    direction: direction.direction,
                    percent: conn.percent,
                    filter: conn.filter(),
                }),
                conn.common,
            ),
            TcpFault::SlowClose {
                delay,
                direction,
                conn,
            } => (
                FaultSpec::TcpSlowClose(TcpSlowCloseParams {
                    delay,
                    direction: direction.direction,
                    percent: conn.percent,
                    filter: conn.filter(),
                }),
                conn.common,
            ),
            TcpFault::Slicer {
                size,
                variation,
                delay,
                direction,
                conn,
            } => (
                FaultSpec::TcpSlicer(TcpSlicerParams {
                    size,
                    variation,
                    delay,
                    direction: direction.direction,
                    percent: conn.percent,
                    filter: conn.filter(),
                }),
                conn.common,
            ),
        }
    }

    /// What `list` shows of a proxy fault's parameters.
    pub fn describe(spec: &FaultSpec) -> Option<String> {
        let dir = |s: Stream| crate::args::stream_name(s);
        Some(match spec {
            FaultSpec::TcpLatency(p) => format!(
                "{} % of connections: {} {}{}",
                p.percent,
                dir(p.direction),
                p.latency,
                p.jitter
                    .as_ref()
                    .map(|j| format!(" ± {j}"))
                    .unwrap_or_default()
            ),
            FaultSpec::TcpDown(p) => format!("{} % of connects refused", p.percent),
            FaultSpec::TcpResetPeer(p) => format!(
                "{} % of connections reset {}",
                p.percent,
                p.after
                    .as_ref()
                    .map(|a| format!("after {a}"))
                    .unwrap_or_else(|| "at once".into())
            ),
            FaultSpec::TcpLimitData(p) => format!(
                "{} % of connections closed after {} {}",
                p.percent,
                p.bytes,
                dir(p.direction)
            ),
            FaultSpec::TcpTimeout(p) => format!(
                "{} % of connections: {} data stopped, closed {}",
                p.percent,
                dir(p.direction),
                p.after
                    .as_ref()
                    .map(|a| format!("after {a}"))
                    .unwrap_or_else(|| "when the fault ends".into())
            ),
            FaultSpec::TcpBandwidth(p) => format!(
                "{} % of connections: {} capped at {}",
                p.percent,
                dir(p.direction),
                p.rate
            ),
            FaultSpec::TcpSlowClose(p) => format!(
                "{} % of connections: {} close {} late",
                p.percent,
                dir(p.direction),
                p.delay
            ),
            FaultSpec::TcpSlicer(p) => format!(
                "{} % of connections: {} in slices of {}{}{}",
                p.percent,
                dir(p.direction),
                p.size,
                p.variation
                    .as_ref()
                    .map(|v| format!(" ± {v}"))
                    .unwrap_or_default(),
                p.delay
                    .as_ref()
                    .map(|d| format!(", {d} apart"))
                    .unwrap_or_default()
            ),
            _ => return None,
        })
    }
}
