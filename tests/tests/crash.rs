//! Crash safety with every fault kind active at once: inject each kind, `kill -9` chaosd, and
//! check from outside that the kernel-side faults stop within a second and that, still before
//! any restart, the guardian has made the host exactly as before (qdiscs, TC filters and
//! programs, bpffs, stress processes and cgroups, files, freeze state, vDSO bytes, cgroup
//! knobs) within a second too; restart, and check the host is still so and the fault list empty.
//!
//! Kinds this kernel cannot run (net.delay and net.bandwidth without sch_fq, io.errno without
//! BPF LSM) must be refused with a reason; under the VM harness (`CHAOSD_VM` set, Debian
//! kernels that have both) every kind must be accepted.

use std::{
    fs,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use chaosd::{
    api::{
        ClockName, ClockSkewParams, CpuLimitParams, DiskFillParams, DiskIoParams, DnsAnswerParams,
        DnsDelayParams, DnsErrorParams, DnsTimeoutParams, FaultSpec, FdLimitParams,
        HttpAbortParams, HttpDelayParams, HttpStatusParams, IoErrnoParams, IoMode, IoOp,
        IoThrottleParams, MemPressureParams, NetBandwidthParams, NetConnectErrorParams,
        NetCorruptParams, NetDelayParams, NetDuplicateParams, NetFilter, NetLossParams,
        NetPartitionParams, ProcessLimitParams, ProcessPauseParams, Stream, StressCpuParams,
        StressMemParams, TcpBandwidthParams, TcpDownParams, TcpLatencyParams, TcpLimitDataParams,
        TcpResetPeerParams, TcpSlicerParams, TcpSlowCloseParams, TcpTimeoutParams,
    },
    host::cgroup::cgroup2_mount,
    host::cgroup::spawn_in_cgroup,
};
use chaosd_common::heartbeat::HEARTBEAT_STALE_NS;
use chaosd_integration::{
    Daemon, TestCgroup, Tmpfs, block_on, children_of, file_ops_in, max_open_files,
    netns::{KillOnDrop, NetnsPair, spawn_in, tally},
    request, scratch_disk, tcp_connect_from, udp_from_cgroups, vdso_bytes, wait_for,
};

const COUNT: u32 = 50;

/// The targets: one cgroup per effect that is checked from outside, so faults do not mask
/// each other (100 % loss would hide a duplicate, a frozen cgroup runs no probe).
struct Scene {
    pair: NetnsPair,
    /// In namespace a: duplicate (checked), corrupt, delay and bandwidth (residue only).
    duplicated: TestCgroup,
    corrupted: TestCgroup,
    paced: TestCgroup,
    /// In the host namespace: loss, connect errors plus a partition, I/O errors, stress, a
    /// pause and a clock skew.
    lossy: TestCgroup,
    refused: TestCgroup,
    /// Every proxy kind (`tcp.*`); `tcp.down` refuses its connects, which is checked.
    proxied: TestCgroup,
    /// Every HTTP kind (`http.*`): a cgroup of their own, as a cgroup holds at most 8 network
    /// rules and the `tcp.*` kinds take all of them.
    http_proxied: TestCgroup,
    /// Every DNS kind (`dns.*`); what a crash leaves of them is checked in tests/tests/dns.rs.
    resolved: TestCgroup,
    io: TestCgroup,
    stressed: TestCgroup,
    paused: TestCgroup,
    skewed: TestCgroup,
    /// cpu.limit, mem.pressure, process.limit and io.throttle (where the controllers are in
    /// cgroup2).
    limited: TestCgroup,
    /// fd.limit, on the sleeper in it.
    fd_limited: TestCgroup,
    fd_holder: u32,
    listener: TcpListener,
    io_file: tempfile::NamedTempFile,
    fill: Tmpfs,
    disk_io: Tmpfs,
    /// Sleepers that place the targets (namespace, vDSO to patch, something to freeze).
    _holders: Vec<KillOnDrop>,
    skewed_holder: u32,
}

impl Scene {
    fn new() -> Scene {
        let pair = NetnsPair::new();
        let (duplicated, corrupted, paced) = (
            TestCgroup::new("crash-dup"),
            TestCgroup::new("crash-corrupt"),
            TestCgroup::new("crash-paced"),
        );
        let mut holders: Vec<KillOnDrop> = [&duplicated, &corrupted, &paced]
            .into_iter()
            .map(|cg| KillOnDrop(spawn_in(&mut sleeper(), &pair.a.netns, Some(cg))))
            .collect();
        let (paused, skewed) = (
            TestCgroup::new("crash-pause"),
            TestCgroup::new("crash-skew"),
        );
        for cg in [&paused, &skewed] {
            holders.push(KillOnDrop(
                spawn_in_cgroup(&mut sleeper(), cg.dir()).unwrap(),
            ));
        }
        let skewed_holder = holders.last().unwrap().0.id();
        let fd_limited = TestCgroup::new("crash-fd");
        holders.push(KillOnDrop(
            spawn_in_cgroup(&mut sleeper(), fd_limited.dir()).unwrap(),
        ));
        let fd_holder = holders.last().unwrap().0.id();
        let mut io_file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut io_file, b"chaosd").unwrap();
        Scene {
            pair,
            duplicated,
            corrupted,
            paced,
            lossy: TestCgroup::new("crash-loss"),
            refused: TestCgroup::new("crash-connect"),
            proxied: TestCgroup::new("crash-proxy"),
            http_proxied: TestCgroup::new("crash-http"),
            resolved: TestCgroup::new("crash-dns"),
            io: TestCgroup::new("crash-io"),
            stressed: TestCgroup::new("crash-stress"),
            paused,
            skewed,
            limited: TestCgroup::new("crash-limits"),
            fd_limited,
            fd_holder,
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
            io_file,
            fill: Tmpfs::new("32m"),
            disk_io: Tmpfs::new("32m"),
            _holders: holders,
            skewed_holder,
        }
    }

    fn listener_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// Every kind, on its target, for ten minutes (the crash must end them, not deadlines);
    /// connect errors fail with `connect_errno` ([`chaosd_integration::connect_errno`]).
    fn faults(&self, connect_errno: &str) -> Vec<(FaultSpec, Vec<&TestCgroup>)> {
        let any = NetFilter::default;
        let port = NetFilter {
            port: Some(self.listener_addr().port().to_string().parse().unwrap()),
            ..NetFilter::default()
        };
        let peer = NetFilter {
            dst: Some("127.0.0.9/32".parse().unwrap()),
            ..NetFilter::default()
        };
        let fill = self.fill.path().display().to_string();
        let disk_io = self.disk_io.path().display().to_string();
        vec![
            (
                FaultSpec::NetDuplicate(NetDuplicateParams {
                    percent: 100.0,
                    filter: any(),
                }),
                vec![&self.duplicated],
            ),
            (
                FaultSpec::NetCorrupt(NetCorruptParams {
                    percent: 100.0,
                    payload: false,
                    filter: any(),
                }),
                vec![&self.corrupted],
            ),
            (
                FaultSpec::NetDelay(NetDelayParams {
                    delay: "50ms".parse().unwrap(),
                    jitter: None,
                    filter: any(),
                    netns: None,
                }),
                vec![&self.paced],
            ),
            (
                FaultSpec::NetBandwidth(NetBandwidthParams {
                    rate: "1mbit".parse().unwrap(),
                    burst: None,
                    filter: any(),
                    netns: None,
                }),
                vec![&self.paced],
            ),
            (
                FaultSpec::NetLoss(NetLossParams {
                    percent: 100.0,
                    direction: Default::default(),
                    filter: any(),
                }),
                vec![&self.lossy],
            ),
            (
                FaultSpec::NetConnectError(NetConnectErrorParams {
                    errno: connect_errno.parse().unwrap(),
                    percent: 100.0,
                    filter: port.clone(),
                }),
                vec![&self.refused],
            ),
            (
                FaultSpec::NetPartition(NetPartitionParams { filter: peer }),
                vec![&self.refused],
            ),
            (
                FaultSpec::TcpLatency(TcpLatencyParams {
                    latency: "50ms".parse().unwrap(),
                    jitter: None,
                    direction: Stream::Both,
                    percent: 100.0,
                    filter: port.clone(),
                }),
                vec![&self.proxied],
            ),
            (
                FaultSpec::TcpResetPeer(TcpResetPeerParams {
                    after: Some("1m".parse().unwrap()),
                    percent: 100.0,
                    filter: port.clone(),
                }),
                vec![&self.proxied],
            ),
            (
                FaultSpec::TcpLimitData(TcpLimitDataParams {
                    bytes: "1MiB".parse().unwrap(),
                    direction: Stream::Both,
                    percent: 100.0,
                    filter: port.clone(),
                }),
                vec![&self.proxied],
            ),
            (
                FaultSpec::TcpTimeout(TcpTimeoutParams {
                    after: None,
                    direction: Stream::Upstream,
                    percent: 100.0,
                    filter: port.clone(),
                }),
                vec![&self.proxied],
            ),
            (
                FaultSpec::TcpBandwidth(TcpBandwidthParams {
                    rate: "1mbit".parse().unwrap(),
                    direction: Stream::Downstream,
                    percent: 100.0,
                    filter: port.clone(),
                }),
                vec![&self.proxied],
            ),
            (
                FaultSpec::TcpSlowClose(TcpSlowCloseParams {
                    delay: "1s".parse().unwrap(),
                    direction: Stream::Both,
                    percent: 100.0,
                    filter: port.clone(),
                }),
                vec![&self.proxied],
            ),
            (
                FaultSpec::TcpSlicer(TcpSlicerParams {
                    size: "64".parse().unwrap(),
                    variation: None,
                    delay: None,
                    direction: Stream::Downstream,
                    percent: 100.0,
                    filter: port.clone(),
                }),
                vec![&self.proxied],
            ),
            (
                FaultSpec::TcpDown(TcpDownParams {
                    percent: 100.0,
                    filter: port.clone(),
                }),
                vec![&self.proxied],
            ),
            (
                FaultSpec::HttpAbort(HttpAbortParams {
                    reset: true,
                    methods: vec!["DELETE".parse().unwrap()],
                    path: None,
                    request_headers: vec![],
                    percent: 100.0,
                    filter: port.clone(),
                }),
                vec![&self.http_proxied],
            ),
            (
                FaultSpec::HttpStatus(HttpStatusParams {
                    status: "503".parse().unwrap(),
                    headers: vec![],
                    body: None,
                    methods: vec![],
                    path: Some("/api/*".parse().unwrap()),
                    request_headers: vec![],
                    percent: 100.0,
                    filter: port.clone(),
                }),
                vec![&self.http_proxied],
            ),
            (
                FaultSpec::HttpDelay(HttpDelayParams {
                    delay: "1s".parse().unwrap(),
                    jitter: None,
                    methods: vec![],
                    path: None,
                    request_headers: vec![],
                    percent: 50.0,
                    filter: port,
                }),
                vec![&self.http_proxied],
            ),
            (
                FaultSpec::DnsError(DnsErrorParams {
                    rcode: "NXDOMAIN".parse().unwrap(),
                    domains: vec!["*.svc.test".parse().unwrap()],
                    types: vec![],
                    percent: 100.0,
                }),
                vec![&self.resolved],
            ),
            (
                FaultSpec::DnsTimeout(DnsTimeoutParams {
                    domains: vec!["slow.test".parse().unwrap()],
                    types: vec!["AAAA".parse().unwrap()],
                    percent: 100.0,
                }),
                vec![&self.resolved],
            ),
            (
                FaultSpec::DnsAnswer(DnsAnswerParams {
                    ips: vec!["10.9.9.9".parse().unwrap()],
                    ttl: 0,
                    domains: vec!["wrong.test".parse().unwrap()],
                    types: vec![],
                    percent: 100.0,
                }),
                vec![&self.resolved],
            ),
            (
                FaultSpec::DnsDelay(DnsDelayParams {
                    delay: "1s".parse().unwrap(),
                    domains: vec![],
                    types: vec![],
                    percent: 50.0,
                }),
                vec![&self.resolved],
            ),
            (
                FaultSpec::IoErrno(IoErrnoParams {
                    errno: "EIO".parse().unwrap(),
                    path: Some(self.io_file.path().display().to_string()),
                    ops: vec![IoOp::Read],
                    percent: 100.0,
                }),
                vec![&self.io],
            ),
            (
                FaultSpec::StressCpu(StressCpuParams {
                    load: 5.0,
                    workers: Some(1),
                }),
                vec![&self.stressed],
            ),
            (
                FaultSpec::StressMem(StressMemParams {
                    size: Some("8MiB".parse().unwrap()),
                    percent: None,
                    rate: None,
                }),
                vec![],
            ),
            (
                FaultSpec::DiskFill(DiskFillParams {
                    path: fill,
                    size: Some("4MiB".parse().unwrap()),
                    percent: None,
                    allow_below_floor: false,
                }),
                vec![],
            ),
            (
                FaultSpec::DiskIo(DiskIoParams {
                    path: disk_io,
                    mode: IoMode::Mixed,
                    rate: Some("1MiB/s".parse().unwrap()),
                }),
                vec![&self.stressed],
            ),
            (
                FaultSpec::ProcessPause(ProcessPauseParams {}),
                vec![&self.paused],
            ),
            (
                FaultSpec::ClockSkew(ClockSkewParams {
                    offset: Some("+2h".parse().unwrap()),
                    drift: None,
                    rate: None,
                    clocks: vec![ClockName::Realtime],
                }),
                vec![&self.skewed],
            ),
            (
                FaultSpec::CpuLimit(CpuLimitParams {
                    quota: 30.0,
                    period: None,
                }),
                vec![&self.limited],
            ),
            (
                FaultSpec::MemPressure(MemPressureParams {
                    high: "512MiB".parse().unwrap(),
                    max: None,
                    allow_oom: false,
                }),
                vec![&self.limited],
            ),
            (
                FaultSpec::ProcessLimit(ProcessLimitParams { max: 64 }),
                vec![&self.limited],
            ),
            (
                FaultSpec::IoThrottle(IoThrottleParams {
                    path: None,
                    // The VM's scratch disk; on a host without the io controller the kind is
                    // refused before the device is looked at.
                    device: Some(scratch_disk().map_or_else(|| "8:0".into(), |d| d.1)),
                    rbps: Some("1MiB/s".parse().unwrap()),
                    wbps: None,
                    riops: None,
                    wiops: None,
                }),
                vec![&self.limited],
            ),
            (
                FaultSpec::FdLimit(FdLimitParams { nofile: 16 }),
                vec![&self.fd_limited],
            ),
        ]
    }

    /// What must be the same after a crash and a restart as before the first inject;
    /// `daemon` is the pid of the daemon that crashes.
    fn host_state(&self, daemon: u32) -> HostState {
        HostState {
            qdiscs_a: self.pair.a.qdisc_shapes(),
            qdiscs_b: self.pair.b.qdisc_shapes(),
            tc_filters_a: self.pair.a.tc_filters().len(),
            tcx_programs_a: self.pair.a.tcx_egress_programs(),
            bpffs: walk(Path::new("/sys/fs/bpf")),
            stress_cgroup: cgroup2_mount()
                .unwrap()
                .join(format!("chaosd-stress-{daemon}"))
                .exists(),
            procs: [&self.stressed, &self.paused, &self.skewed]
                .map(|cg| cg.dir().join("cgroup.procs"))
                .map(|p| fs::read_to_string(p).unwrap())
                .to_vec(),
            frozen: read_trimmed(&self.paused.dir().join("cgroup.freeze")),
            files: [self.fill.path(), self.disk_io.path()]
                .map(|d| walk(&d))
                .to_vec(),
            free_bytes: [self.fill.free(), self.disk_io.free()],
            vdso: vdso_bytes(self.skewed_holder),
            knobs: ["cpu.max", "memory.high", "pids.max", "io.max"]
                .map(|k| fs::read_to_string(self.limited.dir().join(k)).unwrap_or_default())
                .to_vec(),
            nofile: max_open_files(self.fd_holder),
        }
    }
}

