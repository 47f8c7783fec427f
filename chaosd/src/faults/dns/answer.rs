//! `dns.answer`: the target's matching A/AAAA queries are answered with wrong addresses
//! (fixed, or `random` from the test ranges 198.18.0.0/15 and 2001:db8::/32); other types of
//! a matching name get an empty answer.

use std::sync::{Arc, Mutex};

use super::{Action, apply_dns, validate_select};
use crate::{
    api::DnsAnswerParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &DnsAnswerParams) -> Result<(), RequestError> {
    validate_select(p)?;
    if p.ips.is_empty() {
        return Err(RequestError::BadParam {
            field: "ips",
            input: String::new(),
            reason: "give at least one address (or `random`)".into(),
        });
    }
    Ok(())
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &DnsAnswerParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let action = Action::Answer {
        ips: p.ips.iter().map(|i| i.get()).collect(),
        ttl: p.ttl,
    };
    apply_dns(kernel, p, action, ctx)
}
