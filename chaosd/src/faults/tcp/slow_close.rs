//! `tcp.slow_close`: when one side of the target's proxied connection closes, the other side
//! sees it `delay` later (Toxiproxy's `slow_close`).

use std::sync::{Arc, Mutex};

use super::{Toxic, apply_toxic, validate_filter};
use crate::{
    api::TcpSlowCloseParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &TcpSlowCloseParams) -> Result<(), RequestError> {
    validate_filter(&p.filter, p.percent)
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &TcpSlowCloseParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let toxic = Toxic::SlowClose {
        delay: p.delay.get(),
        stream: p.direction,
    };
    apply_toxic(kernel, toxic, p.percent, &p.filter, ctx)
}