#[derive(Debug, PartialEq)]
struct HostState {
    qdiscs_a: Vec<(i32, String, u32, u32)>,
    qdiscs_b: Vec<(i32, String, u32, u32)>,
    tc_filters_a: usize,
    tcx_programs_a: Vec<String>,
    bpffs: Vec<PathBuf>,
    /// The crashed daemon's own stress cgroup (other daemons may run on this host).
    stress_cgroup: bool,
    procs: Vec<String>,
    frozen: String,
    files: Vec<Vec<PathBuf>>,
    free_bytes: [u64; 2],
    vdso: Vec<u8>,
    /// The limited cgroup's knobs (empty where its controller is not in cgroup2).
    knobs: Vec<String>,
    /// The fd-limited sleeper's "Max open files" line.
    nofile: String,
}

impl HostState {
    /// The fields in which `self` differs from `other`.
    fn differing(&self, other: &HostState) -> Vec<&'static str> {
        let mut out = Vec::new();
        macro_rules! cmp {
            ($($field:ident),*) => {$(
                if self.$field != other.$field {
                    out.push(stringify!($field));
                }
            )*};
        }
        cmp!(
            qdiscs_a,
            qdiscs_b,
            tc_filters_a,
            tcx_programs_a,
            bpffs,
            stress_cgroup,
            procs,
            frozen,
            files,
            free_bytes,
            vdso,
            knobs
        );
        out
    }
}

