//! `tcp.limit_data`: the target's proxied connection is closed once `bytes` have passed in
//! the direction (Toxiproxy's `limit_data`); each direction of `both` counts on its own.

use std::sync::{Arc, Mutex};

use super::{Toxic, apply_toxic, validate_filter};
use crate::{
    api::TcpLimitDataParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &TcpLimitDataParams) -> Result<(), RequestError> {
    validate_filter(&p.filter, p.percent)?;
    if p.bytes.get().0 == 0 {
        return Err(RequestError::BadParam {
            field: "bytes",
            input: p.bytes.to_string(),
            reason: "must be at least 1 (use tcp.timeout to pass nothing)".into(),
        });
    }
    Ok(())
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &TcpLimitDataParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let toxic = Toxic::LimitData {
        bytes: p.bytes.get().0,
        stream: p.direction,
    };
    apply_toxic(kernel, toxic, p.percent, &p.filter, ctx)
}
