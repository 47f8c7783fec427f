//! `stress.mem`: a worker per cgroup that allocates `size` (or `percent` of the host's memory),
//! writes every page (at `rate` if given) and holds it until the fault ends. Run inside a
//! target, the memory is charged to that cgroup (where the memory controller is enabled).
//!
//! Counters: `seen` is the bytes asked of all workers, `affected` the most bytes the workers
//! have held resident (RSS) at once so far.

use std::{ffi::OsString, sync::Mutex};

use super::{Placement, Workers, deadline_ns, mem_total, proc_rss_bytes, worker_name};
use crate::{
    api::{Counters, StressMemParams},
    error::{FaultError, RequestError},
    faults::{ActiveFault, ApplyContext},
};

/// The bytes and rate (bytes/s) a request asks for, checked against the host's memory.
fn resolve(p: &StressMemParams) -> Result<(u64, Option<u64>), RequestError> {
    let total = mem_total().unwrap_or(u64::MAX);
    let bytes = match (&p.size, p.percent) {
        (Some(s), None) => s.get().0,
        (None, Some(pct)) => {
            if !(pct > 0.0 && pct <= 100.0) {
                return Err(RequestError::PercentOutOfRange { value: pct });
            }
            ((total as f64) * pct / 100.0) as u64
        }
        _ => {
            return Err(RequestError::ExactlyOneOf {
                kind: "stress.mem",
                a: "size",
                b: "percent",
            });
        }
    };
    if bytes > total {
        return Err(RequestError::MemAboveTotal {
            asked: super::human_bytes(bytes),
            total: super::human_bytes(total),
        });
    }
    let rate = p.rate.as_ref().map(|r| r.get().0);
    Ok((bytes, rate))
}

pub fn validate(p: &StressMemParams) -> Result<(), RequestError> {
    resolve(p).map(|_| ())
}

pub fn apply(
    p: &StressMemParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let (bytes, rate) = resolve(p).map_err(FaultError::Refused)?;
    let placement = Placement::for_targets(ctx.targets, "mem")?;
    let mut args: Vec<OsString> = vec![
        "--until-monotonic-ns".into(),
        deadline_ns(ctx.duration).to_string().into(),
        "mem".into(),
        "--bytes".into(),
        bytes.to_string().into(),
    ];
    if let Some(r) = rate {
        args.push("--rate".into());
        args.push(r.to_string().into());
    }
    let workers = Workers::start(placement, 1, &worker_name("mem", ctx.fault_id), &args)?;
    Ok(Box::new(MemStress {
        asked: bytes * workers.len() as u64,
        pids: workers.pids(),
        workers,
        max_resident: Mutex::new(0),
    }))
}

struct MemStress {
    workers: Workers,
    pids: Vec<u32>,
    asked: u64,
    max_resident: Mutex<u64>,
}

impl ActiveFault for MemStress {
    fn counters(&self) -> Counters {
        let mut max = self.max_resident.lock().unwrap_or_else(|e| e.into_inner());
        let now: u64 = self.pids.iter().filter_map(|p| proc_rss_bytes(*p)).sum();
        *max = (*max).max(now);
        Counters {
            seen: self.asked,
            affected: *max,
        }
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        self.workers.stop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(size: Option<&str>, percent: Option<f64>) -> StressMemParams {
        StressMemParams {
            size: size.map(|s| s.parse().unwrap()),
            percent,
            rate: None,
        }
    }

    #[test]
    fn size_or_percent_within_total_memory() {
        assert_eq!(resolve(&p(Some("256MiB"), None)).unwrap().0, 256 << 20);
        assert!(matches!(
            resolve(&p(None, None)),
            Err(RequestError::ExactlyOneOf { .. })
        ));
        assert!(matches!(
            resolve(&p(Some("1GiB"), Some(5.0))),
            Err(RequestError::ExactlyOneOf { .. })
        ));
        assert!(matches!(
            resolve(&p(Some("1000TiB"), None)),
            Err(RequestError::MemAboveTotal { .. })
        ));
        assert!(matches!(
            resolve(&p(None, Some(150.0))),
            Err(RequestError::PercentOutOfRange { .. })
        ));
        let mut rated = p(Some("1MiB"), None);
        rated.rate = Some("10MiB/s".parse().unwrap());
        assert_eq!(resolve(&rated).unwrap().1, Some(10 << 20));
    }
}
