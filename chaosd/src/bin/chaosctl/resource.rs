//! `chaosctl inject cpu limit | mem pressure | fd limit` (and the text of `process limit`): the clap
//! types of the cgroup-knob faults, their wire specs and their one-line descriptions.

use std::time::Duration;

use chaosd::api::{ByteSize, CpuLimitParams, FaultSpec, FdLimitParams, MemPressureParams, Written};
use clap::Subcommand;

use crate::args::Common;

#[derive(Subcommand)]
pub enum CpuFault {
    /// Cap the targets' CPU time (cpu.max): a busy target gets --quota of a core, its
    /// neighbours keep theirs.
    Limit {
        /// Percent of one core, e.g. 20 or 20% (150 = one and a half cores).
        #[arg(long, value_parser = percent)]
        quota: f64,
        /// Accounting period, 1ms to 1s [default: 100ms].
        #[arg(long)]
        period: Option<Written<Duration>>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
pub enum MemFault {
    /// Throttle and reclaim the targets above --high (memory.high): they slow down, they are
    /// not killed. --max with --allow-oom also sets memory.max (an OOM test).
    Pressure {
        /// Memory above which the kernel throttles and reclaims, e.g. 256MiB.
        #[arg(long)]
        high: Written<ByteSize>,
        /// A hard limit where the OOM killer acts (needs --allow-oom).
        #[arg(long, requires = "allow_oom")]
        max: Option<Written<ByteSize>>,
        /// Say that OOM kills in the targets are what the test is for.
        #[arg(long, requires = "max")]
        allow_oom: bool,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
pub enum FdFault {
    /// Lower the soft RLIMIT_NOFILE of the target processes (prlimit): once one holds --nofile
    /// descriptors, its next open() fails with EMFILE. --pid targets that process only,
    /// --cgroup/--unit every process in the cgroup when the fault starts.
    Limit {
        /// The soft limit to set, e.g. 64 (processes already at or below it are left alone).
        #[arg(long)]
        nofile: u64,
        #[command(flatten)]
        common: Common,
    },
}

impl FdFault {
    pub fn into_spec(self) -> (FaultSpec, Common) {
        match self {
            FdFault::Limit { nofile, common } => {
                (FaultSpec::FdLimit(FdLimitParams { nofile }), common)
            }
        }
    }
}

/// "20", "20%" or "20 %" as 20.0.
fn percent(text: &str) -> Result<f64, String> {
    text.trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage (e.g. 20 or 20%)"))
}

impl CpuFault {
    pub fn into_spec(self) -> (FaultSpec, Common) {
        match self {
            CpuFault::Limit {
                quota,
                period,
                common,
            } => (
                FaultSpec::CpuLimit(CpuLimitParams { quota, period }),
                common,
            ),
        }
    }
}

impl MemFault {
    pub fn into_spec(self) -> (FaultSpec, Common) {
        match self {
            MemFault::Pressure {
                high,
                max,
                allow_oom,
                common,
            } => (
                FaultSpec::MemPressure(MemPressureParams {
                    high,
                    max,
                    allow_oom,
                }),
                common,
            ),
        }
    }
}

/// One line on what a cgroup-knob fault does (empty for other kinds).
pub fn params(spec: &FaultSpec) -> String {
    match spec {
        FaultSpec::CpuLimit(p) => format!(
            "{} % of a core per {} (cpu.max)",
            p.quota,
            p.period
                .as_ref()
                .map_or_else(|| "100ms".to_string(), ToString::to_string)
        ),
        FaultSpec::MemPressure(p) => match &p.max {
            Some(max) => format!("throttled above {} (memory.high), OOM at {max}", p.high),
            None => format!("throttled and reclaimed above {} (memory.high)", p.high),
        },
        FaultSpec::ProcessLimit(p) => {
            format!("at most {} tasks, fork fails with EAGAIN (pids.max)", p.max)
        }
        FaultSpec::FdLimit(p) => format!(
            "at most {} open files per process, then EMFILE (soft RLIMIT_NOFILE)",
            p.nofile
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::percent;

    #[test]
    fn quota_takes_a_number_with_or_without_a_percent_sign() {
        assert_eq!(percent("20"), Ok(20.0));
        assert_eq!(percent("20%"), Ok(20.0));
        assert_eq!(percent(" 150 % "), Ok(150.0));
        assert!(percent("a fifth").unwrap_err().contains("not a percentage"));
    }
}
