//! Wire types of the HTTP/JSON API on the Unix socket, shared by the daemon and `chaosctl`.
//!
//! Routes (all under `/v1`): `GET/POST /faults`, `DELETE /faults` (recover all),
//! `GET/DELETE /faults/{id}`, `GET /status`. Errors are `{"error": "..."}` with a 4xx/5xx status.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod capabilities;
pub mod clock;
pub mod dns;
pub mod errno;
pub mod history;
pub mod http;
pub mod io;
pub mod resource;
pub mod schedule;
pub mod tcp;
pub mod units;

mod choices;

pub use choices::Choice;
pub use clock::{ClockName, ClockSkewParams};
pub use dns::{DnsAnswerParams, DnsDelayParams, DnsErrorParams, DnsSelect, DnsTimeoutParams};
pub use http::{
    HeaderLine, HeaderMatch, HttpAbortParams, HttpDelayParams, HttpMethod, HttpSelect, HttpStatus,
    HttpStatusParams, PathGlob,
};
pub use io::{IoErrnoParams, IoOp};
pub use resource::{
    CpuLimitParams, FdLimitParams, IoThrottleParams, KnobChange, LimitChange, MemPressureParams,
    ProcessLimitParams,
};
pub use tcp::{
    Stream, TcpBandwidthParams, TcpDownParams, TcpLatencyParams, TcpLimitDataParams,
    TcpResetPeerParams, TcpSlicerParams, TcpSlowCloseParams, TcpTimeoutParams,
};
pub use units::{
    AnswerAddr, ByteCount, ByteRate, ByteSize, Cidr, ClockDrift, ClockOffset, DnsRcode, DnsType,
    DomainPattern, Errno, LinkRate, PortRange, Signal, Written,
};

/// Body of `POST /v1/faults`.
///
/// ```json
/// {"fault": {"kind": "net.loss", "params": {"percent": 30, "direction": "egress"}},
///  "targets": [{"cgroup": "/demo"}], "duration": "30s"}
/// ```
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InjectRequest {
    pub fault: FaultSpec,
    pub targets: Vec<TargetSelector>,
    /// How long the fault lives, e.g. "30s", "5m". Required unless the daemon's config sets a
    /// default; never above the configured maximum.
    #[serde(default)]
    pub duration: Option<String>,
}

