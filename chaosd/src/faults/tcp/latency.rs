//! `tcp.latency`: the data of the target's proxied connections arrives `latency` ± `jitter`
//! later, per chunk, in the chosen direction (Toxiproxy's `latency`).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{Toxic, apply_toxic, validate_filter};
use crate::{
    api::TcpLatencyParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &TcpLatencyParams) -> Result<(), RequestError> {
    validate_filter(&p.filter, p.percent)?;
    let jitter = p.jitter.as_ref().map(|j| j.get()).unwrap_or_default();
    if jitter > p.latency.get() {
        return Err(RequestError::BadParam {
            field: "jitter",
            input: p.jitter.as_ref().map(|j| j.to_string()).unwrap_or_default(),
            reason: format!("must be at most the latency ({})", p.latency),
        });
    }
    Ok(())
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &TcpLatencyParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let toxic = Toxic::Latency {
        latency: p.latency.get(),
        jitter: p.jitter.as_ref().map(|j| j.get()).unwrap_or(Duration::ZERO),
        stream: p.direction,
    };
    apply_toxic(kernel, toxic, p.percent, &p.filter, ctx)
}
