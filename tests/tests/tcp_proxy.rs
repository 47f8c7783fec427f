//! The transparent proxy (`tcp.*`), checked with real clients in a target cgroup: redis-benchmark
//! against redis-server for latency, plain sockets for refusal, reset, data limit and timeout;
//! a sibling cgroup unchanged, getpeername showing the address asked for, and new connects
//! going direct after recover and after `kill -9` of chaosd.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    process::{Command, Stdio},
    time::Duration,
};

use chaosd::faults::net::netns::Netns;
use chaosd::{
    api::FaultSpec,
    api::{
        NetFilter, Stream, TcpBandwidthParams, TcpDownParams, TcpLatencyParams, TcpLimitDataParams,
        TcpResetPeerParams, TcpSlicerParams, TcpSlowCloseParams, TcpTimeoutParams,
    },
    host::cgroup::spawn_in_cgroup,
};
use chaosd_integration::{
    Daemon, TestCgroup, block_on, helper_bin, inject,
    netns::{KillOnDrop, NetnsPair, spawn_in},
    probe::TcpTalk,
    tcp_talk_from, unsupported_reason, wait_for,
};

const ECONNREFUSED: i32 = 111;

/// Timing tolerances: the issue's on the host; wider under the VM harness, whose CPU is
/// emulated (measured on 6.12 under TCG: +9..12 ms on a 100 ms latency, -6 % on a rate).
fn latency_tolerance_ms() -> f64 {
    if std::env::var_os("CHAOSD_VM").is_some() {
        25.0
    } else {
        5.0
    }
}

/// A rate (as a share of the cap) within ±5 % on the host; under the emulated VM, where the
/// guest may not keep up (0.77 of the cap seen), at most 15 % over and well below uncapped.
fn rate_within_cap(share: f64) -> bool {
    if std::env::var_os("CHAOSD_VM").is_some() {
        (0.5..=1.15).contains(&share)
    } else {
        (share - 1.0).abs() <= 0.05
    }
}

/// Whether `kind` runs here; skips (with the reason) where the kernel refuses it. On the dev
/// host (not under the VM harness) the proxy must load: a refusal there is a bug, not a skip.
fn supported(daemon: &Daemon, kind: &str) -> bool {
    let Some(reason) = unsupported_reason(daemon, kind) else {
        return true;
    };
    assert!(
        std::env::var_os("CHAOSD_VM").is_some(),
        "{kind} is refused on the dev host: {reason}"
    );
    chaosd_integration::record_skip(&format!("{kind} is unsupported on this kernel: {reason}"));
    false
}

fn port_filter(port: u16) -> NetFilter {
    NetFilter {
        port: Some(port.to_string().parse().unwrap()),
        ..NetFilter::default()
    }
}

/// A redis-server outside every target cgroup: on loopback, or in a namespace of the test's.
struct Redis {
    host: String,
    port: u16,
    /// Where its clients run: the test's namespace, or (a server in another one) the
    /// namespace they reach it from.
    clients_in: Option<Netns>,
    _child: KillOnDrop,
}

impl Redis {
    fn start() -> Redis {
        Self::start_on("127.0.0.1")
    }

