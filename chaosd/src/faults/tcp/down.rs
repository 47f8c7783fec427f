//! `tcp.down`: the target's new matching connects fail with ECONNREFUSED (Toxiproxy's
//! disabled proxy); connections already open are left alone.

use std::sync::{Arc, Mutex};

use super::{Toxic, apply_toxic, validate_filter};
use crate::{
    api::TcpDownParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &TcpDownParams) -> Result<(), RequestError> {
    validate_filter(&p.filter, p.percent)
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &TcpDownParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    apply_toxic(kernel, Toxic::Down, p.percent, &p.filter, ctx)
}
