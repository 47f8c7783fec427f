//! Helpers for chaosd's integration tests: a daemon guard, test cgroups, and traffic probes.
//! The probes that must run inside a cgroup or namespace are verbs of this crate's
//! `chaosd-test-helper` binary ([`helper_bin`]).
//!
//! Tests run as root against the real kernel. Every helper that creates something (a daemon
//! process, a cgroup, a temp dir) removes it on drop, so a failing test leaves nothing behind.
//! Tests panic rather than return errors (`unwrap` with context).

pub mod chaostoolkit;
#[cfg(target_arch = "x86_64")]
pub mod clock_bench;
pub mod file_ops;
pub mod footprint;
pub mod http_upstream;
pub mod mtls;
pub mod netns;
pub mod probe;
pub mod prometheus;
pub mod systemd_container;

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use chaosd::{
    api::{Direction, FaultInfo, FaultSpec, InjectRequest, NetLossParams, TargetSelector},
    client::{Client, ClientError},
    host::cgroup::{ChildCgroup, cgroup2_mount},
};

pub use crate::probe::{UdpSink, spawn_in_cgroup};

/// Reports a test as skipped: prints the reason and, under the VM harness, records it so the
/// results table shows "skip (reason)". The calling test must return right after.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {{
        $crate::record_skip(&format!($($arg)*));
        return;
    }};
}

#[doc(hidden)]
pub fn record_skip(reason: &str) {
    let name = std::thread::current()
        .name()
        .unwrap_or("unknown")
        .to_string();
    eprintln!("skipping: {reason}");
    if let Some(dir) = std::env::var_os("CHAOSD_TEST_REPORT_DIR") {
        use std::io::Write as _;
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Path::new(&dir).join("skips"))
        {
            // One line per skip: a reason may carry a whole verifier log.
            let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
            let _ = writeln!(f, "SKIP\t{name}\t{reason}");
        }
    }
}

