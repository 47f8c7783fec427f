//! `dns.delay`: the target's matching queries are forwarded `delay` late; the answer is the
//! real one. Delays of several faults that hit one query add up.

use std::sync::{Arc, Mutex};

use super::{Action, apply_dns, validate_select};
use crate::{
    api::DnsDelayParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &DnsDelayParams) -> Result<(), RequestError> {
    validate_select(p)?;
    if p.delay.get().is_zero() {
        return Err(RequestError::BadParam {
            field: "delay",
            input: p.delay.to_string(),
            reason: "must be above zero".into(),
        });
    }
    Ok(())
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &DnsDelayParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    apply_dns(kernel, p, Action::Delay(p.delay.get()), ctx)
}
