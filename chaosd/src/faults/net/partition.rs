//! `net.partition`: drop everything to and from a peer prefix, both directions, as if the
//! network between the target and that peer were cut.

use std::sync::{Arc, Mutex};

use chaosd_common::net::{DIR_EGRESS, DIR_INGRESS, NetKind, NetRule, PPM_ONE};

use super::{apply_rule, filter::peer_filter};
use crate::{
    api::NetPartitionParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &NetPartitionParams) -> Result<(), RequestError> {
    if p.filter.dst.is_none() {
        return Err(RequestError::MissingField {
            field: "dst",
            kind: "net.partition",
        });
    }
    peer_filter(&p.filter).map(drop)
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &NetPartitionParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let rule = NetRule {
        kind: NetKind::Drop.code(),
        direction: DIR_EGRESS | DIR_INGRESS,
        probability_ppm: PPM_ONE,
        filter: peer_filter(&p.filter).map_err(FaultError::Refused)?,
        ..NetRule::default()
    };
    apply_rule(kernel, rule, ctx)
}
