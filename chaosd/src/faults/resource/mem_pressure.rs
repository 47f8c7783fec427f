//! `mem.pressure`: sets `memory.high` on the targets: above it the kernel slows their
//! allocations and reclaims their pages (swap, page cache), so they run under memory pressure
//! without being killed. With `max` and `allow_oom` it also sets `memory.max`, where the OOM
//! killer acts: an OOM test, never done by accident. `affected` counts the `high` (and `oom`)
//! events of `memory.events` since the fault began.

use super::{EventCounter, KnobFault, KnobWrite, apply_knobs};
use crate::{
    api::MemPressureParams,
    error::{FaultError, RequestError},
    faults::{ActiveFault, ApplyContext},
};

const KIND: &str = "mem.pressure";
/// The kernel keeps these knobs in pages: it reads back a multiple of the page size.
const LEAST: u64 = 1 << 20;

pub fn validate(p: &MemPressureParams) -> Result<(), RequestError> {
    let high = p.high.value().0;
    if high < LEAST {
        return Err(RequestError::BadParam {
            field: "high",
            input: p.high.to_string(),
            reason: "give at least 1MiB (below that nothing can run)".into(),
        });
    }
    match (&p.max, p.allow_oom) {
        (Some(max), false) => Err(RequestError::BadParam {
            field: "max",
            input: max.to_string(),
            reason: "memory.max makes the OOM killer kill the target's processes; add allow_oom (--allow-oom) if that is the test, or leave out max for pressure without kills".into(),
        }),
        (Some(max), true) if max.value().0 < high => Err(RequestError::BadParam {
            field: "max",
            input: max.to_string(),
            reason: format!("give at least high ({}): the kernel throttles at high before it kills at max", p.high),
        }),
        (None, true) => Err(RequestError::MissingField { field: "max", kind: KIND }),
        _ => Ok(()),
    }
}

pub fn apply(
    p: &MemPressureParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let mut writes = vec![KnobWrite {
        file: "memory.high",
        value: p.high.value().0.to_string(),
    }];
    if let Some(max) = &p.max {
        writes.push(KnobWrite {
            file: "memory.max",
            value: max.value().0.to_string(),
        });
    }
    let fault: KnobFault = apply_knobs(
        KIND,
        "memory",
        ctx,
        &writes,
        EventCounter::Line {
            file: "memory.events",
            key: "high",
        },
    )?;
    Ok(Box::new(fault))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ByteSize, Written};

    fn size(t: &str) -> Written<ByteSize> {
        serde_json::from_value(t.into()).unwrap()
    }

    #[test]
    fn max_needs_allow_oom_and_at_least_high() {
        let mut p = MemPressureParams {
            high: size("256MiB"),
            max: None,
            allow_oom: false,
        };
        assert!(validate(&p).is_ok());
        p.max = Some(size("512MiB"));
        let e = validate(&p).unwrap_err().to_string();
        assert!(e.contains("allow_oom"), "{e}");
        p.allow_oom = true;
        assert!(validate(&p).is_ok());
        p.max = Some(size("128MiB"));
        let e = validate(&p).unwrap_err().to_string();
        assert!(e.contains("at least high"), "{e}");
        p.high = size("4KiB");
        let e = validate(&p).unwrap_err().to_string();
        assert!(e.contains("1MiB"), "{e}");
    }
}