    /// On `host`, a loopback address (127.0.0.1 or ::1).
    fn start_on(host: &'static str) -> Redis {
        let port = TcpListener::bind((host, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", host])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        Redis {
            host: host.to_string(),
            port,
            clients_in: None,
            _child: KillOnDrop(child),
        }
        .answering()
    }

    /// In namespace `b` of `pair` on its veth address, for clients in namespace `a`.
    fn start_across(pair: &NetnsPair) -> Redis {
        let host = pair.b.v4.to_string();
        let port = 6379;
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", &host])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null());
        let child = spawn_in(&mut cmd, &pair.b.netns, None);
        Redis {
            host,
            port,
            clients_in: Some(pair.a.netns.try_clone().unwrap()),
            _child: KillOnDrop(child),
        }
        .answering()
    }

    /// Waits until `redis-cli ping` from where the clients run is answered.
    fn answering(self) -> Redis {
        let up = wait_for(Duration::from_secs(10), || {
            let mut cmd = Command::new("redis-cli");
            cmd.args(["-h", &self.host, "-p", &self.port.to_string(), "ping"])
                .stdout(Stdio::piped());
            let out = self.spawn(&mut cmd, None).wait_with_output().ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("PONG")
                .then_some(())
        });
        assert!(
            up.is_some(),
            "redis-server did not answer on port {}",
            self.port
        );
        self
    }

    /// Starts a client where the clients run, in `cg` if given.
    fn spawn(&self, cmd: &mut Command, cg: Option<&TestCgroup>) -> std::process::Child {
        match (&self.clients_in, cg) {
            (Some(ns), cg) => spawn_in(cmd, ns, cg),
            (None, Some(cg)) => spawn_in_cgroup(cmd, cg.dir()).unwrap(),
            (None, None) => cmd.spawn().unwrap(),
        }
    }

    /// p50 in ms of `redis-benchmark` PINGs (one client, one request at a time) run in `cg`.
    fn p50_ms(&self, cg: &TestCgroup, requests: u32) -> f64 {
        let mut cmd = Command::new("redis-benchmark");
        cmd.args(["-h", &self.host, "-p", &self.port.to_string()])
            .args([
                "-t",
                "ping_inline",
                "-c",
                "1",
                "-n",
                &requests.to_string(),
                "--csv",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = self.spawn(&mut cmd, Some(cg)).wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        p50_of_csv(&text).unwrap_or_else(|| {
            panic!(
                "redis-benchmark printed no p50: {text:?} {:?}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// The `p50_latency_ms` column of redis-benchmark's first CSV row.
fn p50_of_csv(text: &str) -> Option<f64> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let unquote = |l: &str| -> Vec<String> {
        l.split(',')
            .map(|f| f.trim_matches('"').to_string())
            .collect()
    };
    let header = unquote(lines.next()?);
    let row = unquote(lines.next()?);
    let col = header.iter().position(|h| h == "p50_latency_ms")?;
    row.get(col)?.parse().ok()
}

#[test]
fn tcp_latency_delays_redis_for_the_target_only_until_recover_and_kill_9() {
    let mut daemon = Daemon::start();
    if !supported(&daemon, "tcp.latency") {
        return;
    }
    let redis = Redis::start();
    let (target, sibling) = (
        TestCgroup::new("proxy-redis"),
        TestCgroup::new("proxy-sibling"),
    );
    let base = redis.p50_ms(&target, 20);

    let latency = FaultSpec::TcpLatency(TcpLatencyParams {
        latency: "100ms".parse().unwrap(),
        jitter: None,
        direction: Stream::Downstream,
        percent: 100.0,
        filter: port_filter(redis.port),
    });
    let fault = inject(&daemon, &target, latency.clone(), "60s");
    let slowed = redis.p50_ms(&target, 20);
    let beside = redis.p50_ms(&sibling, 20);
    eprintln!(
        "redis PING p50: {base:.3} ms direct, {slowed:.3} ms under tcp.latency 100ms, sibling {beside:.3} ms"
    );
    assert!(
        (slowed - base - 100.0).abs() <= latency_tolerance_ms(),
        "p50 {slowed:.3} ms under 100 ms latency, {base:.3} ms without: expected +100 ± 5"
    );
    assert!(
        (beside - base).abs() <= latency_tolerance_ms(),
        "the sibling cgroup's p50 changed: {beside:.3} ms vs {base:.3} ms"
    );
    // The application still sees the address it connected to, not the proxy's.
    let asked: SocketAddr = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let talk = tcp_talk_from(&target, asked, 0, 200);
    assert_eq!(
        talk.peer.as_deref(),
        Some(asked.to_string().as_str()),
        "{talk:?}"
    );
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert!(
        info.counters.affected >= 2 && info.counters.affected == info.counters.seen,
        "counters: {:?}",
        info.counters
    );

    block_on(daemon.client().recover(&fault.id)).unwrap();
    let after = redis.p50_ms(&target, 20);
    assert!(
        (after - base).abs() <= latency_tolerance_ms(),
        "after recover the p50 is {after:.3} ms (direct: {base:.3} ms)"
    );

    inject(&daemon, &target, latency, "60s");
    daemon.kill9();
    // The program links closed with the daemon: the next connect goes direct (a redirect to
    // the dead listener would be refused and redis-benchmark would print nothing).
    std::thread::sleep(Duration::from_millis(200));
    let crashed = redis.p50_ms(&target, 10);
    assert!(
        (crashed - base).abs() <= latency_tolerance_ms(),
        "after kill -9 the p50 is {crashed:.3} ms (direct: {base:.3} ms)"
    );
}

#[test]
fn ipv6_connects_are_proxied_too() {
    let daemon = Daemon::start();
    if !supported(&daemon, "tcp.latency") {
        return;
    }
    if TcpListener::bind("[::1]:0").is_err() {
        chaosd_integration::skip!("this host has no IPv6 loopback");
    }
    let redis = Redis::start_on("::1");
    let target = TestCgroup::new("proxy-v6");
    let base = redis.p50_ms(&target, 10);
    let fault = inject(
        &daemon,
        &target,
        FaultSpec::TcpLatency(TcpLatencyParams {
            latency: "100ms".parse().unwrap(),
            jitter: None,
            direction: Stream::Downstream,
            percent: 100.0,
            filter: NetFilter {
                dst: Some("::1/128".parse().unwrap()),
                ..port_filter(redis.port)
            },
        }),
        "60s",
    );
    let slowed = redis.p50_ms(&target, 10);
    eprintln!("redis over ::1 PING p50: {base:.3} ms direct, {slowed:.3} ms under 100ms");
    assert!(
        (slowed - base - 100.0).abs() <= latency_tolerance_ms(),
        "IPv6 p50 {slowed:.3} ms under 100 ms latency, {base:.3} ms without"
    );
    let asked: SocketAddr = format!("[::1]:{}", redis.port).parse().unwrap();
    let talk = tcp_talk_from(&target, asked, 0, 200);
    assert_eq!(talk.peer, Some(asked.to_string()), "{talk:?}");
    block_on(daemon.client().recover(&fault.id)).unwrap();

    let down = inject(
        &daemon,
        &target,
        FaultSpec::TcpDown(TcpDownParams {
            percent: 100.0,
            filter: port_filter(redis.port),
        }),
        "60s",
    );
    let refused = tcp_talk_from(&target, asked, 0, 200);
    assert_eq!(refused.connect_errno, Some(ECONNREFUSED), "{refused:?}");
    block_on(daemon.client().recover(&down.id)).unwrap();
}

/// A dual-stack (AF_INET6) socket's connect to an IPv4-mapped address (`::ffff:127.0.0.1`, as
/// Java and Node make them) is an IPv4 connect: an IPv4 rule takes it, and getpeername shows
/// the mapped address it asked for.
#[test]
fn ipv4_mapped_connects_of_dual_stack_sockets_are_proxied() {
    let daemon = Daemon::start();
    if !supported(&daemon, "tcp.latency") {
        return;
    }
    if TcpListener::bind("[::1]:0").is_err() {
        chaosd_integration::skip!("this host has no IPv6 loopback");
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    serve(listener, 10, false);
    let target = TestCgroup::new("proxy-mapped");
    let asked: SocketAddr = format!("[::ffff:127.0.0.1]:{}", server.port())
        .parse()
        .unwrap();
    let direct = tcp_talk_from(&target, asked, 0, 2000);
    assert_eq!(direct.received, 10, "{direct:?}");
    let fault = inject(
        &daemon,
        &target,
        FaultSpec::TcpLatency(TcpLatencyParams {
            latency: "300ms".parse().unwrap(),
            jitter: None,
            direction: Stream::Downstream,
            percent: 100.0,
            filter: NetFilter {
                dst: Some("127.0.0.1/32".parse().unwrap()),
                ..port_filter(server.port())
            },
        }),
        "60s",
    );
    let slowed = tcp_talk_from(&target, asked, 0, 2000);
    eprintln!(
        "mapped connect: {} ms direct, {} ms under 300ms latency",
        direct.elapsed_ms, slowed.elapsed_ms
    );
    assert_eq!(slowed.received, 10, "{slowed:?}");
    assert_eq!(slowed.peer, Some(asked.to_string()), "{slowed:?}");
    assert!(
        slowed.elapsed_ms >= 300 && slowed.elapsed_ms >= direct.elapsed_ms + 250,
        "the mapped connect was not delayed: {slowed:?} vs {direct:?}"
    );
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert_eq!(info.counters.affected, 1, "{:?}", info.counters);
    block_on(daemon.client().recover(&fault.id)).unwrap();
    let after = tcp_talk_from(&target, asked, 0, 2000);
    assert!(
        after.elapsed_ms < 250,
        "still delayed after recover: {after:?}"
    );
}

/// Loopback TCP listeners in `ns` (`/proc/thread-self/net/tcp{,6}` read from a thread in it).
fn loopback_listeners(ns: &Netns) -> Vec<String> {
    ns.run(|| {
        let mut found = Vec::new();
        for (file, loopback) in [
            ("tcp", "0100007F:"),
            ("tcp6", "00000000000000000000000001000000:"),
        ] {
            let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))?;
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() > 3 && f[3] == "0A" && f[1].starts_with(loopback) {
                    found.push(f[1].to_string());
                }
            }
        }
        Ok(found)
    })
    .unwrap()
}

/// `tcp-talk` from a process in `cg` inside `ns`.
fn tcp_talk_in(ns: &Netns, cg: &TestCgroup, to: SocketAddr, read_ms: u64) -> TcpTalk {
    let mut cmd = Command::new(helper_bin());
    cmd.args(["tcp-talk", "--to", &to.to_string(), "--send", "0"])
        .args(["--read-ms", &read_ms.to_string()])
        .stdout(Stdio::piped());
    let out = spawn_in(&mut cmd, ns, Some(cg)).wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A target whose processes are in another network namespace (as a container's are) gets a
/// listener of chaosd's inside that namespace, on the port chaosd listens on at home; the
/// upstream connection is made from that namespace too, so a server only it can reach is
/// reached. A sibling cgroup in the same namespace is unchanged; after recover the listener
/// is gone and connects go direct.
#[test]
fn a_target_in_another_network_namespace_is_proxied_there() {
    let daemon = Daemon::start();
    if !supported(&daemon, "tcp.latency") {
        return;
    }
    let pair = NetnsPair::new();
    let redis = Redis::start_across(&pair);
    let (target, sibling) = (TestCgroup::new("proxy-ns"), TestCgroup::new("proxy-ns-sib"));
    // The target has a process in namespace a when the fault is applied.
    let mut sleeper = Command::new("sleep");
    sleeper.arg("120");
    let _held = KillOnDrop(spawn_in(&mut sleeper, &pair.a.netns, Some(&target)));
    let base = redis.p50_ms(&target, 20);
    let fault = inject(
        &daemon,
        &target,
        FaultSpec::TcpLatency(TcpLatencyParams {
            latency: "100ms".parse().unwrap(),
            jitter: None,
            direction: Stream::Downstream,
            percent: 100.0,
            filter: NetFilter {
                dst: Some(format!("{}/32", pair.b.v4).parse().unwrap()),
                ..port_filter(redis.port)
            },
        }),
        "60s",
    );
    let listening = loopback_listeners(&pair.a.netns);
    assert!(
        !listening.is_empty(),
        "no listener of chaosd's in the target's namespace"
    );
    let slowed = redis.p50_ms(&target, 20);
    let beside = redis.p50_ms(&sibling, 20);
    eprintln!(
        "redis across namespaces PING p50: {base:.3} ms direct, {slowed:.3} ms under 100ms, sibling {beside:.3} ms"
    );
    assert!(
        (slowed - base - 100.0).abs() <= latency_tolerance_ms(),
        "p50 {slowed:.3} ms under 100 ms latency in another namespace, {base:.3} ms without"
    );
    assert!(
        (beside - base).abs() <= latency_tolerance_ms(),
        "the sibling's p50 changed: {beside:.3} ms vs {base:.3} ms"
    );
    let asked = SocketAddr::from((pair.b.v4, redis.port));
    let talk = tcp_talk_in(&pair.a.netns, &target, asked, 200);
    assert_eq!(talk.peer, Some(asked.to_string()), "{talk:?}");
    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_eq!(
        loopback_listeners(&pair.a.netns),
        Vec::<String>::new(),
        "chaosd's listener outlived the fault in the target's namespace"
    );
    let after = redis.p50_ms(&target, 20);
    assert!(
        (after - base).abs() <= latency_tolerance_ms(),
        "after recover the p50 is {after:.3} ms (direct: {base:.3} ms)"
    );
}

/// Servers outside the targets: `sender` writes 10,000 bytes and closes; `holder` writes 10
/// bytes and keeps the connection until the client closes it; `bulk` writes 250,000 bytes.
struct Servers {
    sender: SocketAddr,
    holder: SocketAddr,
    bulk: SocketAddr,
}

const BULK: usize = 250_000;

fn serve(listener: TcpListener, bytes: usize, hold: bool) {
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let _ = conn.write_all(&vec![b'd'; bytes]);
                if hold {
                    let mut sink = Vec::new();
                    let _ = conn.read_to_end(&mut sink);
                }
            });
        }
    });
}

impl Servers {
    fn start() -> Servers {
        let bind = || TcpListener::bind("127.0.0.1:0").unwrap();
        let (s, h, b) = (bind(), bind(), bind());
        let servers = Servers {
            sender: s.local_addr().unwrap(),
            holder: h.local_addr().unwrap(),
            bulk: b.local_addr().unwrap(),
        };
        serve(s, 10_000, false);
        serve(h, 10, true);
        serve(b, BULK, false);
        servers
    }
}

#[test]
fn down_reset_limit_and_timeout_seen_from_a_plain_client() {
    let daemon = Daemon::start();
    if !supported(&daemon, "tcp.down") {
        return;
    }
    let servers = Servers::start();
    let (target, sibling) = (
        TestCgroup::new("proxy-plain"),
        TestCgroup::new("proxy-plain-sib"),
    );
    let direct = tcp_talk_from(&target, servers.sender, 0, 3_000);
    assert_eq!(
        (direct.received, direct.end.as_str()),
        (10_000, "eof"),
        "{direct:?}"
    );

    // down: refused in the target, not beside it; after recover the connect goes through.
    let down = inject(
        &daemon,
        &target,
        FaultSpec::TcpDown(TcpDownParams {
            percent: 100.0,
            filter: port_filter(servers.sender.port()),
        }),
        "60s",
    );
    let refused = tcp_talk_from(&target, servers.sender, 0, 3_000);
    assert_eq!(refused.connect_errno, Some(ECONNREFUSED), "{refused:?}");
    let beside = tcp_talk_from(&sibling, servers.sender, 0, 3_000);
    assert_eq!(
        beside.received, 10_000,
        "the sibling was affected: {beside:?}"
    );
    let other_port = tcp_talk_from(&target, servers.holder, 0, 300);
    assert_eq!(
        other_port.received, 10,
        "--port did not limit tcp.down: {other_port:?}"
    );
    block_on(daemon.client().recover(&down.id)).unwrap();
    let back = tcp_talk_from(&target, servers.sender, 0, 3_000);
    assert_eq!(back.received, 10_000, "after recover: {back:?}");

    // limit-data: the client gets exactly 1,000 bytes, then the close; getpeername is the server.
    let limit = inject(
        &daemon,
        &target,
        FaultSpec::TcpLimitData(TcpLimitDataParams {
            bytes: "1000".parse().unwrap(),
            direction: Stream::Downstream,
            percent: 100.0,
            filter: port_filter(servers.sender.port()),
        }),
        "60s",
    );
    let limited = tcp_talk_from(&target, servers.sender, 0, 3_000);
    assert_eq!(
        (limited.received, limited.end.as_str()),
        (1_000, "eof"),
        "{limited:?}"
    );
    assert_eq!(
        limited.peer,
        Some(servers.sender.to_string()),
        "{limited:?}"
    );
    block_on(daemon.client().recover(&limit.id)).unwrap();

    // A connection made before a fault is left alone: one opened now and held through an
    // immediate reset-peer ends by its own read timeout, while a new one is reset.
    let (old, at_once) = std::thread::scope(|scope| {
        let before = scope.spawn(|| tcp_talk_from(&target, servers.holder, 0, 1_500));
        std::thread::sleep(Duration::from_millis(300));
        let at_once = inject(
            &daemon,
            &target,
            FaultSpec::TcpResetPeer(TcpResetPeerParams {
                after: None,
                percent: 100.0,
                filter: port_filter(servers.holder.port()),
            }),
            "60s",
        );
        let fresh = tcp_talk_from(&target, servers.holder, 0, 1_500);
        // The reset can come before the client's connect() returns: then connect() itself
        // fails with ECONNRESET, as it would for a real client under load.
        let reset = fresh.end == format!("errno {}", libc::ECONNRESET)
            || fresh.connect_errno == Some(libc::ECONNRESET);
        assert!(reset, "a new connect was not reset: {fresh:?}");
        (before.join().unwrap(), at_once)
    });
    assert_eq!(
        (old.received, old.end.as_str()),
        (10, "timeout"),
        "the connection made before the fault was touched: {old:?}"
    );
    block_on(daemon.client().recover(&at_once.id)).unwrap();

    // reset-peer after 500 ms: the held connection gets its 10 bytes, then ECONNRESET.
    let reset = inject(
        &daemon,
        &target,
        FaultSpec::TcpResetPeer(TcpResetPeerParams {
            after: Some("500ms".parse().unwrap()),
            percent: 100.0,
            filter: port_filter(servers.holder.port()),
        }),
        "60s",
    );
    let was_reset = tcp_talk_from(&target, servers.holder, 0, 5_000);
    assert_eq!(
        was_reset.end, "errno 104",
        "expected ECONNRESET: {was_reset:?}"
    );
    assert!(
        (400..3_000).contains(&was_reset.elapsed_ms) && was_reset.received == 10,
        "the reset came after {} ms with {} bytes read, expected ~500 ms and 10",
        was_reset.elapsed_ms,
        was_reset.received
    );
    block_on(daemon.client().recover(&reset.id)).unwrap();

    // timeout without --after: nothing arrives, and the read ends when the fault does (2 s).
    inject(
        &daemon,
        &target,
        FaultSpec::TcpTimeout(TcpTimeoutParams {
            after: None,
            direction: Stream::Downstream,
            percent: 100.0,
            filter: port_filter(servers.holder.port()),
        }),
        "2s",
    );
    let timed_out = tcp_talk_from(&target, servers.holder, 0, 10_000);
    assert_eq!(
        (timed_out.received, timed_out.end.as_str()),
        (0, "eof"),
        "{timed_out:?}"
    );
    assert!(
        timed_out.elapsed_ms >= 1_200,
        "the read ended after {} ms, before the 2 s fault did",
        timed_out.elapsed_ms
    );
}

#[test]
fn bandwidth_slicer_and_slow_close_seen_from_a_plain_client() {
    let daemon = Daemon::start();
    if !supported(&daemon, "tcp.bandwidth") {
        return;
    }
    let servers = Servers::start();
    let (target, sibling) = (
        TestCgroup::new("proxy-shape"),
        TestCgroup::new("proxy-shape-sib"),
    );

    // bandwidth 1mbit downstream: 250,000 bytes take 2 s ± 5 % in the target, not beside it.
    let cap = inject(
        &daemon,
        &target,
        FaultSpec::TcpBandwidth(TcpBandwidthParams {
            rate: "1mbit".parse().unwrap(),
            direction: Stream::Downstream,
            percent: 100.0,
            filter: port_filter(servers.bulk.port()),
        }),
        "60s",
    );
    let capped = tcp_talk_from(&target, servers.bulk, 0, 5_000);
    assert_eq!(capped.received, BULK, "{capped:?}");
    let rate = BULK as f64 * 8.0 / (capped.elapsed_ms as f64 / 1000.0);
    eprintln!(
        "tcp.bandwidth 1mbit: {BULK} bytes in {} ms = {rate:.0} bit/s",
        capped.elapsed_ms
    );
    assert!(
        rate_within_cap(rate / 1e6),
        "downloaded at {rate:.0} bit/s under a 1 mbit/s cap ({} ms)",
        capped.elapsed_ms
    );
    let free = tcp_talk_from(&sibling, servers.bulk, 0, 5_000);
    assert!(
        free.received == BULK && free.elapsed_ms < 1_000,
        "the sibling was capped: {free:?}"
    );
    block_on(daemon.client().recover(&cap.id)).unwrap();

    // slicer: the 10,000 bytes arrive in many small reads instead of a few big ones.
    let whole = tcp_talk_from(&target, servers.sender, 0, 3_000);
    let slicer = inject(
        &daemon,
        &target,
        FaultSpec::TcpSlicer(TcpSlicerParams {
            size: "100".parse().unwrap(),
            variation: Some("20".parse().unwrap()),
            delay: Some("2ms".parse().unwrap()),
            direction: Stream::Downstream,
            percent: 100.0,
            filter: port_filter(servers.sender.port()),
        }),
        "60s",
    );
    let sliced = tcp_talk_from(&target, servers.sender, 0, 3_000);
    assert_eq!(sliced.received, 10_000, "{sliced:?}");
    assert!(
        sliced.reads >= 50 && sliced.reads > 5 * whole.reads,
        "slices of ~100 bytes came in {} reads (without the slicer: {})",
        sliced.reads,
        whole.reads
    );
    block_on(daemon.client().recover(&slicer.id)).unwrap();

    // slow-close 1 s downstream: the server's close reaches the client a second late.
    inject(
        &daemon,
        &target,
        FaultSpec::TcpSlowClose(TcpSlowCloseParams {
            delay: "1s".parse().unwrap(),
            direction: Stream::Downstream,
            percent: 100.0,
            filter: port_filter(servers.sender.port()),
        }),
        "60s",
    );
    let slow = tcp_talk_from(&target, servers.sender, 0, 5_000);
    assert_eq!(
        (slow.received, slow.end.as_str()),
        (10_000, "eof"),
        "{slow:?}"
    );
    assert!(
        (900..2_500).contains(&slow.elapsed_ms),
        "the close came after {} ms, expected about 1 s",
        slow.elapsed_ms
    );
}

#[test]
fn bad_proxy_requests_are_refused_with_the_field() {
    let daemon = Daemon::start();
    let cg = TestCgroup::new("proxy-bad");
    let cases = [
        (
            r#"{"kind": "tcp.latency", "params": {"latency": "10ms", "jitter": "20ms"}}"#,
            "jitter",
        ),
        (
            r#"{"kind": "tcp.latency", "params": {"latency": "10ms", "filter": {"src": "10.0.0.1"}}}"#,
            "src",
        ),
        (
            r#"{"kind": "tcp.down", "params": {"filter": {"proto": "udp"}}}"#,
            "TCP",
        ),
        (
            r#"{"kind": "tcp.limit_data", "params": {"bytes": "0"}}"#,
            "bytes",
        ),
        (
            r#"{"kind": "tcp.timeout", "params": {"direction": "sideways"}}"#,
            "sideways",
        ),
        (
            r#"{"kind": "tcp.slicer", "params": {"size": "10", "variation": "10"}}"#,
            "variation",
        ),
        (
            r#"{"kind": "tcp.bandwidth", "params": {"rate": "fast"}}"#,
            "rate",
        ),
    ];
    for (fault, needle) in cases {
        let (status, msg) = daemon.post_fault_text(fault, cg.rel(), "10s");
        assert_eq!(status, 400, "{fault}: {msg}");
        assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
    }
    assert!(block_on(daemon.client().list(true)).unwrap().is_empty());
}
