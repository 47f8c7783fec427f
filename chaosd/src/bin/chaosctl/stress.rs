//! `chaosctl inject stress|disk|process ...`: the clap types of the stress, disk and process
//! faults, their conversion to wire specs, and their one-line descriptions.

use std::time::Duration;

use chaosd::api::{
    ByteRate, ByteSize, DiskFillParams, DiskIoParams, FaultSpec, IoMode, ProcessKillParams,
    ProcessLimitParams, ProcessPauseParams, Signal, StressCpuParams, StressMemParams, Written,
};
use clap::Subcommand;

use crate::args::Common;

#[derive(Subcommand)]
pub enum StressFault {
    /// Busy-loop workers, each burning --load % of one core, inside the targets (or, without
    /// targets, in a cgroup of chaosd's own).
    Cpu {
        /// Share of one core per worker, above 0 and at most 100.
        #[arg(long)]
        load: f64,
        /// Workers per target [default: one per core].
        #[arg(long)]
        workers: Option<u32>,
        #[command(flatten)]
        common: Common,
    },
    /// Allocate memory, touch every page and hold it, inside the targets (or a cgroup of
    /// chaosd's own).
    Mem {
        /// Bytes to hold per target, e.g. 256MiB, 2GiB.
        #[arg(long, required_unless_present = "percent", conflicts_with = "percent")]
        size: Option<Written<ByteSize>>,
        /// Share of the host's total memory to hold per target.
        #[arg(long)]
        percent: Option<f64>,
        /// Allocation speed, e.g. 100MiB/s [default: as fast as possible].
        #[arg(long)]
        rate: Option<Written<ByteRate>>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
pub enum DiskFault {
    /// Allocate space in a directory's filesystem (never below the daemon's free-space floor).
    /// Takes no targets.
    Fill {
        /// An existing directory on the filesystem to fill.
        #[arg(long)]
        path: String,
        /// Bytes to allocate, e.g. 10GiB.
        #[arg(long, required_unless_present = "percent", conflicts_with = "percent")]
        size: Option<Written<ByteSize>>,
        /// Fill until the filesystem is this share used (as df counts).
        #[arg(long)]
        percent: Option<f64>,
        /// Go below the free-space floor (the daemon's config must allow it too).
        #[arg(long)]
        allow_below_floor: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Sustained I/O on a temporary file in a directory, inside the targets (or a cgroup of
    /// chaosd's own).
    Io {
        /// An existing directory for the temporary file.
        #[arg(long)]
        path: String,
        #[arg(long, value_parser = crate::args::choice::<IoMode>(), default_value = "write")]
        mode: IoMode,
        /// Bytes per second, e.g. 50MiB/s [default: unthrottled].
        #[arg(long)]
        rate: Option<Written<ByteRate>>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
pub enum ProcessFault {
    /// Signal the processes of the target cgroups (all of them, or --count/--percent): once,
    /// ending at once as completed, or with --every again and again until --duration ends.
    Kill {
        /// Signal name or number.
        #[arg(long, default_value = "SIGKILL")]
        signal: Written<Signal>,
        /// Signal this many processes, picked at random.
        #[arg(long, conflicts_with = "percent")]
        count: Option<u32>,
        /// Signal this share of the processes, picked at random.
        #[arg(long)]
        percent: Option<f64>,
        /// Signal again at this interval (e.g. 10s) until --duration ends; the fault stays
        /// active meanwhile. Without it the kill is one-shot.
        #[arg(long)]
        every: Option<Written<Duration>>,
        #[command(flatten)]
        common: Common,
    },
    /// Freeze the target cgroups (cgroup v2 freezer) until the fault ends.
    Pause {
        #[command(flatten)]
        common: Common,
    },
    /// Cap the tasks the target cgroups may hold (pids.max): fork() and clone() beyond
    /// --max fail with EAGAIN; what runs keeps running.
    Limit {
        /// Tasks (processes and threads) each target may hold, at least 1.
        #[arg(long)]
        max: u32,
        #[command(flatten)]
        common: Common,
    },
}

pub fn stress_spec(f: StressFault) -> (FaultSpec, Common) {
    match f {
        StressFault::Cpu {
            load,
            workers,
            common,
        } => (
            FaultSpec::StressCpu(StressCpuParams { load, workers }),
            common,
        ),
        StressFault::Mem {
            size,
            percent,
            rate,
            common,
        } => (
            FaultSpec::StressMem(StressMemParams {
                size,
                percent,
                rate,
            }),
            common,
        ),
    }
}

pub fn disk_spec(f: DiskFault) -> (FaultSpec, Common) {
    match f {
        DiskFault::Fill {
            path,
            size,
            percent,
            allow_below_floor,
            common,
        } => (
            FaultSpec::DiskFill(DiskFillParams {
                path,
                size,
                percent,
                allow_below_floor,
            }),
            common,
        ),
        DiskFault::Io {
            path,
            mode,
            rate,
            common,
        } => (FaultSpec::DiskIo(DiskIoParams { path, mode, rate }), common),
    }
}

pub fn process_spec(f: ProcessFault) -> (FaultSpec, Common) {
    match f {
        ProcessFault::Kill {
            signal,
            count,
            percent,
            every,
            common,
        } => (
            FaultSpec::ProcessKill(ProcessKillParams {
                signal,
                count,
                percent,
                every,
            }),
            common,
        ),
        ProcessFault::Pause { common } => (FaultSpec::ProcessPause(ProcessPauseParams {}), common),
        ProcessFault::Limit { max, common } => {
            (FaultSpec::ProcessLimit(ProcessLimitParams { max }), common)
        }
    }
}

/// One line on what a stress, disk or process fault does (empty for other kinds).
pub fn params(spec: &FaultSpec) -> String {
    match spec {
        FaultSpec::StressCpu(p) => match p.workers {
            Some(w) => format!("{} % of a core, {w} workers per target", p.load),
            None => format!("{} % of a core, one worker per core", p.load),
        },
        FaultSpec::StressMem(p) => {
            let amount = match (&p.size, p.percent) {
                (Some(s), _) => s.to_string(),
                (None, Some(pct)) => format!("{pct} % of memory"),
                (None, None) => "?".into(),
            };
            match &p.rate {
                Some(r) => format!("hold {amount} per target, allocated at {r}"),
                None => format!("hold {amount} per target"),
            }
        }
        FaultSpec::DiskFill(p) => match (&p.size, p.percent) {
            (Some(s), _) => format!("allocate {s} in {}", p.path),
            (None, Some(pct)) => format!("fill {} to {pct} % used", p.path),
            (None, None) => format!("fill {}", p.path),
        },
        FaultSpec::DiskIo(p) => format!(
            "{} load in {}{}",
            p.mode.as_str(),
            p.path,
            p.rate
                .as_ref()
                .map(|r| format!(" at {r}"))
                .unwrap_or_default()
        ),
        FaultSpec::ProcessKill(p) => {
            let whom = match (p.count, p.percent) {
                (Some(n), _) => format!("{} to {n} processes", p.signal),
                (None, Some(pct)) => format!("{} to {pct} % of processes", p.signal),
                (None, None) => format!("{} to every process", p.signal),
            };
            match &p.every {
                Some(e) => format!("{whom}, every {e}"),
                None => format!("{whom}, once"),
            }
        }
        FaultSpec::ProcessPause(_) => "frozen (cgroup.freeze)".into(),
        _ => String::new(),
    }
}
