//! `dns.timeout`: the target's matching queries get no answer; each client's own timeout
//! and retries show (glibc: 5 s per try by default, Go: 5 s, dig: 5 s and 3 tries).

use std::sync::{Arc, Mutex};

use super::{Action, apply_dns, validate_select};
use crate::{
    api::DnsTimeoutParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &DnsTimeoutParams) -> Result<(), RequestError> {
    validate_select(p)
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &DnsTimeoutParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    apply_dns(kernel, p, Action::Timeout, ctx)
}
