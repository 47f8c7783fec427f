//! `net.duplicate`: send a share of what the target sends twice. The TC egress classifier
//! ([`super::tc`]) clones the packet out of the same device; the copy is marked so it is never
//! copied again. Egress only.

use std::sync::{Arc, Mutex};

use chaosd_common::net::NetKind;

use super::tc;
use crate::{
    api::NetDuplicateParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &NetDuplicateParams) -> Result<(), RequestError> {
    tc::egress_rule(NetKind::Duplicate, p.percent, &p.filter).map(drop)
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &NetDuplicateParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let rule =
        tc::egress_rule(NetKind::Duplicate, p.percent, &p.filter).map_err(FaultError::Refused)?;
    tc::apply(kernel, rule, ctx)
}
