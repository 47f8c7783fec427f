//! `net.bandwidth`: what the target sends is paced to a rate. The egress program gives each
//! packet the departure time its bytes allow (earliest-departure-time pacing); sch_fq on the
//! device holds it until then. One fault's targets share its rate.

use std::sync::{Arc, Mutex};

use chaosd_common::net::{DIR_EGRESS, NetKind, NetRule};

use super::{departure, filter::peer_filter};
use crate::{
    api::NetBandwidthParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

/// Default burst: a few full-size packets.
const DEFAULT_BURST_BYTES: u64 = 4 * 1514;

fn burst_bytes(p: &NetBandwidthParams) -> u64 {
    p.burst.as_ref().map_or(DEFAULT_BURST_BYTES, |b| b.get().0)
}

pub fn validate(p: &NetBandwidthParams) -> Result<(), RequestError> {
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
        rate_bytes_per_sec: p.rate.get().0,
        burst_bytes: burst_bytes(p),
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