/// What to inject: the kind and its parameters.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", content = "params", deny_unknown_fields)]
pub enum FaultSpec {
    /// Drop a share of the target cgroups' packets.
    #[serde(rename = "net.loss")]
    NetLoss(NetLossParams),
    /// Fail file operations of the target cgroups with an errno (BPF LSM).
    #[serde(rename = "io.errno")]
    IoErrno(IoErrnoParams),
    /// Drop every packet to and from a peer prefix, both directions.
    #[serde(rename = "net.partition")]
    NetPartition(NetPartitionParams),
    /// Fail `connect()` (and unconnected UDP `sendmsg()`) with an errno.
    #[serde(rename = "net.connect_error")]
    NetConnectError(NetConnectErrorParams),
    /// Hold back what the target cgroups send (departure time + sch_fq).
    #[serde(rename = "net.delay")]
    NetDelay(NetDelayParams),
    /// Pace what the target cgroups send to a rate (departure time + sch_fq). Egress only:
    /// `tcp.bandwidth` with `direction: downstream` caps what they receive.
    #[serde(rename = "net.bandwidth")]
    NetBandwidth(NetBandwidthParams),
    /// Damage what the target cgroups send (TC egress): dropped by the receiver, or with
    /// `payload` arriving with altered bytes.
    #[serde(rename = "net.corrupt")]
    NetCorrupt(NetCorruptParams),
    /// Send what the target cgroups send twice (TC egress clone).
    #[serde(rename = "net.duplicate")]
    NetDuplicate(NetDuplicateParams),
    /// Busy-loop workers, each burning a share of one core.
    #[serde(rename = "stress.cpu")]
    StressCpu(StressCpuParams),
    /// A worker that allocates memory, touches every page and holds it.
    #[serde(rename = "stress.mem")]
    StressMem(StressMemParams),
    /// Allocate space on a filesystem (no targets).
    #[serde(rename = "disk.fill")]
    DiskFill(DiskFillParams),
    /// Sustained reads/writes in a directory.
    #[serde(rename = "disk.io")]
    DiskIo(DiskIoParams),
    /// Signal the target cgroups' processes once (a one-shot fault), or `every` so long.
    #[serde(rename = "process.kill")]
    ProcessKill(ProcessKillParams),
    /// Freeze the target cgroups (cgroup v2 freezer) until the fault ends.
    #[serde(rename = "process.pause")]
    ProcessPause(ProcessPauseParams),
    /// Shift the clocks the target cgroups' processes read (vDSO detour, x86_64).
    #[serde(rename = "clock.skew")]
    ClockSkew(ClockSkewParams),
    /// Hold back the data of the target's proxied TCP connections.
    #[serde(rename = "tcp.latency")]
    TcpLatency(TcpLatencyParams),
    /// Refuse the target's new TCP connects.
    #[serde(rename = "tcp.down")]
    TcpDown(TcpDownParams),
    /// Reset the target's proxied TCP connections.
    #[serde(rename = "tcp.reset_peer")]
    TcpResetPeer(TcpResetPeerParams),
    /// Close the target's proxied TCP connections after so many bytes.
    #[serde(rename = "tcp.limit_data")]
    TcpLimitData(TcpLimitDataParams),
    /// Stop the data of the target's proxied TCP connections.
    #[serde(rename = "tcp.timeout")]
    TcpTimeout(TcpTimeoutParams),
    /// Cap the data rate of the target's proxied TCP connections.
    #[serde(rename = "tcp.bandwidth")]
    TcpBandwidth(TcpBandwidthParams),
    /// Delay the close of the target's proxied TCP connections.
    #[serde(rename = "tcp.slow_close")]
    TcpSlowClose(TcpSlowCloseParams),
    /// Write the data of the target's proxied TCP connections in small delayed slices.
    #[serde(rename = "tcp.slicer")]
    TcpSlicer(TcpSlicerParams),
    /// Close or reset the target's matching plaintext HTTP requests' connections, no response.
    #[serde(rename = "http.abort")]
    HttpAbort(HttpAbortParams),
    /// Answer the target's matching plaintext HTTP requests with a status (the server never
    /// sees them).
    #[serde(rename = "http.status")]
    HttpStatus(HttpStatusParams),
    /// Delay the target's matching plaintext HTTP requests.
    #[serde(rename = "http.delay")]
    HttpDelay(HttpDelayParams),
    /// Answer the target's matching DNS queries with an error code (NXDOMAIN, SERVFAIL, ...).
    #[serde(rename = "dns.error")]
    DnsError(DnsErrorParams),
    /// Leave the target's matching DNS queries unanswered.
    #[serde(rename = "dns.timeout")]
    DnsTimeout(DnsTimeoutParams),
    /// Answer the target's matching DNS queries with wrong addresses.
    #[serde(rename = "dns.answer")]
    DnsAnswer(DnsAnswerParams),
    /// Answer the target's matching DNS queries late.
    #[serde(rename = "dns.delay")]
    DnsDelay(DnsDelayParams),
    /// Cap the target cgroups' CPU time (`cpu.max`).
    #[serde(rename = "cpu.limit")]
    CpuLimit(CpuLimitParams),
    /// Throttle and reclaim the target cgroups above a memory size (`memory.high`).
    #[serde(rename = "mem.pressure")]
    MemPressure(MemPressureParams),
    /// Cap how many tasks the target cgroups may hold (`pids.max`).
    #[serde(rename = "process.limit")]
    ProcessLimit(ProcessLimitParams),
    /// Lower the soft `RLIMIT_NOFILE` of the target processes (`prlimit(2)`).
    #[serde(rename = "fd.limit")]
    FdLimit(FdLimitParams),
    /// Cap the target cgroups' block I/O to one disk (`io.max`).
    #[serde(rename = "io.throttle")]
    IoThrottle(IoThrottleParams),
}

