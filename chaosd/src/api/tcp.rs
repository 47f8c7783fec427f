//! Wire types of the proxy kinds (`tcp.*`): a target's matching TCP connects go through
//! chaosd's proxy, which applies Toxiproxy-style toxics per connection.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ByteCount, LinkRate, NetFilter, Written};

/// Which half of a proxied connection a toxic acts on, named as in Toxiproxy.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// What the target sends to the server.
    Upstream,
    /// What the server sends back to the target (Toxiproxy's default).
    #[default]
    Downstream,
    Both,
}

impl Stream {
    /// Whether a toxic on `self` acts on data flowing `upstream` (true) or downstream.
    pub fn covers(self, upstream: bool) -> bool {
        match self {
            Stream::Both => true,
            Stream::Upstream => upstream,
            Stream::Downstream => !upstream,
        }
    }
}

/// `tcp.latency`: each chunk of data is held back by `latency` ± `jitter` (order is kept).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpLatencyParams {
    pub latency: Written<Duration>,
    /// Uniform spread around the latency, at most the latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Written<Duration>>,
    #[serde(default)]
    pub direction: Stream,
    /// Share of matching connections affected; all by default.
    #[serde(default = "hundred")]
    pub percent: f64,
    /// `dst` and `port` only (a connect has no local address yet; TCP only).
    #[serde(default)]
    pub filter: NetFilter,
}

/// `tcp.down`: new matching connects are refused (ECONNREFUSED); open ones are left alone.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpDownParams {
    #[serde(default = "hundred")]
    pub percent: f64,
    #[serde(default)]
    pub filter: NetFilter,
}

/// `tcp.reset_peer`: the target's connection is reset (RST) after `after` (at once by default).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpResetPeerParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Written<Duration>>,
    #[serde(default = "hundred")]
    pub percent: f64,
    #[serde(default)]
    pub filter: NetFilter,
}

/// `tcp.limit_data`: the connection is closed once `bytes` have passed in the direction.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpLimitDataParams {
    pub bytes: Written<ByteCount>,
    #[serde(default)]
    pub direction: Stream,
    #[serde(default = "hundred")]
    pub percent: f64,
    #[serde(default)]
    pub filter: NetFilter,
}

/// `tcp.timeout`: no data passes in the direction (it is dropped); the connection is closed
/// after `after`, or when the fault ends.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpTimeoutParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Written<Duration>>,
    #[serde(default)]
    pub direction: Stream,
    #[serde(default = "hundred")]
    pub percent: f64,
    #[serde(default)]
    pub filter: NetFilter,
}

/// `tcp.bandwidth`: the direction's data passes at most at `rate` (Toxiproxy's `bandwidth`);
/// downstream it caps what the target receives, which `net.bandwidth` (egress) cannot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpBandwidthParams {
    /// tc-style rate: "1mbit", "500kbit" (bits/s), "10mbps" (bytes/s).
    pub rate: Written<LinkRate>,
    #[serde(default)]
    pub direction: Stream,
    #[serde(default = "hundred")]
    pub percent: f64,
    #[serde(default)]
    pub filter: NetFilter,
}

/// `tcp.slow_close`: the close of the direction reaches the other side `delay` late.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpSlowCloseParams {
    pub delay: Written<Duration>,
    #[serde(default)]
    pub direction: Stream,
    #[serde(default = "hundred")]
    pub percent: f64,
    #[serde(default)]
    pub filter: NetFilter,
}

/// `tcp.slicer`: the direction's data is written in slices of about `size` bytes (± up to
/// `variation`), `delay` apart (Toxiproxy's `slicer`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpSlicerParams {
    pub size: Written<ByteCount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variation: Option<Written<ByteCount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Written<Duration>>,
    #[serde(default)]
    pub direction: Stream,
    #[serde(default = "hundred")]
    pub percent: f64,
    #[serde(default)]
    pub filter: NetFilter,
}

fn hundred() -> f64 {
    100.0
}
