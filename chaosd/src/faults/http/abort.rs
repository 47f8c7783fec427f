//! `http.abort`: the target's matching requests get no response; the connection is closed
//! (the client reads EOF: curl's "empty reply") or, with `reset`, reset (ECONNRESET). The
//! responses to requests before it on the connection are delivered first.

use std::sync::{Arc, Mutex};

use super::{Action, apply_http, validate_select};
use crate::{
    api::HttpAbortParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &HttpAbortParams) -> Result<(), RequestError> {
    validate_select(p)
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &HttpAbortParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    apply_http(kernel, p, Action::Abort { reset: p.reset }, ctx)
}
