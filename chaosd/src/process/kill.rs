//! `process.kill`: sends a signal (SIGKILL by default) to the processes of the target cgroups,
//! all of them or `count` / `percent` of them picked at random. It acts once, at apply; the
//! fault record still lives for its duration so it shows in `list` with its counters, and
//! reverting it does nothing (a signal cannot be taken back).
//!
//! Counters: `seen` is the processes found in the targets (and their descendant cgroups),
//! `affected` the processes signalled.

use std::str::FromStr as _;

use nix::{sys::signal::Signal, unistd::Pid};
use rand::seq::SliceRandom as _;

use super::{pids_in_subtree, target_dirs};
use crate::{
    api::{Counters, ProcessKillParams},
    error::{FaultError, RequestError},
    fault::{ActiveFault, ApplyContext},
};

/// A signal by name (`SIGTERM`, `TERM`, `term`) or number (`15`).
pub fn parse_signal(input: &str) -> Result<Signal, RequestError> {
    let s = input.trim();
    let bad = || RequestError::UnknownSignal {
        input: input.to_string(),
    };
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

pub fn validate(p: &ProcessKillParams) -> Result<(), RequestError> {
    parse_signal(&p.signal)?;
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
        _ => Ok(()),
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
    let signal = parse_signal(&p.signal).map_err(FaultError::Refused)?;
    let me = std::process::id();
    let mut pids: Vec<u32> = target_dirs(ctx.targets)?
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
    Ok(Box::new(KillFault {
        counters: Counters {
            seen: seen as u64,
            affected,
        },
    }))
}

struct KillFault {
    counters: Counters,
}

impl ActiveFault for KillFault {
    fn counters(&self) -> Counters {
        self.counters
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(signal: &str, count: Option<u32>, percent: Option<f64>) -> ProcessKillParams {
        ProcessKillParams {
            signal: signal.into(),
            count,
            percent,
        }
    }

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("SIGKILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("term").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        for bad in ["SIGNOPE", "", "999", "KILLME"] {
            assert!(
                matches!(parse_signal(bad), Err(RequestError::UnknownSignal { .. })),
                "{bad}"
            );
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
}
