//! `tcp.bandwidth`: the direction's data of the target's proxied connections passes at most
//! at a rate (Toxiproxy's `bandwidth`). Downstream it caps what the target receives: the
//! download cap `net.bandwidth` (which paces what the cgroup sends) cannot give.

use std::sync::{Arc, Mutex};

use super::{Toxic, apply_toxic, validate_filter};
use crate::{
    api::TcpBandwidthParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &TcpBandwidthParams) -> Result<(), RequestError> {
    validate_filter(&p.filter, p.percent)
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &TcpBandwidthParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let toxic = Toxic::Bandwidth {
        bytes_per_sec: p.rate.get().0,
        stream: p.direction,
    };
    apply_toxic(kernel, toxic, p.percent, &p.filter, ctx)
}