fn sleeper() -> Command {
    let mut cmd = Command::new("sleep");
    cmd.arg("600");
    cmd
}

fn read_trimmed(path: &Path) -> String {
    fs::read_to_string(path).unwrap().trim().to_string()
}

/// Every path under `dir`, sorted (empty if it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        found.push(e.path());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(walk(&e.path()));
        }
    }
    found.sort();
    found
}

/// Kinds a kernel may lack, and the word the refusal must contain.
fn kernel_dependent(kind: &str) -> Option<&'static str> {
    match kind {
        "net.delay" | "net.bandwidth" => Some("sch_fq"),
        "io.errno" => Some("LSM"),
        k if k.starts_with("tcp.") || k.starts_with("http.") || k.starts_with("dns.") => {
            Some("proxy")
        }
        "cpu.limit" | "mem.pressure" | "process.limit" | "io.throttle" => Some("controller"),
        _ => None,
    }
}

/// Whether this kernel may refuse `kind` even under the VM harness: the proxy and DNS kinds need
/// Linux 6.1 (bpf_get_current_pid_tgid in sock_addr programs, SO_NETNS_COOKIE).
fn may_refuse_in_vm(kind: &str) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease");
    let version: Vec<u32> = release
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .filter_map(|n| n.parse().ok())
        .collect();
    (kind.starts_with("tcp.") || kind.starts_with("http.") || kind.starts_with("dns."))
        && version < vec![6, 1]
}

