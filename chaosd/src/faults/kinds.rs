//! The one list of fault kinds: [`KINDS`]. Dispatch, the capability table (`doctor`,
//! `/v1/capabilities`), metrics labels, the crash test and the coverage tests all iterate it.
//!
//! **Adding a kind**: its wire parameters and a `FaultSpec` variant in [`crate::api`]; a module
//! owning validation and apply/revert; one [`Kind`] entry below, and one arm in [`of`] (the
//! compiler asks for it). The tests at the bottom, `chaosctl`'s and the crash test's then fail
//! until it has a capability check, a docs row (docs/kinds.md), a chaosctl subcommand and a
//! crash-test case.

use crate::{
    api::FaultSpec,
    error::{FaultError, RequestError},
    faults::capabilities::{self, Facts, Problem},
    faults::kernel::ProgramGroup,
    faults::{ActiveFault, ApplyContext, FaultKinds, TargetRule},
};

/// Applies a kind's parameters; gets the spec [`of`] mapped to this kind.
pub type ApplyFn =
    fn(&FaultKinds, &FaultSpec, &ApplyContext<'_>) -> Result<Box<dyn ActiveFault>, FaultError>;

/// Everything chaosd knows about one fault kind apart from its wire type.
pub struct Kind {
    /// Wire name, e.g. "net.loss".
    pub name: &'static str,
    /// One line for `doctor` and the docs.
    pub summary: &'static str,
    /// Whether it needs, accepts or refuses targets.
    pub targets: TargetRule,
    /// The programs it needs loaded; their first load is its probe.
    pub programs: Option<ProgramGroup>,
    /// What the host must offer besides those programs.
    pub host_check: fn(&Facts) -> Result<(), Problem>,
    /// What its `seen`/`affected` counters count, as the metrics family names it.
    pub counter_unit: Option<&'static str>,
    /// Whether this request acts once and ends at once (`process.kill` without `every`):
    /// nothing stays in force, so it holds no concurrent-fault slot.
    pub one_shot: fn(&FaultSpec) -> bool,
    /// Whether it can stay in force, so the crash test must cover it.
    pub crash_tested: bool,
    /// Checks the parameters without touching anything.
    pub validate: fn(&FaultSpec) -> Result<(), RequestError>,
    pub apply: ApplyFn,
}

/// A spec reached the entry of another kind: a bug in [`of`], reported, never a panic.
fn mismatch(kind: &'static str, spec: &FaultSpec) -> RequestError {
    RequestError::KindMismatch {
        expected: kind,
        got: spec.kind(),
    }
}

/// One entry: `$variant` of `FaultSpec` as `$name`, validated by `$validate(&params)` and applied
/// by `$apply(&kinds, &params, &ctx)`.
macro_rules! kind {
    (
        $variant:ident, $name:literal, $summary:literal, $targets:expr, $programs:expr,
        $check:expr, $unit:expr, crash_tested: $crash:expr,
        $(one_shot: $one_shot:expr,)?
        validate: $validate:expr,
        apply: |$kinds:ident, $p:ident, $ctx:ident| $apply:expr $(,)?
    ) => {
        Kind {
            name: $name,
            summary: $summary,
            targets: $targets,
            programs: $programs,
            host_check: $check,
            counter_unit: $unit,
            one_shot: |_spec| match _spec {
                $(FaultSpec::$variant(p) => $one_shot(p),)?
                _ => false,
            },
            crash_tested: $crash,
            validate: |spec| match spec {
                FaultSpec::$variant(p) => $validate(p),
                other => Err(mismatch($name, other)),
            },
            apply: |$kinds, spec, $ctx| match spec {
                FaultSpec::$variant($p) => $apply,
                other => Err(FaultError::Refused(mismatch($name, other))),
            },
        }
    };
}

use ProgramGroup as Pg;
use TargetRule::{Forbidden, Optional, Required};

const PACKETS: Option<&str> = Some("packets");
const SYSCALLS: Option<&str> = Some("syscalls");
const CONNECTIONS: Option<&str> = Some("connections");
const QUERIES: Option<&str> = Some("queries");
const REQUESTS: Option<&str> = Some("requests");

/// Every fault kind chaosd knows.
pub static KINDS: &[Kind] = &[
    kind!(NetLoss, "net.loss", "drop a share of a cgroup's packets (cgroup_skb)",
        Required, Some(Pg::Packet), capabilities::check_cgroup_bpf, PACKETS, crash_tested: true,
        validate: crate::faults::net::loss::validate,
        apply: |k, p, ctx| crate::faults::net::loss::apply(&k.kernel, p, ctx)),
    kind!(NetPartition, "net.partition", "cut a cgroup off from peers (cgroup_skb)",
        Required, Some(Pg::Packet), capabilities::check_cgroup_bpf, PACKETS, crash_tested: true,
        validate: crate::faults::net::partition::validate,
        apply: |k, p, ctx| crate::faults::net::partition::apply(&k.kernel, p, ctx)),
    kind!(NetDelay, "net.delay",
        "delay (± jitter) what a cgroup sends (departure time + sch_fq)",
        Required, Some(Pg::Packet), capabilities::check_departure_time, PACKETS,
        crash_tested: true,
        validate: crate::faults::net::delay::validate,
        apply: |k, p, ctx| crate::faults::net::delay::apply(&k.kernel, p, ctx)),
    kind!(NetBandwidth, "net.bandwidth",
        "pace what a cgroup sends to a rate (departure time + sch_fq)",
        Required, Some(Pg::Packet), capabilities::check_departure_time, PACKETS,
        crash_tested: true,
        validate: crate::faults::net::bandwidth::validate,
        apply: |k, p, ctx| crate::faults::net::bandwidth::apply(&k.kernel, p, ctx)),
    kind!(NetCorrupt, "net.corrupt", "corrupt what a cgroup sends (TC egress classifier)",
        Required, Some(Pg::Classifier), capabilities::check_cgroup_bpf, PACKETS,
        crash_tested: true,
        validate: crate::faults::net::corrupt::validate,
        apply: |k, p, ctx| crate::faults::net::corrupt::apply(&k.kernel, p, ctx)),
    kind!(NetDuplicate, "net.duplicate",
        "send a cgroup's packets twice (TC egress classifier, clone)",
        Required, Some(Pg::Classifier), capabilities::check_cgroup_bpf, PACKETS,
        crash_tested: true,
        validate: crate::faults::net::duplicate::validate,
        apply: |k, p, ctx| crate::faults::net::duplicate::apply(&k.kernel, p, ctx)),
    kind!(NetConnectError, "net.connect_error",
        "fail connect() with an errno (cgroup sock_addr, bpf_set_retval)",
        Required, Some(Pg::Connect), capabilities::check_cgroup_bpf, SYSCALLS,
        crash_tested: true,
        validate: crate::faults::net::connect_error::validate,
        apply: |k, p, ctx| crate::faults::net::connect_error::apply(&k.kernel, p, ctx)),
    kind!(IoErrno, "io.errno", "fail file operations with an errno (BPF LSM)",
        Required, Some(Pg::Lsm), capabilities::check_bpf_lsm, SYSCALLS, crash_tested: true,
        validate: crate::faults::io::errno::validate,
        apply: |k, p, ctx| crate::faults::io::errno::apply(&k.kernel, p, ctx)),
    kind!(StressCpu, "stress.cpu", "burn CPU inside a cgroup (supervised worker processes)",
        Optional, None, capabilities::check_cgroup_bpf, None, crash_tested: true,
        validate: crate::faults::stress::cpu::validate,
        apply: |_k, p, ctx| crate::faults::stress::cpu::apply(p, ctx)),
    kind!(StressMem, "stress.mem",
        "hold memory resident inside a cgroup (supervised worker processes)",
        Optional, None, capabilities::check_cgroup_bpf, None, crash_tested: true,
        validate: crate::faults::stress::mem::validate,
        apply: |_k, p, ctx| crate::faults::stress::mem::apply(p, ctx)),
    kind!(DiskFill, "disk.fill", "fill a filesystem down to a safety floor (fallocate)",
        Forbidden, None, capabilities::check_nothing, None, crash_tested: true,
        validate: crate::faults::stress::disk::validate_fill,
        apply: |k, p, ctx| crate::faults::stress::disk::apply_fill(&k.stress, p, ctx)),
    kind!(DiskIo, "disk.io", "sustained read/write load on a filesystem",
        Optional, None, capabilities::check_nothing, None, crash_tested: true,
        validate: crate::faults::stress::disk::validate_io,
        apply: |k, p, ctx| crate::faults::stress::disk::apply_io(&k.stress, p, ctx)),
    kind!(ProcessKill, "process.kill", "signal processes of a cgroup",
        Required, None, capabilities::check_cgroup_bpf, None, crash_tested: false,
        one_shot: crate::faults::process::kill::is_one_shot,
        validate: crate::faults::process::kill::validate,
        apply: |_k, p, ctx| crate::faults::process::kill::apply(p, ctx)),
    kind!(ProcessPause, "process.pause", "freeze a cgroup (cgroup.freeze, 5.2+)",
        Required, None, capabilities::check_freezer, None, crash_tested: true,
        validate: |_: &crate::api::ProcessPauseParams| Ok(()),
        apply: |_k, _p, ctx| crate::faults::process::pause::apply(ctx)),
    kind!(ClockSkew, "clock.skew",
        "shift a cgroup's clocks or make them drift (ptrace vDSO detour, tp_btf exec hook; x86_64)",
        Required, Some(Pg::ClockExec), capabilities::check_clock_skew, None, crash_tested: true,
        validate: crate::faults::clock::params::validate,
        apply: |k, p, ctx| crate::faults::clock::apply(&k.kernel, p, ctx)),
    kind!(TcpLatency, "tcp.latency",
        "delay the data of a cgroup's TCP connections (transparent proxy)",
        Required, Some(Pg::Proxy), capabilities::check_cgroup_bpf, CONNECTIONS,
        crash_tested: true,
        validate: crate::faults::tcp::latency::validate,
        apply: |k, p, ctx| crate::faults::tcp::latency::apply(&k.kernel, p, ctx)),
    kind!(TcpDown, "tcp.down", "refuse a cgroup's new TCP connects (redirect to a closed port)",
        Required, Some(Pg::Proxy), capabilities::check_cgroup_bpf, CONNECTIONS,
        crash_tested: true,
        validate: crate::faults::tcp::down::validate,
        apply: |k, p, ctx| crate::faults::tcp::down::apply(&k.kernel, p, ctx)),
    kind!(TcpResetPeer, "tcp.reset_peer",
        "reset a cgroup's TCP connections, optionally after a time (transparent proxy)",
        Required, Some(Pg::Proxy), capabilities::check_cgroup_bpf, CONNECTIONS,
        crash_tested: true,
        validate: crate::faults::tcp::reset_peer::validate,
        apply: |k, p, ctx| crate::faults::tcp::reset_peer::apply(&k.kernel, p, ctx)),
    kind!(TcpLimitData, "tcp.limit_data",
        "close a cgroup's TCP connections after so many bytes (transparent proxy)",
        Required, Some(Pg::Proxy), capabilities::check_cgroup_bpf, CONNECTIONS,
        crash_tested: true,
        validate: crate::faults::tcp::limit_data::validate,
        apply: |k, p, ctx| crate::faults::tcp::limit_data::apply(&k.kernel, p, ctx)),
    kind!(TcpTimeout, "tcp.timeout",
        "stop the data of a cgroup's TCP connections, close after a time (transparent proxy)",
        Required, Some(Pg::Proxy), capabilities::check_cgroup_bpf, CONNECTIONS,
        crash_tested: true,
        validate: crate::faults::tcp::timeout::validate,
        apply: |k, p, ctx| crate::faults::tcp::timeout::apply(&k.kernel, p, ctx)),
    kind!(TcpBandwidth, "tcp.bandwidth",
        "cap the data rate of a cgroup's TCP connections, e.g. what it downloads (transparent proxy)",
        Required, Some(Pg::Proxy), capabilities::check_cgroup_bpf, CONNECTIONS,
        crash_tested: true,
        validate: crate::faults::tcp::bandwidth::validate,
        apply: |k, p, ctx| crate::faults::tcp::bandwidth::apply(&k.kernel, p, ctx)),
    kind!(TcpSlowClose, "tcp.slow_close",
        "pass on the close of a cgroup's TCP connections late (transparent proxy)",
        Required, Some(Pg::Proxy), capabilities::check_cgroup_bpf, CONNECTIONS,
        crash_tested: true,
        validate: crate::faults::tcp::slow_close::validate,
        apply: |k, p, ctx| crate::faults::tcp::slow_close::apply(&k.kernel, p, ctx)),
    kind!(TcpSlicer, "tcp.slicer",
        "write the data of a cgroup's TCP connections in small delayed slices (transparent proxy)",
        Required, Some(Pg::Proxy), capabilities::check_cgroup_bpf, CONNECTIONS,
        crash_tested: true,
        validate: crate::faults::tcp::slicer::validate,
        apply: |k, p, ctx| crate::faults::tcp::slicer::apply(&k.kernel, p, ctx)),
    kind!(HttpAbort, "http.abort",
        "close or reset a cgroup's matching plaintext HTTP/1.1 requests' connections, no response (transparent proxy)",
        Required, Some(Pg::Proxy), capabilities::check_cgroup_bpf, REQUESTS, crash_tested: true,
        validate: crate::faults::http::abort::validate,
        apply: |k, p, ctx| crate::faults::http::abort::apply(&k.kernel, p, ctx)),
    kind!(HttpStatus, "http.status",
        "answer a cgroup's matching plaintext HTTP/1.1 requests with a status, headers and body (transparent proxy)",
        Required, Some(Pg::Proxy), capabilities::check_cgroup_bpf, REQUESTS, crash_tested: true,
        validate: crate::faults::http::status::validate,
        apply: |k, p, ctx| crate::faults::http::status::apply(&k.kernel, p, ctx)),
    kind!(HttpDelay, "http.delay",
        "delay a cgroup's matching plaintext HTTP/1.1 requests (transparent proxy)",
        Required, Some(Pg::Proxy), capabilities::check_cgroup_bpf, REQUESTS, crash_tested: true,
        validate: crate::faults::http::delay::validate,
        apply: |k, p, ctx| crate::faults::http::delay::apply(&k.kernel, p, ctx)),
    kind!(DnsError, "dns.error",
        "answer a cgroup's matching DNS queries with NXDOMAIN, SERVFAIL, ... (redirect to chaosd's resolver)",
        Required, Some(Pg::Dns), capabilities::check_cgroup_bpf, QUERIES, crash_tested: true,
        validate: crate::faults::dns::error::validate,
        apply: |k, p, ctx| crate::faults::dns::error::apply(&k.kernel, p, ctx)),
    kind!(DnsTimeout, "dns.timeout",
        "leave a cgroup's matching DNS queries unanswered (redirect to chaosd's resolver)",
        Required, Some(Pg::Dns), capabilities::check_cgroup_bpf, QUERIES, crash_tested: true,
        validate: crate::faults::dns::timeout::validate,
        apply: |k, p, ctx| crate::faults::dns::timeout::apply(&k.kernel, p, ctx)),
    kind!(DnsAnswer, "dns.answer",
        "answer a cgroup's matching DNS queries with wrong addresses (redirect to chaosd's resolver)",
        Required, Some(Pg::Dns), capabilities::check_cgroup_bpf, QUERIES, crash_tested: true,
        validate: crate::faults::dns::answer::validate,
        apply: |k, p, ctx| crate::faults::dns::answer::apply(&k.kernel, p, ctx)),
    kind!(DnsDelay, "dns.delay",
        "answer a cgroup's matching DNS queries late (redirect to chaosd's resolver)",
        Required, Some(Pg::Dns), capabilities::check_cgroup_bpf, QUERIES, crash_tested: true,
        validate: crate::faults::dns::delay::validate,
        apply: |k, p, ctx| crate::faults::dns::delay::apply(&k.kernel, p, ctx)),
    kind!(CpuLimit, "cpu.limit", "cap a cgroup's CPU time (cpu.max)",
        Required, None, capabilities::check_cpu_controller, None, crash_tested: true,
        validate: crate::faults::resource::cpu_limit::validate,
        apply: |_k, p, ctx| crate::faults::resource::cpu_limit::apply(p, ctx)),
    kind!(MemPressure, "mem.pressure",
        "throttle and reclaim a cgroup above a memory size (memory.high; memory.max on request)",
        Required, None, capabilities::check_memory_controller, None, crash_tested: true,
        validate: crate::faults::resource::mem_pressure::validate,
        apply: |_k, p, ctx| crate::faults::resource::mem_pressure::apply(p, ctx)),
    kind!(ProcessLimit, "process.limit", "cap a cgroup's tasks: fork fails with EAGAIN (pids.max)",
        Required, None, capabilities::check_pids_controller, None, crash_tested: true,
        validate: crate::faults::resource::process_limit::validate,
        apply: |_k, p, ctx| crate::faults::resource::process_limit::apply(p, ctx)),
    kind!(IoThrottle, "io.throttle",
        "cap a cgroup's block I/O to one disk: bytes and operations per second (io.max)",
        Required, None, capabilities::check_io_controller, None, crash_tested: true,
        validate: crate::faults::resource::io_throttle::validate,
        apply: |_k, p, ctx| crate::faults::resource::io_throttle::apply(p, ctx)),
    kind!(FdLimit, "fd.limit",
        "lower processes' soft RLIMIT_NOFILE: the next open fails with EMFILE (prlimit)",
        Required, None, capabilities::check_cgroup_bpf, None, crash_tested: true,
        validate: crate::faults::resource::fd_limit::validate,
        apply: |_k, p, ctx| crate::faults::resource::fd_limit::apply(p, ctx)),
];

/// The entry of `spec`'s kind. `FaultSpec::kind` matches every variant, so a new variant
/// does not compile until it has a name; the coverage test below fails until it has an entry.
pub fn of(spec: &FaultSpec) -> &'static Kind {
    named(spec.kind()).unwrap_or(&UNLISTED)
}

