//! `tcp.slicer`: the direction's data of the target's proxied connections is written in small
//! slices (`size` ± `variation` bytes), `delay` apart (Toxiproxy's `slicer`): the receiver
//! sees many short reads.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{Toxic, apply_toxic, validate_filter};
use crate::{
    api::TcpSlicerParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &TcpSlicerParams) -> Result<(), RequestError> {
    validate_filter(&p.filter, p.percent)?;
    let size = p.size.get().0;
    let variation = p.variation.as_ref().map(|v| v.get().0).unwrap_or(0);
    if size == 0 {
        return Err(RequestError::BadParam {
            field: "size",
            input: p.size.to_string(),
            reason: "must be at least 1 byte".into(),
        });
    }
    if variation >= size {
        return Err(RequestError::BadParam {
            field: "variation",
            input: p
                .variation
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default(),
            reason: format!("must be below the size ({})", p.size),
        });
    }
    Ok(())
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &TcpSlicerParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let toxic = Toxic::Slicer {
        size: p.size.get().0,
        variation: p.variation.as_ref().map(|v| v.get().0).unwrap_or(0),
        delay: p.delay.as_ref().map(|d| d.get()).unwrap_or(Duration::ZERO),
        stream: p.direction,
    };
    apply_toxic(kernel, toxic, p.percent, &p.filter, ctx)
}
