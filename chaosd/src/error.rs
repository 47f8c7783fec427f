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
    #[error(
        "refusing cgroup {path}: it holds PID 1 (init); a fault there could take the host down. Target a cgroup that does not contain PID 1"
    )]
    ContainsInit { path: String },
    #[error("the host is not one cgroup: name a cgroup, pid or unit here")]
    HostIsNotOneCgroup,
    #[error(
        "container id {id:?} is not valid: give the id (or a unique prefix of at least 12 hex digits) as `crictl ps` or `docker ps` shows it"
    )]
    BadContainerId { id: String },
    #[error(
        "no cgroup of container {id} under {mount}: looked for cri-containerd-ID.scope, crio-ID.scope, docker-ID.scope and ID (cgroupfs); is it running on this node?"
    )]
    ContainerNotFound { id: String, mount: PathBuf },
    #[error("container id {id} is ambiguous: it starts {matches}; give more of it")]
    ContainerAmbiguous { id: String, matches: String },
    #[error(
        "pod uid {uid:?} is not valid: give metadata.uid, e.g. 7c0e2a52-1d43-4a8b-9f1e-0a6b2f3c4d5e"
    )]
    BadPodUid { uid: String },
    #[error(
        "no cgroup of pod {uid} under {mount}: looked for pod<uid> (cgroupfs) and kubepods-…-pod<uid>.slice (systemd); is it running on this node?"
    )]
    PodNotFound { uid: String, mount: PathBuf },
    #[error("pod {uid} matches several cgroups ({matches}); use --cgroup with the full path")]
    PodAmbiguous { uid: String, matches: String },
    #[error(
        "refusing cgroup {path}: it is, holds or lies inside the protected cgroup {protected} (policy.protected_cgroups in the daemon's config); target another cgroup or change that list"
    )]
    Protected { path: String, protected: String },
    #[error(
        "refusing cgroup {path}: it is a whole slice and the daemon's config sets policy.refuse_slices = true; target a service or scope inside it"
    )]
    Slice { path: String },
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
        "duration {asked} is above the maximum of {max} set in the daemon's config (faults.max_duration)"
    )]
    DurationTooLong { asked: String, max: String },
    #[error("at least one target is required (--cgroup, --pid, --unit or --host)")]
    NoTargets,
    #[error("--host covers every cgroup already: give it alone, without --cgroup, --pid or --unit")]
    HostWithOthers,
    #[error(
        "{kind} cannot target the whole host (--host is for the net, tcp, dns, clock and stress kinds); name the cgroups instead"
    )]
    HostNotAllowed { kind: &'static str },
    #[error(
        "--host found no cgroup to target: every cgroup is protected or excluded (policy.protected_cgroups, policy.host_exclude)"
    )]
    NoHostTargets,
    #[error("percent must be above 0 and at most 100, got {value}")]
    PercentOutOfRange { value: f64 },
    #[error("--{field} {input:?} is not valid: {reason}")]
    BadFilter {
        field: &'static str,
        input: String,
        reason: String,
    },
    #[error("--{field} is required for {kind}")]
    MissingField {
        field: &'static str,
        kind: &'static str,
    },
    #[error("errno {input:?} is not known: give a name like ECONNREFUSED or a number 1-4095")]
    BadErrno { input: String },
    #[error("{kind} faults are not supported on this host: {reason}. Fix: {fix}")]
    Unsupported {
        kind: String,
        reason: String,
        fix: String,
    },
    #[error("path {path:?} cannot scope an I/O fault: {reason}")]
    BadIoPath { path: String, reason: String },
    #[error("load must be above 0 and at most 100 (percent of one core per worker), got {value}")]
    LoadOutOfRange { value: f64 },
    #[error("workers must be between 1 and {max}, got {value}")]
    BadWorkers { value: u32, max: u32 },
    #[error("{kind} needs exactly one of {a} and {b} (--{a} or --{b})")]
    ExactlyOneOf {
        kind: &'static str,
        a: &'static str,
        b: &'static str,
    },
    #[error("{kind} takes at most one of {a} and {b} (--{a} or --{b})")]
    AtMostOneOf {
        kind: &'static str,
        a: &'static str,
        b: &'static str,
    },
    #[error(
        "stress.mem of {asked} is more than the host's total memory ({total}); ask for less with --size or --percent"
    )]
    MemAboveTotal { asked: String, total: String },
    #[error("path {path} does not exist; name an existing directory")]
    PathNotFound { path: String },
    #[error("path {path} is not a directory; name an existing directory")]
    NotADirectory { path: String },
    #[error(
        "{asked} in {path} would leave less than the safety floor of {floor} free (now {free} free); ask for less{}",
        if *request_allows { ", or set stress.allow_below_floor = true in the daemon's config" } else { ", or pass allow_below_floor (--allow-below-floor) where the daemon's config allows it (stress.allow_below_floor)" }
    )]
    BelowFloor {
        path: String,
        asked: String,
        free: String,
        floor: String,
        request_allows: bool,
    },
    #[error(
        "{path} is already {used_percent:.1} % used, at or above the asked {asked} %; nothing to fill"
    )]
    AlreadyFull {
        path: String,
        used_percent: f64,
        asked: f64,
    },
    #[error("count must be at least 1, got {value}")]
    BadCount { value: u32 },
    #[error("{kind} takes no targets (--cgroup, --pid, --unit): it works on --path")]
    TargetsNotAccepted { kind: &'static str },
    #[error(
        "cgroup {cgroup} is already frozen (by another fault or by someone else); thaw it first or recover that fault"
    )]
    AlreadyFrozen { cgroup: String },
    #[error(
        "cgroup {cgroup} is frozen ({frozen} has cgroup.freeze set, by process.pause or someone else): a worker started there would never run; recover that pause or thaw it first"
    )]
    FrozenTarget { cgroup: String, frozen: String },
    #[error(
        "cgroup {cgroup} has no {file}: the {controller} controller is not enabled for it. Fix: enable it for the parent's children (`echo +{controller} > {subtree_control}`), or target a cgroup that has it"
    )]
    ControllerNotEnabled {
        cgroup: String,
        file: String,
        controller: &'static str,
        subtree_control: String,
    },
    #[error(
        "{file} of cgroup {cgroup} is already set by another fault; recover that fault first (two faults on one knob could not each put back what was there)"
    )]
    KnobHeld { cgroup: String, file: String },
    #[error(
        "{kind} needs at least one limit: rbps, wbps, riops or wiops (e.g. --rbps 10MiB/s, --wiops 100); a limit left out stays unlimited"
    )]
    NoLimits { kind: &'static str },
    #[error("{input} names no disk that io.max can limit: {reason}")]
    BadDisk { input: String, reason: String },
    #[error(
        "the RLIMIT_NOFILE of process {pid} is already lowered by another fd.limit fault; recover that fault first"
    )]
    LimitHeld { pid: u32 },
    #[error(
        "no process in {targets} has a soft RLIMIT_NOFILE above {nofile}: nothing to lower (ask for a smaller nofile, or target a cgroup with processes)"
    )]
    NothingToLower { targets: String, nofile: u64 },
    #[error(
        "cgroup {cgroup} overlaps cgroup {other}, which another clock.skew fault already skews; recover that fault first or pick a cgroup outside it"
    )]
    ClockSkewOverlap { cgroup: String, other: String },
    #[error("{field} {input:?} is not valid: {reason}")]
    BadParam {
        field: &'static str,
        input: String,
        reason: String,
    },
    #[error(
        "device {device} in the target's network namespace has a configured root qdisc {qdisc}; chaosd replaces only default qdiscs (it could not restore yours exactly). Remove it or make it sch_fq, then retry"
    )]
    QdiscInTheWay { device: String, qdisc: String },
    #[error("{reason}")]
    NoNetns { reason: String },
    #[error(
        "process {pid} of the target is in a network namespace whose loopback (lo) is down: a connect redirected there could not reach chaosd's listener. Fix: bring lo up in that namespace, or target another cgroup"
    )]
    LoopbackDown { pid: u32 },
    /// A spec reached another kind's entry (a bug in the kind list), refused, never a panic.
    #[error("internal: a {got} request reached the {expected} kind; nothing was applied")]
    KindMismatch {
        expected: &'static str,
        got: &'static str,
    },
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
    /// The request cannot be applied as asked, found only while applying (e.g. free space).
    #[error(transparent)]
    Refused(RequestError),
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
    #[error("fault {id} is being reverted already")]
    Ending { id: String },
    /// An end already under way when this one came (its deadline, another request) failed.
    #[error("reverting fault {id} failed: {reason}")]
    RevertFailed { id: String, reason: String },
    #[error(
        "applying the {kind} fault took longer than {limit_s} s (faults.apply_timeout in the daemon's config); it was rolled back and nothing of it stays"
    )]
    ApplyTimeout { kind: String, limit_s: u64 },
    /// The blocking task that applied or reverted a fault panicked or was cancelled.
    #[error("{op} did not finish: {reason}")]
    Worker { op: &'static str, reason: String },
}

impl From<TargetError> for Error {
    fn from(e: TargetError) -> Self {
        Error::Request(RequestError::Target(e))
    }
}
