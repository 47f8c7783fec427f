//! `net.bandwidth`: what the target sends is paced to a rate. The egress program gives each
//! packet the departure time its bytes allow (earliest-departure-time pacing); sch_fq on the
//! device holds it until then. One fault's targets share its rate.

use std::sync::{Arc, Mutex};

use chaosd_common::net::{DIR_EGRESS, NetKind, NetRule};

use super::{delay::bad, departure, filter::peer_filter};
use crate::{
    api::NetBandwidthParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

/// Slowest rate accepted: 8 kbit/s (1000 bytes/s); a 64 KiB TSO burst then takes a minute.
const MIN_RATE_BYTES: u64 = 1000;
/// Default burst: a few full-size packets.
const DEFAULT_BURST_BYTES: u64 = 4 * 1514;

/// Parses a tc-style rate into bytes per second: `1mbit`, `500kbit`, `2gbit` (bits per
/// second, powers of 1000), `10mbps`, `100kbps` (bytes per second); a bare number is bits.
pub fn parse_rate(input: &str) -> Result<u64, RequestError> {
    let s = input.trim().to_ascii_lowercase();
    let (num, unit) = crate::api::units::split_number(&s)
        .ok_or_else(|| bad("rate", input, "must start with a number (e.g. 1mbit)"))?;
    let (scale, bytes) = match unit {
        "" | "bit" => (1.0, false),
        "kbit" => (1e3, false),
        "mbit" => (1e6, false),
        "gbit" => (1e9, false),
        "bps" => (1.0, true),
        "kbps" => (1e3, true),
        "mbps" => (1e6, true),
        "gbps" => (1e9, true),
        _ => {
            return Err(bad(
                "rate",
                input,
                "unknown unit; use bit, kbit, mbit, gbit (bits/s) or bps, kbps, mbps, gbps (bytes/s)",
            ));
        }
    };
    let bytes_per_sec = num * scale / if bytes { 1.0 } else { 8.0 };
    if !bytes_per_sec.is_finite() || bytes_per_sec < MIN_RATE_BYTES as f64 {
        return Err(bad("rate", input, "must be at least 8kbit (1kbps)"));
    }
    Ok(bytes_per_sec.min(u64::MAX as f64 / 1e9) as u64)
}

fn burst_bytes(p: &NetBandwidthParams) -> Result<u64, RequestError> {
    match &p.burst {
        None => Ok(DEFAULT_BURST_BYTES),
        Some(b) => crate::api::units::parse_size(b)
            .map_err(|reason| bad("burst", b, &format!("{reason} (examples: 32KiB, 15000)"))),
    }
}

pub fn validate(p: &NetBandwidthParams) -> Result<(), RequestError> {
    parse_rate(&p.rate)?;
    burst_bytes(p)?;
    if let Some(spec) = &p.netns {
        super::netns::check_spec(spec)?;
    }
    peer_filter(&p.filter).map(drop)
}

/// The kernel rule for `p` (deadline and counter slot are filled in at apply).
pub fn rule(p: &NetBandwidthParams) -> Result<NetRule, RequestError> {
    Ok(NetRule {
        kind: NetKind::Bandwidth.code(),
        direction: DIR_EGRESS,
        rate_bytes_per_sec: parse_rate(&p.rate)?,
        burst_bytes: burst_bytes(p)?,
        filter: peer_filter(&p.filter)?,
        ..NetRule::default()
    })
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &NetBandwidthParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let rule = rule(p).map_err(FaultError::Refused)?;
    // A backlog beyond fq's horizon is capped there; the horizon is sized for the cap.
    departure::apply(
        kernel,
        rule,
        departure::MAX_DELAY_NS,
        p.netns.as_deref(),
        ctx,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_tc_units() {
        assert_eq!(parse_rate("1mbit").unwrap(), 125_000);
        assert_eq!(parse_rate("500kbit").unwrap(), 62_500);
        assert_eq!(parse_rate("10mbps").unwrap(), 10_000_000);
        assert_eq!(parse_rate("8000").unwrap(), 1000);
        for bad in ["fast", "1mb", "4kbit", "-1mbit", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
