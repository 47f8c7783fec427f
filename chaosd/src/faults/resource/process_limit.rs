//! `process.limit`: sets `pids.max` on the targets, so their `fork()`/`clone()` beyond `max`
//! tasks fail with EAGAIN (process and thread exhaustion) while what runs keeps running.
//! `affected` counts the refused forks (`pids.events` `max`) since the fault began.

use super::{EventCounter, KnobFault, KnobWrite, apply_knobs};
use crate::{
    api::ProcessLimitParams,
    error::{FaultError, RequestError},
    faults::{ActiveFault, ApplyContext},
};

pub fn validate(p: &ProcessLimitParams) -> Result<(), RequestError> {
    if p.max == 0 {
        return Err(RequestError::BadParam {
            field: "max",
            input: "0".into(),
            reason: "give at least 1 task (0 would also stop chaosd from moving helpers in)".into(),
        });
    }
    Ok(())
}

pub fn apply(
    p: &ProcessLimitParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let fault: KnobFault = apply_knobs(
        "process.limit",
        "pids",
        ctx,
        &[KnobWrite {
            file: "pids.max",
            value: p.max.to_string(),
        }],
        EventCounter::Line {
            file: "pids.events",
            key: "max",
        },
    )?;
    Ok(Box::new(fault))
}