/// The entry named `name` (a wire name such as "net.loss").
pub fn named(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// What [`of`] answers for a variant missing from [`KINDS`] (the coverage test catches that):
/// every request of it is refused, nothing is applied.
static UNLISTED: Kind = Kind {
    name: "unlisted",
    summary: "a kind missing from the descriptor list",
    targets: Required,
    programs: None,
    host_check: |_| {
        Err(Problem::new(
            "this kind is not in chaosd's kind list",
            "report this bug",
        ))
    },
    counter_unit: None,
    one_shot: |_| false,
    crash_tested: false,
    validate: |spec| Err(mismatch("unlisted", spec)),
    apply: |_, spec, _| Err(FaultError::Refused(mismatch("unlisted", spec))),
};

/// Every `FaultSpec` wire name, as serde's derive knows them (its "unknown variant" error
/// lists them all): the variants themselves, not a list kept by hand. For the coverage test.
#[cfg(test)]
fn wire_names() -> Vec<String> {
    let text = match serde_json::from_str::<FaultSpec>(r#"{"kind":"?","params":{}}"#) {
        Ok(_) => return Vec::new(),
        Err(e) => e.to_string(),
    };
    let list = text
        .split("expected one of ")
        .nth(1)
        .unwrap_or_default()
        .split(" at line")
        .next()
        .unwrap_or_default();
    list.split(", ")
        .map(|s| s.trim_matches('`').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_kind_has_exactly_one_entry_and_of_finds_it() {
        let wire = wire_names();
        assert_eq!(wire.len(), KINDS.len(), "wire kinds {wire:?}");
        for name in &wire {
            let entries = KINDS.iter().filter(|k| k.name == name).count();
            assert_eq!(entries, 1, "{name} has {entries} entries in KINDS");
        }
        for k in KINDS {
            assert!(
                wire.iter().any(|w| w == k.name),
                "{} is no wire kind",
                k.name
            );
        }
    }

    #[test]
    fn every_kind_has_a_row_in_the_docs_kinds_table() {
        let doc = include_str!("../../../docs/kinds.md");
        for k in KINDS {
            let row = format!("| `{}` |", k.name);
            assert!(doc.contains(&row), "docs/kinds.md has no row {row}");
        }
    }

    /// The fuzzer starts from one valid request per kind (`cargo xtask fuzz` copies
    /// `fuzz/seeds/<target>/` into its corpus): a kind without one is fuzzed from nothing.
    #[test]
    fn every_kind_has_a_valid_fuzz_seed() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/api_request");
        for k in KINDS {
            let path = dir.join(format!("{}.json", k.name));
            let body = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (add a seed request for {})",
                    path.display(),
                    k.name
                )
            });
            let req: crate::api::InjectRequest =
                serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(req.fault.kind(), k.name, "{}", path.display());
            FaultKinds::validate(&req.fault).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(files, KINDS.len(), "a seed for a kind that is not in KINDS");
    }

    #[test]
    fn the_capability_table_has_every_kind() {
        let table = capabilities::evaluate(&capabilities::Facts::gather());
        for k in KINDS {
            assert!(table.kind(k.name).is_some(), "{} not in the table", k.name);
        }
        assert_eq!(table.kinds.len(), KINDS.len());
    }
}
