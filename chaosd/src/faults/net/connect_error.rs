//! `net.connect_error`: `connect()` from the target fails with a chosen errno (TCP and
//! connected UDP), and so does an unconnected UDP `sendmsg()`.

use std::sync::{Arc, Mutex};

use chaosd_common::net::{NetKind, NetRule};

use super::{apply_rule, filter::peer_filter, loss::check_percent, percent_to_ppm};
use crate::{
    api::NetConnectErrorParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &NetConnectErrorParams) -> Result<(), RequestError> {
    check_percent(p.percent)?;
    if p.filter.src.is_some() {
        return Err(RequestError::BadFilter {
            field: "src",
            input: p
                .filter
                .src
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            reason: "a connect has no local address yet; filter by --dst and --port".into(),
        });
    }
    peer_filter(&p.filter).map(drop)
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &NetConnectErrorParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let rule = NetRule {
        kind: NetKind::ConnectError.code(),
        probability_ppm: percent_to_ppm(p.percent),
        retval: -p.errno.get().0,
        filter: peer_filter(&p.filter).map_err(FaultError::Refused)?,
        ..NetRule::default()
    };
    apply_rule(kernel, rule, ctx)
}
