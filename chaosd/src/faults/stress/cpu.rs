//! `stress.cpu`: workers that each burn `load` % of one core, in the target cgroups (or in a
//! cgroup of chaosd's own without targets).
//!
//! Counters: `seen` is worker-milliseconds of wall time so far (workers × elapsed), `affected`
//! the CPU milliseconds the workers used (utime + stime), so `affected / seen` is the load the
//! workers achieved.

use std::{ffi::OsString, sync::Mutex, time::Instant};

use super::{Placement, Workers, deadline_ns, proc_cpu_ms, worker_name};
use crate::{
    api::{Counters, StressCpuParams},
    error::{FaultError, RequestError},
    faults::{ActiveFault, ApplyContext},
};

/// Upper bound on workers per cgroup.
pub const MAX_WORKERS: u32 = 1024;

pub fn validate(p: &StressCpuParams) -> Result<(), RequestError> {
    if !(p.load > 0.0 && p.load <= 100.0) {
        return Err(RequestError::LoadOutOfRange { value: p.load });
    }
    if let Some(w) = p.workers
        && !(1..=MAX_WORKERS).contains(&w)
    {
        return Err(RequestError::BadWorkers {
            value: w,
            max: MAX_WORKERS,
        });
    }
    Ok(())
}

/// Online CPUs: the default number of workers.
fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

pub fn apply(
    p: &StressCpuParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    validate(p).map_err(FaultError::Refused)?;
    let per_cgroup = p.workers.unwrap_or_else(cores);
    let placement = Placement::for_targets(ctx.targets, "cpu")?;
    let args: Vec<OsString> = vec![
        "--until-monotonic-ns".into(),
        deadline_ns(ctx.duration).to_string().into(),
        "cpu".into(),
        "--load".into(),
        p.load.to_string().into(),
    ];
    let name = worker_name("cpu", ctx.fault_id);
    let workers = Workers::start(placement, per_cgroup, &name, &args)?;
    Ok(Box::new(CpuStress {
        pids: workers.pids(),
        workers,
        started: Instant::now(),
        duration_ms: ctx.duration.as_millis() as u64,
        last: Mutex::new(Counters::default()),
    }))
}

struct CpuStress {
    workers: Workers,
    pids: Vec<u32>,
    started: Instant,
    duration_ms: u64,
    last: Mutex<Counters>,
}

impl ActiveFault for CpuStress {
    fn counters(&self) -> Counters {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = (self.started.elapsed().as_millis() as u64).min(self.duration_ms);
        let cpu: Option<u64> = self.pids.iter().map(|p| proc_cpu_ms(*p)).sum();
        if let Some(cpu) = cpu {
            *last = Counters {
                seen: elapsed * self.workers.len() as u64,
                affected: cpu,
            };
        }
        *last
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        self.workers.stop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_and_workers_are_bounded() {
        for bad in [0.0, -5.0, 100.5, 150.0, f64::NAN] {
            let p = StressCpuParams {
                load: bad,
                workers: None,
            };
            assert!(
                matches!(validate(&p), Err(RequestError::LoadOutOfRange { .. })),
                "{bad}"
            );
        }
        let zero = StressCpuParams {
            load: 50.0,
            workers: Some(0),
        };
        assert!(matches!(
            validate(&zero),
            Err(RequestError::BadWorkers { .. })
        ));
        assert!(
            validate(&StressCpuParams {
                load: 100.0,
                workers: Some(2)
            })
            .is_ok()
        );
    }
}
