//! `net.loss`: drop a share of a cgroup's packets, optionally only some peers, ports, protocols.

use std::sync::{Arc, Mutex};

use chaosd_common::net::{DIR_EGRESS, DIR_INGRESS, NetKind, NetRule};

use super::{apply_rule, filter::peer_filter, percent_to_ppm};
use crate::{
    api::{Direction, NetLossParams},
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &NetLossParams) -> Result<(), RequestError> {
    check_percent(p.percent)?;
    peer_filter(&p.filter).map(drop)
}

pub(crate) fn check_percent(percent: f64) -> Result<(), RequestError> {
    if !(percent > 0.0 && percent <= 100.0) {
        return Err(RequestError::PercentOutOfRange { value: percent });
    }
    Ok(())
}

pub(crate) fn direction_bits(d: Direction) -> u32 {
    match d {
        Direction::Egress => DIR_EGRESS,
        Direction::Ingress => DIR_INGRESS,
        Direction::Both => DIR_EGRESS | DIR_INGRESS,
    }
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &NetLossParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let filter = peer_filter(&p.filter).map_err(FaultError::Refused)?;
    let rule = NetRule {
        kind: NetKind::Drop.code(),
        direction: direction_bits(p.direction),
        probability_ppm: percent_to_ppm(p.percent),
        filter,
        ..NetRule::default()
    };
    apply_rule(kernel, rule, ctx)
}

#[cfg(test)]
mod tests {
    use chaosd_common::net::PPM_ONE;

    use super::*;
    use crate::api::NetFilter;

    #[test]
    fn percent_maps_to_parts_per_million() {
        assert_eq!(percent_to_ppm(30.0), 300_000);
        assert_eq!(percent_to_ppm(100.0), PPM_ONE);
        assert_eq!(percent_to_ppm(0.00001), 1);
    }

    #[test]
    fn percent_must_be_in_range() {
        for bad in [0.0, -1.0, 150.0, f64::NAN] {
            let p = NetLossParams {
                percent: bad,
                direction: Direction::Egress,
                filter: NetFilter::default(),
            };
            assert!(validate(&p).is_err(), "{bad}");
        }
        let ok = NetLossParams {
            percent: 100.0,
            direction: Direction::Both,
            filter: NetFilter::default(),
        };
        assert!(validate(&ok).is_ok());
    }
}
