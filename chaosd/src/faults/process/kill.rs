//! `process.kill`: sends a signal (SIGKILL by default) to the processes of the target cgroups,
//! all of them or `count` / `percent` of them picked at random.
//!
//! Without `every` it is one-shot: it signals once, at apply, and the registry ends it at once
//! as `completed` with its counters (a signal cannot be taken back, so there is nothing to
//! hold); it takes no concurrent-fault slot ([`crate::faults::FaultKinds::one_shot`]). With
//! `every` a thread signals again at that interval until the fault ends (recover, deadline,
//! shutdown), and the fault is active meanwhile.
//!
//! Counters, summed over the rounds: `seen` is the processes found in the targets (and their
//! descendant cgroups), `affected` the processes signalled.

use std::{
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};
use rand::seq::SliceRandom as _;

use super::{pids_in_subtree, target_dirs};
use crate::{
    api::{Counters, ProcessKillParams, ResolvedTarget},
    error::{FaultError, RequestError},
    faults::{ActiveFault, ApplyContext},
};

/// Shortest `every`: a repeating kill is not a busy loop.
pub const MIN_EVERY: Duration = Duration::from_millis(100);

/// Whether `p` signals once and ends (no `every`).
pub fn is_one_shot(p: &ProcessKillParams) -> bool {
    p.every.is_none()
}

/// The `every` interval, checked; None for a one-shot kill.
pub fn every(p: &ProcessKillParams) -> Result<Option<Duration>, RequestError> {
    let Some(every) = &p.every else {
        return Ok(None);
    };
    if every.get() < MIN_EVERY {
        return Err(RequestError::BadParam {
            field: "every",
            input: every.to_string(),
            reason: format!("must be at least {}", humantime::format_duration(MIN_EVERY)),
        });
    }
    Ok(Some(every.get()))
}

pub fn validate(p: &ProcessKillParams) -> Result<(), RequestError> {
    match (p.count, p.percent) {
        (Some(_), Some(_)) => Err(RequestError::AtMostOneOf {
            kind: "process.kill",
            a: "count",
            b: "percent",
        }),
        (Some(0), None) => Err(RequestError::BadCount { value: 0 }),
        (None, Some(pct)) if !(pct > 0.0 && pct <= 100.0) => {
            Err(RequestError::PercentOutOfRange { value: pct })
        }
        _ => every(p).map(drop),
    }
}

/// How many of `seen` processes to signal.
fn how_many(p: &ProcessKillParams, seen: usize) -> usize {
    match (p.count, p.percent) {
        (Some(n), _) => (n as usize).min(seen),
        (None, Some(pct)) => ((seen as f64 * pct / 100.0).ceil() as usize).min(seen),
        (None, None) => seen,
    }
}

pub fn apply(
    p: &ProcessKillParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    validate(p).map_err(FaultError::Refused)?;
    let signal = p.signal.get().0;
    let every = every(p).map_err(FaultError::Refused)?;
    if let Some(e) = every
        && e >= ctx.duration
    {
        return Err(FaultError::Refused(RequestError::BadParam {
            field: "every",
            input: p.every.as_ref().map(|e| e.to_string()).unwrap_or_default(),
            reason: format!(
                "must be shorter than the duration ({}), or the kill happens once: leave \
                 every out for a one-shot kill",
                humantime::format_duration(ctx.duration)
            ),
        }));
    }
    let counters = Arc::new(Mutex::new(signal_round(p, signal, ctx.targets)?));
    let repeater = match every {
        None => None,
        Some(interval) => Some(Repeater::start(
            p.clone(),
            signal,
            ctx.targets.to_vec(),
            interval,
            Instant::now() + ctx.duration,
            Arc::clone(&counters),
        )?),
    };
    Ok(Box::new(KillFault { counters, repeater }))
}