impl FaultSpec {
    /// The kind's name as it appears on the wire and in tables.
    pub fn kind(&self) -> &'static str {
        match self {
            FaultSpec::NetLoss(_) => "net.loss",
            FaultSpec::IoErrno(_) => "io.errno",
            FaultSpec::NetPartition(_) => "net.partition",
            FaultSpec::NetConnectError(_) => "net.connect_error",
            FaultSpec::NetDelay(_) => "net.delay",
            FaultSpec::NetBandwidth(_) => "net.bandwidth",
            FaultSpec::NetCorrupt(_) => "net.corrupt",
            FaultSpec::NetDuplicate(_) => "net.duplicate",
            FaultSpec::StressCpu(_) => "stress.cpu",
            FaultSpec::StressMem(_) => "stress.mem",
            FaultSpec::DiskFill(_) => "disk.fill",
            FaultSpec::DiskIo(_) => "disk.io",
            FaultSpec::ProcessKill(_) => "process.kill",
            FaultSpec::ProcessPause(_) => "process.pause",
            FaultSpec::ClockSkew(_) => "clock.skew",
            FaultSpec::TcpLatency(_) => "tcp.latency",
            FaultSpec::TcpDown(_) => "tcp.down",
            FaultSpec::TcpResetPeer(_) => "tcp.reset_peer",
            FaultSpec::TcpLimitData(_) => "tcp.limit_data",
            FaultSpec::TcpTimeout(_) => "tcp.timeout",
            FaultSpec::TcpBandwidth(_) => "tcp.bandwidth",
            FaultSpec::TcpSlowClose(_) => "tcp.slow_close",
            FaultSpec::TcpSlicer(_) => "tcp.slicer",
            FaultSpec::HttpAbort(_) => "http.abort",
            FaultSpec::HttpStatus(_) => "http.status",
            FaultSpec::HttpDelay(_) => "http.delay",
            FaultSpec::DnsError(_) => "dns.error",
            FaultSpec::DnsTimeout(_) => "dns.timeout",
            FaultSpec::DnsAnswer(_) => "dns.answer",
            FaultSpec::DnsDelay(_) => "dns.delay",
            FaultSpec::CpuLimit(_) => "cpu.limit",
            FaultSpec::MemPressure(_) => "mem.pressure",
            FaultSpec::ProcessLimit(_) => "process.limit",
            FaultSpec::FdLimit(_) => "fd.limit",
            FaultSpec::IoThrottle(_) => "io.throttle",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetLossParams {
    /// Share of matching packets to drop, 0 < percent <= 100.
    pub percent: f64,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default)]
    pub filter: NetFilter,
}

/// `net.corrupt` (egress only: the program sits on the devices' egress).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetCorruptParams {
    /// Share of matching packets to corrupt, 0 < percent <= 100.
    pub percent: f64,
    /// Flip payload bits and fix the checksum so the damage arrives unnoticed; by default the
    /// IP header is damaged so that the receiver drops the packet.
    #[serde(default)]
    pub payload: bool,
    #[serde(default)]
    pub filter: NetFilter,
}

