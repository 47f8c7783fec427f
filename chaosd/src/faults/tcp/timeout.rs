//! `tcp.timeout`: no data of the target's proxied connection passes in the direction (it is
//! dropped, as Toxiproxy's `timeout` does); the connection is closed `after`, or, without it,
//! when the fault ends.

use std::sync::{Arc, Mutex};

use super::{Toxic, apply_toxic, validate_filter};
use crate::{
    api::TcpTimeoutParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &TcpTimeoutParams) -> Result<(), RequestError> {
    validate_filter(&p.filter, p.percent)
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &TcpTimeoutParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let toxic = Toxic::Timeout {
        after: p.after.as_ref().map(|a| a.get()),
        stream: p.direction,
    };
    apply_toxic(kernel, toxic, p.percent, &p.filter, ctx)
}