/// Injects every kind; returns the kinds this kernel refused (none under the VM harness).
fn inject_every_kind(daemon: &Daemon, scene: &Scene) -> Vec<String> {
    let faults = scene.faults(connect_errno(daemon).0);
    // The scene must cover every kind of chaosd's list that stays in force.
    for kind in chaosd::faults::kinds::KINDS
        .iter()
        .filter(|k| k.crash_tested)
    {
        assert!(
            faults.iter().any(|(spec, _)| spec.kind() == kind.name),
            "the crash test has no case for {}: add one to Scene::faults",
            kind.name
        );
    }
    let mut refused = Vec::new();
    for (spec, targets) in faults {
        let kind = spec.kind().to_string();
        match daemon.try_inject(&request(spec, &targets, "10m")) {
            Ok(_) => {}
            Err(e) => {
                let needs = kernel_dependent(&kind);
                assert!(
                    (std::env::var_os("CHAOSD_VM").is_none() || may_refuse_in_vm(&kind))
                        && needs.is_some(),
                    "{kind} was refused: {e}\n{}",
                    daemon.log_text()
                );
                let needs = needs.unwrap();
                assert!(
                    e.to_string().contains(needs),
                    "{kind} was refused without naming {needs}: {e}"
                );
                eprintln!("not on this kernel: {kind}: {e}");
                refused.push(kind);
            }
        }
    }
    refused
}