/// `net.duplicate` (egress only).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetDuplicateParams {
    /// Share of matching packets sent twice, 0 < percent <= 100.
    pub percent: f64,
    #[serde(default)]
    pub filter: NetFilter,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetPartitionParams {
    /// `dst` (the peer prefix) is required.
    pub filter: NetFilter,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetConnectErrorParams {
    /// errno name ("ECONNREFUSED") or number ("111").
    pub errno: Written<Errno>,
    /// Share of matching connects that fail; all of them by default.
    #[serde(default = "hundred")]
    pub percent: f64,
    #[serde(default)]
    pub filter: NetFilter,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetDelayParams {
    /// Added to every matching packet the target sends ("100ms").
    pub delay: Written<Duration>,
    /// Spread: each packet gets delay ± up to this, uniformly, without reordering a flow
    /// ("10ms"; at most the delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Written<Duration>>,
    #[serde(default)]
    pub filter: NetFilter,
    /// The network namespace whose devices get sch_fq: see [`NetnsUsed`] for the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetBandwidthParams {
    /// tc-style rate: "1mbit", "500kbit", "10mbps" (bit = bits/s, bps = bytes/s).
    pub rate: Written<LinkRate>,
    /// Bytes that may leave back to back (beyond the packet at hand) after an idle spell
    /// ("32KiB"); a few packets by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<Written<ByteCount>>,
    #[serde(default)]
    pub filter: NetFilter,
    /// The network namespace whose devices get sch_fq: see [`NetnsUsed`] for the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// A network namespace a fault acts in (`net.delay`, `net.bandwidth`: their sch_fq), and how
/// it was chosen. The request's `netns` (a path such as `/run/netns/NAME` or
/// `/proc/PID/ns/net`, or a pid) wins; without it, the namespaces of the target cgroups'
/// processes; with no process there yet, chaosd's own namespace.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetnsUsed {
    /// nsfs inode: what `lsns -t net` and `ls -iL /proc/PID/ns/net` show.
    pub inode: u64,
    pub from: NetnsFrom,
    /// What was opened: the request's path, or `/proc/PID/ns/net` of the process it was
    /// found through.
    pub path: String,
}

/// Where a [`NetnsUsed`] came from.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetnsFrom {
    /// The request's `netns` field (`--netns`).
    Request,
    /// A process of the target cgroups.
    Target,
    /// chaosd's own: the targets had no process and the request named no namespace.
    Chaosd,
}

impl std::fmt::Display for NetnsUsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let from = match self.from {
            NetnsFrom::Request => "as asked",
            NetnsFrom::Target => "the target's",
            NetnsFrom::Chaosd => "chaosd's own: the target has no process and no --netns was given",
        };
        write!(f, "net:[{}] ({}, {from})", self.inode, self.path)
    }
}

fn hundred() -> f64 {
    100.0
}

/// Which traffic a network fault applies to, seen from the target: the *peer* is the remote
/// end (destination of what the target sends, source of what it receives), *local* the
/// target's own address. Every field is optional; empty matches all traffic.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetFilter {
    /// Peer prefix, IPv4 or IPv6 CIDR ("10.0.0.0/8", "::1/128"; a bare address is /32 or /128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<Written<Cidr>>,
    /// Local prefix (the target's own address), same family as `dst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<Written<Cidr>>,
    /// Peer port or inclusive range: "5432", "8000-8080".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Written<PortRange>>,
    #[serde(default)]
    pub proto: Proto,
}

/// Transport protocol a network fault applies to.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Any,
    Tcp,
    Udp,
    /// ICMP and ICMPv6.
    Icmp,
}

/// Which packets of the target's sockets a network fault applies to.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Packets the target sends (what `tc netem` on an interface affects).
    #[default]
    Egress,
    /// Packets delivered to the target.
    Ingress,
    Both,
}

/// `stress.cpu`: targets optional (without one, workers run in a cgroup of chaosd's own).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StressCpuParams {
    /// Share of one core each worker burns, 0 < load <= 100.
    pub load: f64,
    /// Workers per target cgroup; one per online core by default.
    #[serde(default)]
    pub workers: Option<u32>,
}

/// `stress.mem`: exactly one of `size` and `percent`; targets optional.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StressMemParams {
    /// Bytes to hold per target, e.g. "256MiB", "2GiB".
    #[serde(default)]
    pub size: Option<Written<ByteSize>>,
    /// Share of the host's total memory to hold per target, 0 < percent <= 100.
    #[serde(default)]
    pub percent: Option<f64>,
    /// How fast to allocate, e.g. "100MiB/s"; as fast as possible by default.
    #[serde(default)]
    pub rate: Option<Written<ByteRate>>,
}

/// `disk.fill`: exactly one of `size` and `percent`; takes no targets.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskFillParams {
    /// An existing directory on the filesystem to fill.
    pub path: String,
    /// Bytes to allocate, e.g. "10GiB".
    #[serde(default)]
    pub size: Option<Written<ByteSize>>,
    /// Fill until the filesystem is this share used (as `df` counts), 0 < percent <= 100.
    #[serde(default)]
    pub percent: Option<f64>,
    /// Cross the daemon's free-space floor; honoured only if its config allows it too.
    #[serde(default)]
    pub allow_below_floor: bool,
}