/// Signals the chosen processes of `targets` once; returns (found, signalled).
fn signal_round(
    p: &ProcessKillParams,
    signal: Signal,
    targets: &[ResolvedTarget],
) -> Result<Counters, FaultError> {
    let me = std::process::id();
    let mut pids: Vec<u32> = target_dirs(targets)?
        .iter()
        .flat_map(|d| pids_in_subtree(d))
        .filter(|&pid| pid != me && pid > 1)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    let seen = pids.len();
    pids.shuffle(&mut rand::rng());
    let mut affected = 0u64;
    for pid in pids.iter().take(how_many(p, seen)) {
        if nix::sys::signal::kill(Pid::from_raw(*pid as i32), signal).is_ok() {
            affected += 1;
        }
    }
    tracing::info!(signal = %signal, seen, affected, "process.kill signalled");
    Ok(Counters {
        seen: seen as u64,
        affected,
    })
}

/// The thread of a repeating kill: a round every interval until the deadline or a stop.
struct Repeater {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Repeater {
    fn start(
        p: ProcessKillParams,
        signal: Signal,
        targets: Vec<ResolvedTarget>,
        interval: Duration,
        deadline: Instant,
        counters: Arc<Mutex<Counters>>,
    ) -> Result<Repeater, FaultError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name("chaosd-kill".into())
            .spawn(move || {
                let _span = span.enter();
                let mut next = Instant::now() + interval;
                while next < deadline {
                    let wait = next.saturating_duration_since(Instant::now());
                    if stopped.recv_timeout(wait) != Err(mpsc::RecvTimeoutError::Timeout) {
                        return; // stopped, or the fault is gone
                    }
                    match signal_round(&p, signal, &targets) {
                        Ok(round) => {
                            let mut c = counters.lock().unwrap_or_else(|e| e.into_inner());
                            c.seen += round.seen;
                            c.affected += round.affected;
                        }
                        Err(e) => tracing::warn!("process.kill round failed: {e}"),
                    }
                    next += interval;
                }
            })
            .map_err(|e| FaultError::kernel("starting the process.kill thread", e))?;
        Ok(Repeater { stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

struct KillFault {
    counters: Arc<Mutex<Counters>>,
    repeater: Option<Repeater>,
}

impl ActiveFault for KillFault {
    fn counters(&self) -> Counters {
        *self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops a repeating kill; a signal already sent cannot be taken back.
    fn revert(&mut self) -> Result<(), FaultError> {
        if let Some(r) = self.repeater.take() {
            r.stop();
        }
        Ok(())
    }
}

impl Drop for KillFault {
    fn drop(&mut self) {
        let _ = self.revert();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(signal: &str, count: Option<u32>, percent: Option<f64>) -> ProcessKillParams {
        ProcessKillParams {
            signal: signal.parse().unwrap(),
            count,
            percent,
            every: None,
        }
    }

    #[test]
    fn count_and_percent_pick_how_many() {
        assert_eq!(how_many(&p("KILL", None, None), 7), 7);
        assert_eq!(how_many(&p("KILL", Some(2), None), 7), 2);
        assert_eq!(how_many(&p("KILL", Some(20), None), 7), 7);
        assert_eq!(how_many(&p("KILL", None, Some(50.0)), 7), 4);
        assert!(validate(&p("KILL", Some(1), Some(5.0))).is_err());
        assert!(validate(&p("KILL", Some(0), None)).is_err());
        assert!(validate(&p("KILL", None, Some(0.0))).is_err());
    }

    #[test]
    fn every_makes_it_repeat_and_is_bounded() {
        let with = |every: &str| ProcessKillParams {
            every: Some(every.parse().unwrap()),
            ..p("KILL", None, None)
        };
        assert!(is_one_shot(&p("KILL", None, None)));
        assert!(!is_one_shot(&with("10s")));
        assert_eq!(every(&with("10s")).unwrap(), Some(Duration::from_secs(10)));
        for short in ["10ms", "0s"] {
            let err = validate(&with(short)).unwrap_err().to_string();
            assert!(err.contains("every"), "{short}: {err}");
        }
        let bad = r#"{"signal": "KILL", "every": "soon"}"#;
        assert!(serde_json::from_str::<ProcessKillParams>(bad).is_err());
    }
}
