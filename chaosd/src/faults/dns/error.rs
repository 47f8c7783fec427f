//! `dns.error`: the target's matching queries are answered with a response code (NXDOMAIN,
//! SERVFAIL, REFUSED, ...) instead of reaching the server.

use std::sync::{Arc, Mutex};

use super::{Action, apply_dns, validate_select};
use crate::{
    api::DnsErrorParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &DnsErrorParams) -> Result<(), RequestError> {
    validate_select(p)
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &DnsErrorParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    apply_dns(kernel, p, Action::Error(p.rcode.get().0), ctx)
}
