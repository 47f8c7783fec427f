//! `cpu.limit`: caps the targets' CPU time with `cpu.max` = `<quota> <period>` (CFS bandwidth
//! control): a busy target gets `quota` of CPU time per `period`, its neighbours are not
//! touched. `affected` counts the periods in which the kernel throttled it (`nr_throttled`).

use std::time::Duration;

use super::{EventCounter, KnobFault, KnobWrite, apply_knobs};
use crate::{
    api::CpuLimitParams,
    error::{FaultError, RequestError},
    faults::{ActiveFault, ApplyContext},
};

const KIND: &str = "cpu.limit";
const DEFAULT_PERIOD: Duration = Duration::from_millis(100);
/// What the kernel accepts for a period, and the least quota it accepts.
const MIN_PERIOD: Duration = Duration::from_millis(1);
const MAX_PERIOD: Duration = Duration::from_secs(1);
const MIN_QUOTA_US: u64 = 1000;

fn online_cpus() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

fn period(p: &CpuLimitParams) -> Duration {
    p.period.as_ref().map_or(DEFAULT_PERIOD, |w| *w.value())
}

/// `cpu.max`'s two numbers, microseconds.
fn quota_and_period_us(p: &CpuLimitParams) -> (u64, u64) {
    let period_us = period(p).as_micros() as u64;
    let quota_us = (p.quota / 100.0 * period_us as f64).round() as u64;
    (quota_us, period_us)
}

pub fn validate(p: &CpuLimitParams) -> Result<(), RequestError> {
    let max = 100 * online_cpus();
    if !(p.quota > 0.0 && p.quota <= max as f64) {
        return Err(RequestError::BadParam {
            field: "quota",
            input: p.quota.to_string(),
            reason: format!(
                "give percent of one core above 0 and at most {max} (100 per online core): 20 is a fifth of a core"
            ),
        });
    }
    let period = period(p);
    if !(MIN_PERIOD..=MAX_PERIOD).contains(&period) {
        return Err(RequestError::BadParam {
            field: "period",
            input: humantime::format_duration(period).to_string(),
            reason: "the kernel takes periods from 1ms to 1s (default 100ms)".into(),
        });
    }
    let (quota_us, _) = quota_and_period_us(p);
    if quota_us < MIN_QUOTA_US {
        return Err(RequestError::BadParam {
            field: "quota",
            input: p.quota.to_string(),
            reason: format!(
                "{quota_us} µs per period is below the kernel's 1 ms minimum quota; ask for more, or a longer period"
            ),
        });
    }
    Ok(())
}

pub fn apply(
    p: &CpuLimitParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let (quota_us, period_us) = quota_and_period_us(p);
    let fault: KnobFault = apply_knobs(
        KIND,
        "cpu",
        ctx,
        &[KnobWrite {
            file: "cpu.max",
            value: format!("{quota_us} {period_us}"),
        }],
        EventCounter::Line {
            file: "cpu.stat",
            key: "nr_throttled",
        },
    )?;
    Ok(Box::new(fault))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Written;

    fn params(quota: f64, period: Option<&str>) -> CpuLimitParams {
        let period = period.map(|t| serde_json::from_value::<Written<Duration>>(t.into()).unwrap());
        CpuLimitParams { quota, period }
    }

    #[test]
    fn quota_is_a_share_of_one_core_per_period() {
        assert_eq!(quota_and_period_us(&params(20.0, None)), (20_000, 100_000));
        assert_eq!(
            quota_and_period_us(&params(150.0, Some("10ms"))),
            (15_000, 10_000)
        );
        assert!(validate(&params(20.0, None)).is_ok());
    }

    #[test]
    fn out_of_range_quotas_and_periods_are_refused_with_the_range() {
        let e = validate(&params(0.0, None)).unwrap_err().to_string();
        assert!(e.contains("above 0"), "{e}");
        let e = validate(&params(20.0, Some("2s"))).unwrap_err().to_string();
        assert!(e.contains("1ms to 1s"), "{e}");
        let e = validate(&params(1.0, Some("10ms")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 ms minimum"), "{e}");
    }
}
