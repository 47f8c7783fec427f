//! `net.delay`: what the target sends leaves `delay` ± `jitter` later. The egress program sets
//! each packet's departure time; sch_fq on the device holds it until then. Jitter never
//! reorders a flow: a packet never departs before the previous one of its flow.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chaosd_common::net::{DIR_EGRESS, NetKind, NetRule};

use super::{departure, filter::peer_filter};
use crate::{
    api::NetDelayParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

/// Jitter is drawn from 32 random bits scaled to 2 × jitter, which must stay below 2^32 ns.
const MAX_JITTER_NS: u64 = 2_000_000_000;

/// Delay and jitter in ns, checked against each other and the horizon.
pub fn delay_and_jitter(p: &NetDelayParams) -> Result<(u64, u64), RequestError> {
    let ns = |d: Duration| d.as_nanos().min(u128::from(u64::MAX)) as u64;
    let delay = ns(p.delay.get());
    if delay == 0 || delay > departure::MAX_DELAY_NS {
        return Err(bad(
            "delay",
            p.delay.text(),
            "must be above 0 and at most 10s",
        ));
    }
    let Some(jitter_written) = &p.jitter else {
        return Ok((delay, 0));
    };
    let jitter = ns(jitter_written.get());
    if jitter > delay {
        return Err(bad(
            "jitter",
            jitter_written.text(),
            "must not exceed the delay (a packet cannot leave before it was sent)",
        ));
    }
    if jitter > MAX_JITTER_NS || delay + jitter > departure::MAX_DELAY_NS {
        return Err(bad(
            "jitter",
            jitter_written.text(),
            "must be at most 2s, and delay + jitter at most 10s",
        ));
    }
    Ok((delay, jitter))
}

pub fn validate(p: &NetDelayParams) -> Result<(), RequestError> {
    delay_and_jitter(p)?;
    if let Some(spec) = &p.netns {
        super::netns::check_spec(spec)?;
    }
    peer_filter(&p.filter).map(drop)
}

/// The kernel rule for `p` (deadline and counter slot are filled in at apply).
pub fn rule(p: &NetDelayParams) -> Result<NetRule, RequestError> {
    let (delay_ns, jitter_ns) = delay_and_jitter(p)?;
    Ok(NetRule {
        kind: NetKind::Delay.code(),
        direction: DIR_EGRESS,
        delay_ns,
        jitter_ns,
        filter: peer_filter(&p.filter)?,
        ..NetRule::default()
    })
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &NetDelayParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let rule = rule(p).map_err(FaultError::Refused)?;
    let max_ahead = rule.delay_ns + rule.jitter_ns;
    departure::apply(kernel, rule, max_ahead, p.netns.as_deref(), ctx)
}

pub(crate) fn bad(field: &'static str, input: &str, reason: &str) -> RequestError {
    RequestError::BadParam {
        field,
        input: input.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(delay: &str, jitter: Option<&str>) -> NetDelayParams {
        NetDelayParams {
            delay: delay.parse().unwrap(),
            jitter: jitter.map(|j| j.parse().unwrap()),
            filter: Default::default(),
            netns: None,
        }
    }

    #[test]
    fn delay_and_jitter_are_parsed_and_bounded() {
        assert_eq!(
            delay_and_jitter(&params("100ms", Some("10ms"))).unwrap(),
            (100_000_000, 10_000_000)
        );
        for (d, j) in [
            ("0ms", None),
            ("11s", None),
            ("10ms", Some("20ms")),
            ("9s", Some("2s")),
            ("5s", Some("3s")),
        ] {
            let err = delay_and_jitter(&params(d, j)).unwrap_err().to_string();
            assert!(err.contains("is not valid"), "{d} {j:?}: {err}");
        }
        assert!("soon".parse::<crate::api::Written<Duration>>().is_err());
    }
}
