//! `net.corrupt`: damage a share of what the target sends. By default the IP header is
//! damaged so that the receiving stack drops the packet (as a NIC or switch drops a frame that
//! fails its check); `payload` flips payload bits instead and fixes the L4 checksum, so the
//! damage reaches the application unnoticed. Egress only (TC egress classifier, [`super::tc`]).

use std::sync::{Arc, Mutex};

use chaosd_common::net::{NET_FLAG_PAYLOAD, NetKind};

use super::tc;
use crate::{
    api::NetCorruptParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &NetCorruptParams) -> Result<(), RequestError> {
    tc::egress_rule(NetKind::Corrupt, p.percent, &p.filter).map(drop)
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &NetCorruptParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let mut rule =
        tc::egress_rule(NetKind::Corrupt, p.percent, &p.filter).map_err(FaultError::Refused)?;
    if p.payload {
        rule.flags |= NET_FLAG_PAYLOAD;
    }
    tc::apply(kernel, rule, ctx)
}
