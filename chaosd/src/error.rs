//! Typed errors of the library. Each says what is wrong and, where it can, how to fix it; the
//! server maps them to HTTP statuses in one place (`server::ApiError`).

use std::{io, path::PathBuf};

use thiserror::Error;

/// A target that cannot be resolved to a cgroup the daemon may touch.
#[derive(Debug, Error)]
pub enum TargetError {
    #[error(
        "no cgroup2 filesystem is mounted (looked in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup`"
    )]
    NoCgroup2,
    #[error("cgroup {path} does not exist (under the cgroup2 mount {mount})")]
    CgroupNotFound { path: String, mount: PathBuf },
    #[error("{path} is not a directory of the cgroup2 filesystem mounted at {mount}")]
    NotCgroup2 { path: String, mount: PathBuf },
    #[error(
        "refusing the cgroup2 root: a fault there would hit every process on the host; name a child cgroup"
    )]
    Root,
    #[error(
        "refusing cgroup {path}: it contains chaosd itself (pid {pid}); target a cgroup below it that does not hold the daemon"
    )]
    ContainsDaemon { path: String, pid: u32 },
    #[error("cgroup {path} is nested {level} levels deep; at most {max} are supported")]
    TooDeep {
        path: String,
        level: usize,
        max: u32,
    },
    #[error("no process with pid {pid}")]
    NoSuchPid { pid: u32 },
    #[error("process {pid} has no cgroup2 membership in /proc/{pid}/cgroup")]
    PidWithoutCgroup2 { pid: u32 },
    #[error(
        "unit {unit}: no cgroup of that name under {mount}; is the unit running? (`systemctl status {unit}`)"
    )]
    UnitNotFound { unit: String, mount: PathBuf },
    #[error("unit {unit} matches several cgroups ({matches}); use --cgroup with the full path")]
    UnitAmbiguous { unit: String, matches: String },
    #[error("unit name {unit:?} is not valid: expected NAME.service, NAME.scope or NAME.slice")]
    BadUnitName { unit: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A request that cannot be applied as asked. Nothing was changed.
#[derive(Debug, Error)]
pub enum RequestError {
    #[error(
        "a duration is required (e.g. \"duration\": \"30s\", or --duration 30s); every fault must end"
    )]
    MissingDuration,
    #[error("duration {input:?} is not valid: {reason} (examples: 500ms, 30s, 5m, 1h)")]
    BadDuration { input: String, reason: String },
    #[error(
        "duration {asked_s:.3}s is above the maximum of {max_s}s set in the daemon's config (faults.max_duration)"
    )]
    DurationTooLong { asked_s: f64, max_s: u64 },
    #[error("at least one target is required (--cgroup, --pid or --unit)")]
    NoTargets,
    #[error("percent must be above 0 and at most 100, got {value}")]
    PercentOutOfRange { value: f64 },
    #[error("target {selector} is given twice (as cgroup {cgroup})")]
    DuplicateTarget { selector: String, cgroup: String },
    #[error(transparent)]
    Target(#[from] TargetError),
}

/// Applying or reverting a fault failed in the kernel or on disk.
#[derive(Debug, Error)]
pub enum FaultError {
    #[error("{op}: {source:#}")]
    Kernel {
        op: &'static str,
        #[source]
        source: anyhow::Error,
    },
    #[error("no room for another fault: {what}; recover some faults first")]
    Capacity { what: String },
    #[error("writing the fault journal {path}: {source}")]
    Journal {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FaultError {
    pub fn kernel(op: &'static str, source: impl Into<anyhow::Error>) -> Self {
        FaultError::Kernel {
            op,
            source: source.into(),
        }
    }
}

/// Everything the registry can answer with.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Fault(#[from] FaultError),
    #[error("no fault with id {id}")]
    NotFound { id: String },
}

impl From<TargetError> for Error {
    fn from(e: TargetError) -> Self {
        Error::Request(RequestError::Target(e))
    }
}