/// `disk.io`: targets optional (the worker runs inside them).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskIoParams {
    /// An existing directory; the worker's temporary file lives there.
    pub path: String,
    #[serde(default)]
    pub mode: IoMode,
    /// Bytes per second, e.g. "50MiB/s"; unthrottled by default.
    #[serde(default)]
    pub rate: Option<Written<ByteRate>>,
}

/// What a `disk.io` worker does.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    Read,
    #[default]
    Write,
    /// Alternate reads and writes.
    Mixed,
}

impl IoMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IoMode::Read => "read",
            IoMode::Write => "write",
            IoMode::Mixed => "mixed",
        }
    }
}

/// `process.kill`: at most one of `count` and `percent`; all processes by default.
///
/// Without `every` the kill is one-shot: the processes are signalled when it is applied, the
/// fault ends at once (state `completed`) and holds no concurrent-fault slot. With `every` the
/// kill repeats at that interval until the duration ends, and the fault is active (and holds a
/// slot) meanwhile.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProcessKillParams {
    /// Signal name or number: "SIGKILL" (default), "TERM", "15".
    #[serde(default = "sigkill")]
    pub signal: Written<Signal>,
    #[serde(default)]
    pub count: Option<u32>,
    #[serde(default)]
    pub percent: Option<f64>,
    /// Repeat the kill this often ("10s") until the fault's duration ends; at least 100ms and
    /// shorter than the duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Written<Duration>>,
}

fn sigkill() -> Written<Signal> {
    Written::known("SIGKILL", Signal(nix::sys::signal::Signal::SIGKILL))
}

/// `process.pause` has no parameters: `"params": {}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProcessPauseParams {}

/// How a request names the cgroups a fault applies to. Each covers its descendant cgroups.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TargetSelector {
    /// A cgroup2 path: absolute under the cgroup2 mount, or relative to it ("/x" or "x").
    Cgroup(String),
    /// The cgroup2 cgroup of this process.
    Pid(u32),
    /// The cgroup systemd made for this unit, e.g. "nginx.service".
    Unit(String),
    /// The cgroup of a container (containerd, CRI-O, Docker; systemd or cgroupfs driver): its
    /// id in full or a unique prefix of at least 12 hex digits.
    Container(String),
    /// The cgroup of a Kubernetes pod (all its containers), by `metadata.uid`.
    Pod(String),
    /// Every cgroup but the protected ones (`policy.protected_cgroups`, `policy.host_exclude`,
    /// init's, chaosd's own and its guardian's), expanded into cgroups when the fault is
    /// injected. Alone; for the network, TCP, DNS, clock and stress kinds.
    Host,
}

impl std::fmt::Display for TargetSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSelector::Cgroup(p) => write!(f, "cgroup {p}"),
            TargetSelector::Pid(p) => write!(f, "pid {p}"),
            TargetSelector::Unit(u) => write!(f, "unit {u}"),
            TargetSelector::Container(c) => write!(f, "container {c}"),
            TargetSelector::Pod(p) => write!(f, "pod {p}"),
            TargetSelector::Host => f.write_str("the host"),
        }
    }
}

/// What an inject would do, from `POST /v1/faults/dry-run`: nothing was changed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DryRunInfo {
    pub kind: String,
    /// The cgroups the fault would act on, each with the processes in it and below it now.
    pub targets: Vec<DryRunTarget>,
    /// For a host-wide target: the cgroups left out (protected, excluded, chaosd's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
    /// For a host-wide target: cgroups whose own processes no target covers (a cgroup holding
    /// processes beside a protected child, such as the root); their children are covered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uncovered: Vec<DryRunTarget>,
}

/// One cgroup of a dry run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DryRunTarget {
    pub cgroup: String,
    pub processes: Vec<ProcessEntry>,
}

/// A process as `ps` would name it, with the cgroup it is in.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessEntry {
    pub pid: u32,
    pub comm: String,
    pub cgroup: String,
}

