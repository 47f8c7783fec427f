//! `net.delay` and `net.bandwidth` end to end: a target cgroup in network namespace `a` talks
//! over a veth to namespace `b`; chaosd installs sch_fq on `a`'s devices, the egress program
//! sets departure times, and the effect is measured from outside (round trips, one-way delays
//! on the shared monotonic clock, received rate). These need sch_fq: on a kernel without it
//! (this dev host) the inject must be refused naming sch_fq, and the rest is skipped; the VM
//! harness runs them on Debian's 6.1 and 6.12.

use std::{
    net::{SocketAddr, UdpSocket},
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use chaosd::{
    api::{
        FaultSpec, NetBandwidthParams, NetDelayParams, NetFilter, NetLossParams, NetnsFrom,
        NetnsUsed,
    },
    client::ClientError,
    faults::kernel::monotonic_ns,
    faults::net::netns::Netns,
};
use chaosd_integration::{
    Daemon, TestCgroup, block_on, helper_bin, inject, inject_request,
    netns::{KillOnDrop, NetnsEnd, NetnsPair, spawn_in},
    request, skip, unsupported_reason,
};
use hyper::StatusCode;

const MS: u64 = 1_000_000;

/// A UDP echo server on namespace `b`'s address, until dropped.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(end: &NetnsEnd) -> Echo {
        let sock = end.udp_socket(end.v4.into());
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        Echo {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The fixture: daemon, namespaces, a target cgroup with a resident process in `a` (so the
/// daemon can tell the cgroup's namespace) — or `None` after recording the skip, when this
/// kernel cannot delay, having checked that the refusal names sch_fq.
struct Setup {
    daemon: Daemon,
    pair: NetnsPair,
    cgroup: TestCgroup,
    resident: Child,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.resident.kill();
        let _ = self.resident.wait();
    }
}

fn setup(kind: &str) -> Result<Setup, String> {
    let daemon = Daemon::start();
    let pair = NetnsPair::new();
    let cgroup = TestCgroup::new("delay");
    let resident = spawn_in(
        Command::new("sleep").arg("120"),
        &pair.a.netns,
        Some(&cgroup),
    );
    let setup = Setup {
        daemon,
        pair,
        cgroup,
        resident,
    };
    if let Some(reason) = unsupported_reason(&setup.daemon, kind) {
        let err = setup
            .daemon
            .try_inject(&request(delay(100, None), &[&setup.cgroup], "30s"))
            .expect_err("net.delay was accepted on a kernel without sch_fq");
        assert!(
            err.to_string().contains("sch_fq"),
            "the refusal does not name sch_fq: {err}"
        );
        return Err(reason);
    }
    Ok(setup)
}

fn delay(ms: u64, jitter_ms: Option<u64>) -> FaultSpec {
    FaultSpec::NetDelay(NetDelayParams {
        delay: format!("{ms}ms").parse().unwrap(),
        jitter: jitter_ms.map(|j| format!("{j}ms").parse().unwrap()),
        filter: NetFilter::default(),
        netns: None,
    })
}

/// Round trips of `count` pings from the target cgroup in `a` to the echo server.
fn pings(s: &Setup, echo: &Echo, count: u32) -> Vec<Option<u64>> {
    pings_from(&s.pair.a.netns, &s.cgroup, echo, count)
}

/// Round trips of `count` pings from a new process in `cgroup` and `netns`.
fn pings_from(netns: &Netns, cgroup: &TestCgroup, echo: &Echo, count: u32) -> Vec<Option<u64>> {
    let out = spawn_in(
        Command::new(helper_bin())
            .args(["udp-ping", "--to", &echo.addr.to_string()])
            .args(["--count", &count.to_string(), "--gap-ms", "10"])
            .stdout(Stdio::piped()),
        netns,
        Some(cgroup),
    )
    .wait_with_output()
    .unwrap();
    assert!(out.status.success(), "pinger failed: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn answered(rtts: &[Option<u64>]) -> Vec<u64> {
    rtts.iter().flatten().copied().collect()
}

#[test]
fn delay_adds_the_asked_delay_to_p50_rtt_composes_with_loss_and_restores_the_qdisc() {
    let s = match setup("net.delay") {
        Ok(s) => s,
        Err(reason) => skip!("{reason}"),
    };
    let echo = Echo::start(&s.pair.b);
    let before = s.pair.a.qdisc_shapes();
    let base = median(answered(&pings(&s, &echo, 20)));

    let fault = inject(&s.daemon, &s.cgroup, delay(100, None), "120s");
    let during = s.pair.a.qdisc_shapes();
    assert!(
        during
            .iter()
            .any(|q| q.0 == s.pair.a.ifindex as i32 && q.1 == "fq" && q.2 == 0xcd00 << 16),
        "no chaosd fq on the veth: {during:?}"
    );
    let delayed = median(answered(&pings(&s, &echo, 20)));
    eprintln!(
        "measured: p50 rtt {:.1} ms → {:.1} ms with delay 100 ms",
        base as f64 / 1e6,
        delayed as f64 / 1e6
    );
    let added = delayed.saturating_sub(base);
    assert!(
        (90 * MS..=110 * MS).contains(&added),
        "delay 100 ms added {:.1} ms to p50 rtt",
        added as f64 / 1e6
    );

    // Loss stacks on the same cgroup: some pings go unanswered, the rest still come late.
    let loss = inject(
        &s.daemon,
        &s.cgroup,
        FaultSpec::NetLoss(NetLossParams {
            percent: 40.0,
            direction: Default::default(),
            filter: NetFilter::default(),
        }),
        "120s",
    );
    let both = pings(&s, &echo, 30);
    let lost = both.iter().filter(|r| r.is_none()).count();
    let late = median(answered(&both));
    eprintln!(
        "measured: loss 40 % + delay 100 ms: {lost}/30 lost, p50 {:.1} ms",
        late as f64 / 1e6
    );
    assert!((3..=22).contains(&lost), "{lost}/30 pings lost at 40 %");
    assert!(
        late >= base + 90 * MS,
        "the delay stopped while loss was added"
    );

    block_on(s.daemon.client().recover(&loss.id)).unwrap();
    block_on(s.daemon.client().recover(&fault.id)).unwrap();
    assert_eq!(
        s.pair.a.qdisc_shapes(),
        before,
        "the qdiscs were not restored exactly"
    );
    let after = median(answered(&pings(&s, &echo, 20)));
    assert!(
        after < base + 20 * MS,
        "delay outlived recover: p50 {after} ns"
    );
}

/// One-way delays and arrival order of a stamped stream sent from the target cgroup.
///
/// The sender runs on one CPU, so its packets and fq's pinned watchdog share one CPU's veth
/// backlog (two CPUs' backlogs drain independently and could swap what fq released in order).
fn stamped_stream(s: &Setup, count: u32, size: usize, gap_us: u64) -> Vec<(u32, u64, u64)> {
    let sink: UdpSocket = s.pair.b.udp_socket(s.pair.b.v4.into());
    sink.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let to = sink.local_addr().unwrap().to_string();
    let mut cmd = Command::new(helper_bin());
    cmd.args(["udp-stamped", "--to", &to, "--count", &count.to_string()])
        .args(["--size", &size.to_string(), "--gap-us", &gap_us.to_string()]);
    pin_to_current_cpu(&mut cmd);
    let mut sender = spawn_in(&mut cmd, &s.pair.a.netns, Some(&s.cgroup));
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = sink.recv(&mut buf) {
        let now = monotonic_ns();
        if n >= 12 {
            let seq = u32::from_le_bytes(buf[..4].try_into().unwrap());
            let sent = u64::from_le_bytes(buf[4..12].try_into().unwrap());
            got.push((seq, now.saturating_sub(sent), now));
        }
        if got.len() as u32 == count {
            break;
        }
    }
    let _ = sender.wait();
    got
}

/// Makes the child run only on the CPU this thread is on now.
fn pin_to_current_cpu(cmd: &mut Command) {
    // SAFETY: plain syscall wrappers on a zeroed, local cpu_set_t.
    let cpu = unsafe { libc::sched_getcpu() };
    assert!(
        cpu >= 0,
        "sched_getcpu: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: between fork and exec the closure only calls sched_setaffinity(2) on a set built
    // before the fork.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn jitter_widens_the_spread_without_reordering_a_flow() {
    let s = match setup("net.delay") {
        Ok(s) => s,
        Err(reason) => skip!("{reason}"),
    };
    let fault = inject(&s.daemon, &s.cgroup, delay(50, Some(20)), "120s");
    let got = stamped_stream(&s, 300, 64, 2000);
    block_on(s.daemon.client().recover(&fault.id)).unwrap();
    assert!(
        got.len() >= 290,
        "only {} of 300 datagrams arrived",
        got.len()
    );
    // The departure times chaosd gives a flow never go backwards: net_departure checks that
    // exactly, on the program's own stamps. Arrival order through the veth in the 2-vCPU
    // guests has still shown one swap in 300 now and then (6.1 and 5.10, sender pinned; the
    // cause is not found yet), so here a swap or two are tolerated and more fail: jitter that
    // ignored flow order would swap a large share of these (±20 ms spread, 2 ms apart).
    let inversions = got.windows(2).filter(|w| w[1].0 < w[0].0).count();
    assert!(
        inversions <= 2,
        "jitter reordered the flow: {inversions} swaps"
    );
    let mut delays: Vec<u64> = got.iter().map(|g| g.1).collect();
    delays.sort_unstable();
    let pct = |p: usize| delays[delays.len() * p / 100];
    eprintln!(
        "measured: one-way p10 {:.1} ms, p50 {:.1} ms, p90 {:.1} ms with delay 50 ms ± 20 ms",
        pct(10) as f64 / 1e6,
        pct(50) as f64 / 1e6,
        pct(90) as f64 / 1e6
    );
    assert!(
        delays[0] >= 30 * MS,
        "a datagram left before delay - jitter"
    );
    assert!(
        pct(90) - pct(10) >= 10 * MS,
        "jitter 20 ms spread p10..p90 by only {:.1} ms",
        (pct(90) - pct(10)) as f64 / 1e6
    );
}

#[test]
fn bandwidth_paces_the_target_to_the_asked_rate() {
    let s = match setup("net.bandwidth") {
        Ok(s) => s,
        Err(reason) => skip!("{reason}"),
    };
    let fault = inject(
        &s.daemon,
        &s.cgroup,
        FaultSpec::NetBandwidth(NetBandwidthParams {
            rate: "1mbit".parse().unwrap(),
            burst: None,
            filter: NetFilter::default(),
            netns: None,
        }),
        "120s",
    );
    // 300 datagrams of 1,000 bytes (1,028 on the wire in IPv4) at 125,000 bytes/s: ~2.5 s.
    let got = stamped_stream(&s, 300, 1000, 0);
    block_on(s.daemon.client().recover(&fault.id)).unwrap();
    assert!(
        got.len() >= 250,
        "only {} of 300 datagrams arrived",
        got.len()
    );
    // Skip the burst at the start; measure over the paced rest.
    let paced = &got[10..];
    let span = paced.last().unwrap().2 - paced[0].2;
    let rate = (paced.len() - 1) as f64 * 1028.0 / (span as f64 / 1e9);
    eprintln!("measured: {:.0} bytes/s at 1mbit (125000 bytes/s)", rate);
    assert!(
        (112_500.0..=137_500.0).contains(&rate),
        "1mbit gave {rate:.0} bytes/s, not 125000 ± 10 %"
    );
}

fn delay_in(ms: u64, netns: Option<&str>) -> FaultSpec {
    FaultSpec::NetDelay(NetDelayParams {
        netns: netns.map(Into::into),
        ..match delay(ms, None) {
            FaultSpec::NetDelay(p) => p,
            _ => unreachable!(),
        }
    })
}

fn bandwidth_in(netns: Option<&str>) -> FaultSpec {
    FaultSpec::NetBandwidth(NetBandwidthParams {
        rate: "1mbit".parse().unwrap(),
        burst: None,
        filter: NetFilter::default(),
        netns: netns.map(Into::into),
    })
}

fn expect_400(daemon: &Daemon, req: &chaosd::api::InjectRequest, needle: &str) {
    match daemon.try_inject(req) {
        Err(ClientError::Api(msg, status)) => {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
            assert!(
                msg.contains("netns") && msg.contains(needle),
                "{msg:?} does not name netns and {needle:?}"
            );
        }
        other => panic!("expected a 400 naming netns and {needle:?}, got {other:?}"),
    }
}

#[test]
fn a_bad_netns_is_refused_with_the_reason_and_nothing_is_applied() {
    let daemon = Daemon::start();
    let cgroup = TestCgroup::new("netns-bad");
    for spec in [delay_in as fn(u64, Option<&str>) -> FaultSpec, |_, n| {
        bandwidth_in(n)
    }] {
        for (netns, needle) in [
            ("", "absolute path"),
            ("netns/x", "absolute path"),
            ("0", "above 0"),
        ] {
            expect_400(
                &daemon,
                &request(spec(100, Some(netns)), &[&cgroup], "30s"),
                needle,
            );
        }
    }
    let anchor = KillOnDrop(Command::new("sleep").arg("60").spawn().unwrap());
    let resolved = [
        ("4194305", "no process with pid 4194305"),
        ("/nonexistent/netns", "opening /nonexistent/netns"),
        ("/proc/self/status", "is not a namespace"),
        (
            &*format!("/proc/{}/ns/mnt", anchor.0.id()),
            "not a network namespace",
        ),
    ];
    match unsupported_reason(&daemon, "net.delay") {
        // Resolved when applied, where delay can be applied at all.
        None => {
            for (netns, needle) in resolved {
                expect_400(
                    &daemon,
                    &request(delay_in(100, Some(netns)), &[&cgroup], "30s"),
                    needle,
                );
            }
        }
        // Here a well-formed netns meets the kernel's refusal, naming what is missing.
        Some(_) => {
            let ns = format!("/proc/{}/ns/net", anchor.0.id());
            let err = daemon
                .try_inject(&request(delay_in(100, Some(&ns)), &[&cgroup], "30s"))
                .expect_err("net.delay was accepted on a kernel without sch_fq");
            assert!(err.to_string().contains("sch_fq"), "{err}");
        }
    }
    assert!(block_on(daemon.client().list(true)).unwrap().is_empty());
}

/// The one namespace a fault reports, checked against what was expected.
fn assert_one_netns(used: &[NetnsUsed], inode: u64, from: NetnsFrom, path: &str) {
    assert_eq!(used.len(), 1, "{used:?}");
    assert_eq!((used[0].inode, used[0].from), (inode, from), "{used:?}");
    assert_eq!(used[0].path, path, "{used:?}");
}

#[test]
fn delay_goes_in_before_its_client_starts_in_the_given_or_the_daemon_namespace() {
    let pair = NetnsPair::new();
    let other = NetnsPair::new();
    // chaosd itself runs in namespace a, so "its own" is told apart from the host's.
    let a_fd = {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        pair.a.netns.as_fd().as_raw_fd()
    };
    let daemon = Daemon::start_customized("", |_, mut cmd| {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: only setns(2) between fork and exec; `pair` outlives the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(a_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    });
    let cgroup = TestCgroup::new("netns-empty");
    if let Some(reason) = unsupported_reason(&daemon, "net.delay") {
        let err = daemon
            .try_inject(&request(delay_in(100, None), &[&cgroup], "30s"))
            .expect_err("net.delay was accepted on a kernel without sch_fq");
        assert!(err.to_string().contains("sch_fq"), "{err}");
        skip!("{reason}");
    }

    // No process in the target and no netns: chaosd's own namespace (a).
    let echo = Echo::start(&pair.b);
    let before = pair.a.qdisc_shapes();
    let base = median(answered(&pings_from(&pair.a.netns, &cgroup, &echo, 10)));
    let fault = inject(&daemon, &cgroup, delay_in(100, None), "120s");
    let own = format!("/proc/{}/ns/net", daemon.pid());
    assert_one_netns(&fault.netns, pair.a.netns.inode, NetnsFrom::Chaosd, &own);
    let shown = block_on(daemon.client().get(&fault.id)).unwrap();
    assert_eq!(shown.netns, fault.netns);
    // The client starts after the inject, and is slowed down.
    let delayed = median(answered(&pings_from(&pair.a.netns, &cgroup, &echo, 10)));
    eprintln!(
        "measured: p50 rtt {:.1} ms → {:.1} ms",
        base as f64 / 1e6,
        delayed as f64 / 1e6
    );
    assert!(
        delayed >= base + 80 * MS,
        "delay 100 ms in chaosd's namespace added only {:.1} ms",
        delayed.saturating_sub(base) as f64 / 1e6
    );
    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_eq!(
        pair.a.qdisc_shapes(),
        before,
        "the qdiscs were not restored"
    );

    // A namespace named by path: that one gets the fq, whatever chaosd's is.
    let anchor = KillOnDrop(spawn_in(
        Command::new("sleep").arg("120"),
        &other.a.netns,
        None,
    ));
    let path = format!("/proc/{}/ns/net", anchor.0.id());
    let echo = Echo::start(&other.b);
    let base = median(answered(&pings_from(&other.a.netns, &cgroup, &echo, 10)));
    let fault = inject(&daemon, &cgroup, delay_in(100, Some(&path)), "120s");
    assert_one_netns(&fault.netns, other.a.netns.inode, NetnsFrom::Request, &path);
    assert!(
        other
            .a
            .qdisc_shapes()
            .iter()
            .any(|q| q.0 == other.a.ifindex as i32 && q.1 == "fq"),
        "no fq on the named namespace's veth"
    );
    assert_eq!(
        pair.a.qdisc_shapes(),
        before,
        "chaosd's own namespace was touched"
    );
    let delayed = median(answered(&pings_from(&other.a.netns, &cgroup, &echo, 10)));
    assert!(
        delayed >= base + 80 * MS,
        "delay 100 ms in the named namespace added only {:.1} ms",
        delayed.saturating_sub(base) as f64 / 1e6
    );
    block_on(daemon.client().recover(&fault.id)).unwrap();

    // The same namespace named by pid, for bandwidth.
    let pid = anchor.0.id().to_string();
    let fault = inject_request(
        &daemon,
        &request(bandwidth_in(Some(&pid)), &[&cgroup], "60s"),
    );
    assert_one_netns(&fault.netns, other.a.netns.inode, NetnsFrom::Request, &path);
    block_on(daemon.client().recover(&fault.id)).unwrap();
}
