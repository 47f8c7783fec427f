//! `http.delay`: the target's matching requests reach the server `delay` ± `jitter` late
//! (uniform). Requests behind a delayed one on the same connection wait for it, as HTTP/1.1
//! answers in order; delays of several faults that hit one request add up.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{Action, apply_http, validate_select};
use crate::{
    api::HttpDelayParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &HttpDelayParams) -> Result<(), RequestError> {
    validate_select(p)?;
    if p.delay.get().is_zero() {
        return Err(RequestError::BadParam {
            field: "delay",
            input: p.delay.to_string(),
            reason: "must be above zero".into(),
        });
    }
    if let Some(jitter) = &p.jitter
        && jitter.get() > p.delay.get()
    {
        return Err(RequestError::BadParam {
            field: "jitter",
            input: jitter.to_string(),
            reason: format!("must be at most the delay ({})", p.delay),
        });
    }
    Ok(())
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &HttpDelayParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let action = Action::Delay {
        delay: p.delay.get(),
        jitter: p.jitter.as_ref().map(|j| j.get()).unwrap_or(Duration::ZERO),
    };
    apply_http(kernel, p, action, ctx)
}
