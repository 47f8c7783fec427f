//! `tcp.reset_peer`: the target's proxied connection is reset (RST: ECONNRESET on its next
//! read or write) `after` it was accepted, at once by default (Toxiproxy's `reset_peer`).

use std::sync::{Arc, Mutex};

use super::{Toxic, apply_toxic, validate_filter};
use crate::{
    api::TcpResetPeerParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &TcpResetPeerParams) -> Result<(), RequestError> {
    validate_filter(&p.filter, p.percent)
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &TcpResetPeerParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let after = p.after.as_ref().map(|a| a.get()).unwrap_or_default();
    apply_toxic(
        kernel,
        Toxic::ResetPeer { after },
        p.percent,
        &p.filter,
        ctx,
    )
}