/// Panics unless running as root: these tests load eBPF programs and make cgroups.
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "integration tests must run as root (they load eBPF programs)"
    );
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A binary of the workspace, next to the test executable's target directory.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`; `cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// This crate's `chaosd-test-helper` binary: the verbs tests run inside cgroups.
pub fn helper_bin() -> PathBuf {
    workspace_bin("chaosd-test-helper")
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio_runtime().block_on(f)
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A chaosd process with its own socket and state dir; SIGKILLed and reaped on drop.
pub struct Daemon {
    child: Option<Child>,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Daemon {
    /// Starts chaosd and waits until its API answers.
    pub fn start() -> Daemon {
        Self::start_with_config("")
    }

    pub fn start_with_config(config_toml: &str) -> Daemon {
        Self::start_with_args(config_toml, &[])
    }

    /// Starts chaosd with extra command-line arguments (e.g. `--log-format json`).
    pub fn start_with_args(config_toml: &str, args: &[&str]) -> Daemon {
        Self::start_in(Self::new_dir(), config_toml, args)
    }

    fn new_dir() -> tempfile::TempDir {
        require_root();
        tempfile::Builder::new()
            .prefix("chaosd-test-")
            .tempdir()
            .unwrap()
    }

    /// Starts chaosd through `customize`, which gets the daemon's directory (its socket is
    /// `chaosd.sock` there) and its command, and may set variables, pass fds or wrap it.
    pub fn start_customized(
        config_toml: &str,
        customize: impl FnOnce(&Path, Command) -> Command,
    ) -> Daemon {
        Self::spawn(Self::new_dir(), config_toml, &[], customize)
    }

    fn start_in(dir: tempfile::TempDir, config_toml: &str, args: &[&str]) -> Daemon {
        Self::spawn(dir, config_toml, args, |_, cmd| cmd)
    }

    fn spawn(
        dir: tempfile::TempDir,
        config_toml: &str,
        args: &[&str],
        customize: impl FnOnce(&Path, Command) -> Command,
    ) -> Daemon {
        let config = dir.path().join("chaosd.toml");
        std::fs::write(&config, config_toml).unwrap();
        let log = dir.path().join("chaosd.log");
        let mut cmd = Command::new(workspace_bin("chaosd"));
        cmd.arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(dir.path().join("chaosd.sock"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(args)
            .env("CHAOSD_LOG", "chaosd=debug,info");
        let child = customize(dir.path(), cmd)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let daemon = Daemon {
            child: Some(child),
            dir,
            log,
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&self) {
        // Generous: under the VM harness's emulation on a loaded host, loading and verifying
        // every program takes tens of seconds (a few hundred ms natively).
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if block_on(self.client().status()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("chaosd did not become ready; its log:\n{}", self.log_text());
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("chaosd.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn client(&self) -> Client {
        Client::new(self.socket())
    }

    /// `chaosctl --socket <this daemon's socket>`, to add arguments to.
    pub fn chaosctl(&self) -> Command {
        let mut cmd = Command::new(workspace_bin("chaosctl"));
        cmd.arg("--socket").arg(self.socket());
        cmd
    }

    /// Runs chaosctl with `args` against this daemon; panics with its stderr unless it
    /// succeeds, returns its stdout.
    pub fn chaosctl_ok(&self, args: &[&str]) -> String {
        let out = self.chaosctl().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "chaosctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// The guardian the daemon started (from `guardian.json` in its state dir), if any.
    pub fn guardian(&self) -> Option<chaosd::engine::handoff::GuardianPid> {
        chaosd::engine::handoff::read_pid(&self.state_dir())
    }

    /// Waits for the guardian `g` to exit (it does once it has reverted what its dead daemon
    /// left); SIGKILLs it after `limit`. Returns whether it exited by itself.
    pub fn reap_guardian(g: &chaosd::engine::handoff::GuardianPid, limit: Duration) -> bool {
        let exited = wait_for(limit, || (!g.guardian_alive()).then_some(())).is_some();
        if !exited && g.guardian_alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(g.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            wait_for(Duration::from_secs(5), || {
                (!g.guardian_alive()).then_some(())
            });
        }
        if let Ok(mount) = cgroup2_mount() {
            let _ = std::fs::remove_dir(
                mount.join(chaosd::daemon::guardian::cgroup_name(g.daemon_pid)),
            );
        }
        exited
    }

    /// SIGKILLs the daemon, as a crash would, and waits for it to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a new daemon on the same socket and state dir (after [`Daemon::kill9`]).
    pub fn restart(mut self) -> Daemon {
        self.kill9();
        let config = std::fs::read_to_string(self.dir.path().join("chaosd.toml")).unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::start_in(dir, &config, &[])
    }

    /// Injects `percent` loss into `cgroup` for `duration`.
    pub fn inject_loss(
        &self,
        cgroup: &TestCgroup,
        percent: f64,
        direction: Direction,
        duration: &str,
    ) -> FaultInfo {
        block_on(
            self.client()
                .inject(&loss_request(cgroup, percent, direction, duration)),
        )
        .unwrap_or_else(|e| panic!("inject failed: {e}\n{}", self.log_text()))
    }

    pub fn try_inject(&self, req: &InjectRequest) -> Result<FaultInfo, ClientError> {
        block_on(self.client().inject(req))
    }

    /// Posts `fault` (`{"kind": ..., "params": ...}` as JSON text) on `cgroup` for `duration`
    /// as it is; returns the status and the answer's text.
    pub fn post_fault_text(&self, fault: &str, cgroup: &str, duration: &str) -> (u16, String) {
        self.post_fault_json(&format!(
            r#"{{"fault": {fault}, "targets": [{{"cgroup": "{cgroup}"}}], "duration": "{duration}"}}"#
        ))
    }

    /// Posts `body` to `/v1/faults` as it is (for values the typed API cannot even hold);
    /// returns the status and the answer's text.
    pub fn post_fault_json(&self, body: &str) -> (u16, String) {
        let (status, answer) = block_on(self.client().raw(
            hyper::Method::POST,
            "/v1/faults",
            Some(body.as_bytes().to_vec()),
        ))
        .expect("the daemon answers");
        (
            status.as_u16(),
            String::from_utf8_lossy(&answer).into_owned(),
        )
    }
}

impl Drop for Daemon {
    /// Kills the daemon, then waits for its guardian to revert what it left and exit (killing
    /// it if it lingers), so the state dir is not removed under a guardian at work.
    fn drop(&mut self) {
        let guardian = self.guardian();
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(g) = guardian {
            Self::reap_guardian(&g, Duration::from_secs(10));
        }
    }
}

pub fn loss_request(
    cgroup: &TestCgroup,
    percent: f64,
    direction: Direction,
    duration: &str,
) -> InjectRequest {
    InjectRequest {
        fault: loss_spec(percent, direction, Default::default()),
        targets: vec![TargetSelector::Cgroup(cgroup.rel().to_string())],
        duration: Some(duration.to_string()),
    }
}

static CGROUP_SEQ: AtomicU32 = AtomicU32::new(0);

/// A cgroup made for one test under the cgroup2 root, removed (with its processes) on drop.
pub struct TestCgroup(ChildCgroup);

impl TestCgroup {
    pub fn new(label: &str) -> TestCgroup {
        require_root();
        let mount = cgroup2_mount().unwrap();
        let n = CGROUP_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("chaosd-test-{}-{n}-{label}", std::process::id());
        TestCgroup(ChildCgroup::create(&mount, &name).unwrap())
    }

    pub fn child(&self, name: &str) -> TestCgroup {
        TestCgroup(ChildCgroup::create(self.0.dir(), name).unwrap())
    }

    pub fn rel(&self) -> &str {
        self.0.rel()
    }

    /// cgroup v2 id, as the kernel programs see it.
    pub fn id(&self) -> u64 {
        self.0.id()
    }

    pub fn dir(&self) -> &Path {
        self.0.dir()
    }
}

/// Starts `chaosd-test-helper udp-send` inside `cgroup`: `count` datagrams tagged `tag` to `to`.
fn spawn_udp_sender(cgroup: &TestCgroup, to: SocketAddr, count: u32, tag: u8) -> Child {
    let mut cmd = Command::new(helper_bin());
    let (to, count, tag) = (to.to_string(), count.to_string(), tag.to_string());
    cmd.args(["udp-send", "--to", &to, "--count", &count, "--tag", &tag]);
    spawn_in_cgroup(&mut cmd, cgroup.dir()).unwrap()
}

/// Sends `count` datagrams from a process in each cgroup at the same time to a receiver
/// outside all of them; returns how many of each arrived.
pub fn udp_from_cgroups(cgroups: &[&TestCgroup], count: u32) -> Vec<u32> {
    let sink = UdpSink::bind_loopback().unwrap();
    let mut senders: Vec<Child> = cgroups
        .iter()
        .enumerate()
        .map(|(i, cg)| spawn_udp_sender(cg, sink.addr(), count, i as u8 + 1))
        .collect();
    let counts = sink
        .count(
            &mut senders,
            Duration::from_millis(300),
            Duration::from_secs(60),
        )
        .unwrap();
    for mut s in senders {
        let status = s.wait().unwrap();
        assert!(status.success(), "a UDP sender failed: {status}");
    }
    (1..=cgroups.len()).map(|i| counts[i]).collect()
}

/// Starts a receiver inside `cgroup`, sends `count` datagrams to it from this process (outside
/// the cgroup) and returns how many it received.
pub fn udp_into_cgroup(cgroup: &TestCgroup, count: u32) -> u32 {
    udp_into_cgroup_from(cgroup, "127.0.0.1:0".parse().unwrap(), count)
}

/// Polls `f` every 20 ms until it returns Some, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `count` datagrams from a process in `cgroup` to each of `sinks` (bound by this
/// process, outside the cgroup); returns how many reached each.
pub fn udp_from_cgroup_to(cgroup: &TestCgroup, sinks: &[&UdpSink], count: u32) -> Vec<u32> {
    sinks
        .iter()
        .map(|sink| {
            let mut sender = vec![spawn_udp_sender(cgroup, sink.addr(), count, 1)];
            let counts = sink
                .count(
                    &mut sender,
                    Duration::from_millis(300),
                    Duration::from_secs(60),
                )
                .unwrap();
            sender[0].wait().unwrap();
            counts[1]
        })
        .collect()
}

/// A TCP connect from a process in `cgroup`: Ok, or the errno it failed with.
pub fn tcp_connect_from(cgroup: &TestCgroup, to: SocketAddr) -> Result<(), i32> {
    let mut cmd = Command::new(helper_bin());
    cmd.args(["tcp-connect", "--to", &to.to_string()])
        .stdout(Stdio::piped());
    let child = spawn_in_cgroup(&mut cmd, cgroup.dir()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().strip_prefix("error ") {
        None if text.trim() == "ok" => Ok(()),
        Some(errno) => Err(errno.parse().unwrap()),
        None => panic!("unexpected tcp-connect output: {text:?}"),
    }
}

/// One TCP connection from a process in `cgroup`: connect, send `send` bytes, read to the end
/// (or `read_ms` of silence); what the client saw.
pub fn tcp_talk_from(
    cgroup: &TestCgroup,
    to: SocketAddr,
    send: usize,
    read_ms: u64,
) -> probe::TcpTalk {
    let mut cmd = Command::new(helper_bin());
    cmd.args(["tcp-talk", "--to", &to.to_string()])
        .args([
            "--send",
            &send.to_string(),
            "--read-ms",
            &read_ms.to_string(),
        ])
        .stdout(Stdio::piped());
    let child = spawn_in_cgroup(&mut cmd, cgroup.dir()).unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tcp-talk printed {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Starts a receiver inside `cgroup` and sends to it from `from` (an address of this process).
pub fn udp_into_cgroup_from(cgroup: &TestCgroup, from: SocketAddr, count: u32) -> u32 {
    let mut cmd = Command::new(helper_bin());
    cmd.args(["udp-recv", "--quiet-ms", "300"])
        .stdout(Stdio::piped());
    let mut child = spawn_in_cgroup(&mut cmd, cgroup.dir()).unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = lines.next().unwrap().unwrap().trim().parse().unwrap();
    probe::send_datagrams_from(from, addr, 1, count).unwrap();
    let received: u32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    child.wait().unwrap();
    received
}

/// A request for `fault` on `targets` lasting `duration`.
pub fn request(fault: FaultSpec, targets: &[&TestCgroup], duration: &str) -> InjectRequest {
    InjectRequest {
        fault,
        targets: targets
            .iter()
            .map(|c| TargetSelector::Cgroup(c.rel().to_string()))
            .collect(),
        duration: Some(duration.to_string()),
    }
}

/// Sends `req`, panicking with the daemon's log on failure.
pub fn inject_request(daemon: &Daemon, req: &InjectRequest) -> FaultInfo {
    daemon
        .try_inject(req)
        .unwrap_or_else(|e| panic!("inject failed: {e}\n{}", daemon.log_text()))
}

/// Injects any fault into `cgroup`, panicking with the daemon's log on failure.
pub fn inject(daemon: &Daemon, cgroup: &TestCgroup, fault: FaultSpec, duration: &str) -> FaultInfo {
    inject_request(daemon, &request(fault, &[cgroup], duration))
}

/// Why `kind` cannot run on this host, as the daemon's `/v1/capabilities` reports it (None:
/// supported). I/O tests skip with this reason where BPF LSM programs are refused.
pub fn unsupported_reason(daemon: &Daemon, kind: &str) -> Option<String> {
    let caps = block_on(daemon.client().capabilities_of(kind))
        .unwrap_or_else(|e| panic!("GET /v1/capabilities failed: {e}"));
    let k = caps
        .kind(kind)
        .unwrap_or_else(|| panic!("/v1/capabilities has no row for {kind}: {caps:?}"));
    (!k.supported).then(|| k.reason.clone().unwrap_or_default())
}

/// What the daemon says this kernel cannot do of a supported `kind` (its capability row's
/// limit), e.g. connect errors other than EPERM without `bpf_set_retval`.
pub fn kind_limit(daemon: &Daemon, kind: &str) -> Option<chaosd::api::capabilities::KindLimit> {
    let caps = block_on(daemon.client().capabilities_of(kind))
        .unwrap_or_else(|e| panic!("GET /v1/capabilities failed: {e}"));
    caps.kind(kind).and_then(|k| k.limit.clone())
}

/// The errno a connect-error test asks for: `wanted` (name, value), or EPERM where the kernel
/// has no `bpf_set_retval` (before 5.19), the only errno chaosd can give there. Such a kernel
/// must name that limit in the capability row.
pub fn connect_errno(daemon: &Daemon, wanted: (&'static str, i32)) -> (&'static str, i32) {
    match kind_limit(daemon, "net.connect_error") {
        Some(limit) => {
            assert!(
                limit.reason.contains("bpf_set_retval") && limit.fix.contains("EPERM"),
                "the connect error limit does not name bpf_set_retval and EPERM: {limit:?}"
            );
            ("EPERM", libc::EPERM)
        }
        None => wanted,
    }
}

/// Runs `op` `count` times on `path` from a process in `cgroup` (`chaosd-test-helper file-ops`).
pub fn file_ops_in(
    cgroup: &TestCgroup,
    op: chaosd::api::IoOp,
    path: &Path,
    count: u32,
) -> file_ops::FileOpsReport {
    let mut cmd = file_ops_cmd(op, path, count, false);
    let child = spawn_in_cgroup(&mut cmd, cgroup.dir()).unwrap();
    parse_file_ops(child.wait_with_output().unwrap())
}

fn file_ops_cmd(op: chaosd::api::IoOp, path: &Path, count: u32, hold: bool) -> Command {
    let mut cmd = Command::new(helper_bin());
    cmd.args(["file-ops", "--op", op.name(), "--count", &count.to_string()])
        .arg("--path")
        .arg(path)
        .stdout(Stdio::piped());
    if hold {
        cmd.arg("--hold").stdin(Stdio::piped());
    }
    cmd
}

fn parse_file_ops(out: std::process::Output) -> file_ops::FileOpsReport {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "file-ops failed: {}\nstdout: {text}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("bad file-ops output {text:?}: {e}"))
}

/// A `file-ops --hold` process in a cgroup: it has opened its file and waits for [`go`].
///
/// [`go`]: HeldFileOps::go
pub struct HeldFileOps(Child);

impl HeldFileOps {
    pub fn start(cgroup: &TestCgroup, op: chaosd::api::IoOp, path: &Path, count: u32) -> Self {
        let mut cmd = file_ops_cmd(op, path, count, true);
        let mut child = spawn_in_cgroup(&mut cmd, cgroup.dir()).unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "file-ops --hold did not get ready");
        HeldFileOps(child)
    }

    /// Lets it run its operations on the descriptor opened earlier; returns its report.
    pub fn go(mut self) -> file_ops::FileOpsReport {
        use std::io::Write as _;
        self.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
        parse_file_ops(self.0.wait_with_output().unwrap())
    }
}

/// Alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Direct children of `parent` (by PPid in /proc).
pub fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(") ")?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// A tmpfs mounted on a temp dir for one test, unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn new(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("chaosd-fill-")
            .tempdir()
            .unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .unwrap();
        Tmpfs { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn free(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(self.dir.path()).unwrap();
        s.blocks_available() * s.fragment_size()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A packet filter: destination CIDR, port or range, protocol.
pub fn net_filter(
    dst: Option<&str>,
    port: Option<&str>,
    proto: chaosd::api::Proto,
) -> chaosd::api::NetFilter {
    chaosd::api::NetFilter {
        dst: dst.map(|d| d.parse().expect("a test CIDR")),
        src: None,
        port: port.map(|p| p.parse().expect("a test port")),
        proto,
    }
}

/// `net.loss` with a filter.
pub fn loss_spec(percent: f64, direction: Direction, filter: chaosd::api::NetFilter) -> FaultSpec {
    FaultSpec::NetLoss(NetLossParams {
        percent,
        direction,
        filter,
    })
}

/// `pid`'s "Max open files" line of `/proc/PID/limits` (what `fd.limit` lowers).
pub fn max_open_files(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string()
}

/// The bytes of `pid`'s vDSO, read through /proc/<pid>/mem (clock skew patches them).
pub fn vdso_bytes(pid: u32) -> Vec<u8> {
    use std::os::unix::fs::FileExt as _;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| l.ends_with("[vdso]"))
        .expect("the process has a vDSO");
    let range = line.split_whitespace().next().unwrap();
    let (start, end) = range.split_once('-').unwrap();
    let start = u64::from_str_radix(start, 16).unwrap();
    let end = u64::from_str_radix(end, 16).unwrap();
    let mut bytes = vec![0; (end - start) as usize];
    std::fs::File::open(format!("/proc/{pid}/mem"))
        .unwrap()
        .read_exact_at(&mut bytes, start)
        .unwrap();
    bytes
}

/// The VM harness's scratch disk (virtio-blk, serial `chaosd-scratch`; see
/// xtask/src/vm/qemu.rs): its device node and MAJ:MIN. `None` outside the VM guests.
pub fn scratch_disk() -> Option<(PathBuf, String)> {
    std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .find_map(|e| {
            let serial = std::fs::read_to_string(e.path().join("device/serial"))
                .or_else(|_| std::fs::read_to_string(e.path().join("serial")))
                .ok()?;
            if serial.trim() != "chaosd-scratch" {
                return None;
            }
            let dev = std::fs::read_to_string(e.path().join("dev")).ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            Some((PathBuf::from("/dev").join(name), dev.trim().to_string()))
        })
}