/// The effects the kernel side makes, seen from outside; `active` says which to expect.
/// Connect errors fail with ETIMEDOUT, or EPERM where the kernel can give nothing else.
fn connect_errno(daemon: &Daemon) -> (&'static str, i32) {
    chaosd_integration::connect_errno(daemon, ("ETIMEDOUT", libc::ETIMEDOUT))
}

fn check_kernel_effects(scene: &Scene, refused: &[String], active: bool, errno: i32) {
    let copies = if active { 2 } else { 1 };
    let counts = tally(
        &scene.pair.udp_exchange(&scene.duplicated, false, COUNT),
        COUNT,
    );
    assert!(
        counts.len() == COUNT as usize && counts.values().all(|n| *n == copies),
        "net.duplicate (active: {active}): {counts:?}"
    );
    let arrived = udp_from_cgroups(&[&scene.lossy], COUNT)[0];
    assert_eq!(
        arrived,
        if active { 0 } else { COUNT },
        "net.loss (active: {active})"
    );
    let connect = tcp_connect_from(&scene.refused, scene.listener_addr());
    let expected = if active { Err(errno) } else { Ok(()) };
    assert_eq!(connect, expected, "net.connect_error (active: {active})");
    if !refused.iter().any(|k| k == "tcp.down") {
        let connect = tcp_connect_from(&scene.proxied, scene.listener_addr());
        let expected = if active {
            Err(libc::ECONNREFUSED)
        } else {
            Ok(())
        };
        assert_eq!(connect, expected, "tcp.down (active: {active})");
    }
    if !refused.iter().any(|k| k == "io.errno") {
        let r = file_ops_in(&scene.io, IoOp::Read, scene.io_file.path(), 3);
        let ok = if active { 0 } else { 3 };
        assert_eq!(r.ok, ok, "io.errno (active: {active}): {r:?}");
    }
}