/// A target as the daemon resolved it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResolvedTarget {
    pub selector: TargetSelector,
    /// Path relative to the cgroup2 mount, starting with "/".
    pub cgroup: String,
    /// cgroup v2 id (inode of the cgroup directory), as the kernel programs see it.
    pub cgroup_id: u64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FaultState {
    Active,
    /// Reverted on request.
    Recovered,
    /// Reverted at its deadline.
    Expired,
    /// Reverted because the daemon shut down.
    Stopped,
    /// A one-shot fault (`process.kill` without `every`): it acted when applied and ended then.
    Completed,
}

impl std::fmt::Display for FaultState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            FaultState::Active => "active",
            FaultState::Recovered => "recovered",
            FaultState::Expired => "expired",
            FaultState::Stopped => "stopped",
            FaultState::Completed => "completed",
        };
        f.write_str(s)
    }
}

/// Counters a fault kept: events that matched it and events it acted on.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    pub seen: u64,
    pub affected: u64,
}

/// Per-operation counters of a fault that distinguishes operations (io.errno).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OpCounters {
    pub op: String,
    /// Operations that matched the fault's targets and filters.
    pub checked: u64,
    /// Of those, the operations the fault failed.
    pub failed: u64,
}

/// A fault as the daemon reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FaultInfo {
    pub id: String,
    pub kind: String,
    pub fault: FaultSpec,
    pub targets: Vec<ResolvedTarget>,
    pub state: FaultState,
    /// The duration as the request wrote it ("100d", "1m30s"), or the configured default as
    /// humantime prints it when the request named none; `duration_ms` is the same for machines.
    #[serde(default)]
    pub duration: String,
    pub duration_ms: u64,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub expires_at: String,
    #[serde(default)]
    pub ended_at: Option<String>,
    pub counters: Counters,
    /// Per-operation breakdown of `counters`, for kinds that have one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub op_counters: Vec<OpCounters>,
    /// The network namespaces the fault acts in, for kinds that act on devices (`net.delay`,
    /// `net.bandwidth`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub netns: Vec<NetnsUsed>,
    /// The cgroup knobs the fault wrote, with what they held before (resource kinds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub knobs: Vec<KnobChange>,
    /// The process limits the fault lowered, with what they held before (`fd.limit`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<LimitChange>,
    /// For a fault that something other than its daemon ended (the guardian, a later start,
    /// `chaosd --cleanup`): who, what it found on the host and what it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// Body of `GET /v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusInfo {
    pub version: String,
    pub pid: u32,
    pub uptime_s: u64,
    pub kernel: String,
    pub cgroup2_mount: String,
    pub active_faults: usize,
    pub max_duration_s: u64,
    #[serde(default)]
    pub default_duration_s: Option<u64>,
    /// Whether the network programs are attached now (only while a network fault is active).
    pub net_programs_attached: bool,
}

/// Body of every error response.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_request_round_trips_with_kind_tag() {
        let json = r#"{"fault":{"kind":"net.loss","params":{"percent":30}},
                       "targets":[{"cgroup":"/a"},{"pid":1},{"unit":"x.service"}],"duration":"30s"}"#;
        let req: InjectRequest = serde_json::from_str(json).unwrap();
        assert_eq!(
            req.fault,
            FaultSpec::NetLoss(NetLossParams {
                percent: 30.0,
                direction: Direction::Egress,
                filter: NetFilter::default(),
            })
        );
        assert_eq!(req.targets[1], TargetSelector::Pid(1));
        let back: InjectRequest =
            serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn unknown_kind_and_fields_are_rejected() {
        let bad_kind = r#"{"fault":{"kind":"net.nope","params":{}},"targets":[],"duration":"1s"}"#;
        assert!(serde_json::from_str::<InjectRequest>(bad_kind).is_err());
        let extra = r#"{"fault":{"kind":"net.loss","params":{"percent":1,"x":2}},"targets":[]}"#;
        assert!(serde_json::from_str::<InjectRequest>(extra).is_err());
    }
}