#[test]
fn kill_9_with_every_kind_active_then_restart_leaves_the_host_as_it_was() {
    let scene = Scene::new();
    let mut daemon = Daemon::start_with_config("[stress]\ndisk_floor = \"1MiB\"\n");
    let crashing = daemon.pid().as_raw() as u32;
    let before = scene.host_state(crashing);

    let refused = inject_every_kind(&daemon, &scene);
    let errno = connect_errno(&daemon).1;
    check_kernel_effects(&scene, &refused, true, errno);
    let during = scene.host_state(crashing);
    assert_eq!(read_trimmed(&scene.paused.dir().join("cgroup.freeze")), "1");
    assert_ne!(
        during.vdso, before.vdso,
        "clock.skew did not patch the vDSO"
    );
    assert_ne!(
        during.free_bytes, before.free_bytes,
        "disk.fill took no space"
    );
    if !refused.iter().any(|k| k == "cpu.limit") {
        assert_ne!(
            during.knobs, before.knobs,
            "the resource kinds wrote no knob"
        );
    }
    assert_ne!(during.nofile, before.nofile, "fd.limit lowered nothing");
    assert!(
        during.stress_cgroup,
        "stress.mem made no cgroup of chaosd's own"
    );
    let workers = children_of(crashing);
    assert!(workers.len() >= 3, "stress workers: {workers:?}");

    daemon.kill9();
    let killed = Instant::now();
    // Before any restart, and before the kernel-side checks below (which take their time):
    // the guardian has put back what outlived the process (qdiscs, TC leases, freeze, vDSO,
    // files, knobs) within a second of the kill.
    let limit = if std::env::var_os("CHAOSD_VM").is_some() {
        Duration::from_millis(2500)
    } else {
        Duration::from_millis(1300)
    };
    // What still differed when the limit passed, for the failure message.
    let mut at_limit = Vec::new();
    let by_guardian = wait_for(limit + Duration::from_secs(5), || {
        let now = scene.host_state(crashing);
        if killed.elapsed() <= limit {
            at_limit = now.differing(&before);
        }
        (now == before).then(|| killed.elapsed())
    });
    let Some(took) = by_guardian else {
        panic!(
            "6 s after the kill, with no restart, the host still differs:\nbefore: {before:#?}\nnow: {:#?}\nchaosd log:\n{}",
            scene.host_state(crashing),
            daemon.log_text()
        );
    };
    eprintln!("measured: the guardian restored the host {took:?} after the kill");
    let late = format!(
        "restored only {took:?} after the kill, above {limit:?}; at {limit:?} these still differed: {at_limit:?}"
    );
    if std::env::var_os("CHAOSD_VM").is_some() {
        // Under TCG with a second guest beside it, 6.1 once took 6.4 s (run again alone, well
        // inside the limit): say so, and fail only far off.
        if took > limit {
            eprintln!("slow: {late}");
        }
        assert!(
            took <= Duration::from_secs(10),
            "{late}\nchaosd log:\n{}",
            daemon.log_text()
        );
    } else {
        assert!(took <= limit, "{late}\nchaosd log:\n{}", daemon.log_text());
    }

    // Links the daemon owned went with it; what outlives it (netlink TC filters on kernels
    // before 6.6) stops once the heartbeat is stale.
    std::thread::sleep(Duration::from_nanos(HEARTBEAT_STALE_NS).saturating_sub(killed.elapsed()));
    check_kernel_effects(&scene, &refused, false, errno);
    let alive: Vec<u32> = workers
        .iter()
        .copied()
        .filter(|p| chaosd_integration::alive(*p))
        .collect();
    assert!(
        alive.is_empty(),
        "stress workers outlived chaosd: {alive:?}"
    );

    let daemon = daemon.restart();
    let faults = block_on(daemon.client().list(false)).unwrap();
    assert!(faults.is_empty(), "faults after restart: {faults:?}");
    // The restart reverts synchronously before it serves; the wait only covers the kernel
    // freeing the dead process's qdisc references and memory.
    let after = wait_for(Duration::from_secs(5), || {
        let now = scene.host_state(crashing);
        (now == before).then_some(now)
    });
    assert!(
        after.is_some(),
        "the host differs after crash + restart:\nbefore: {before:#?}\nnow: {:#?}\nchaosd log:\n{}",
        scene.host_state(crashing),
        daemon.log_text()
    );
    assert!(
        daemon
            .log_text()
            .contains("cleaned what a previous chaosd left"),
        "the restart did not report what it cleaned:\n{}",
        daemon.log_text()
    );
}
