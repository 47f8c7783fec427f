//! DNS faults (`dns.*`), checked from outside with real resolvers in a target cgroup: glibc
//! (`getent hosts`, Python's `socket.getaddrinfo`), `dig` and Go's pure-Go resolver, against
//! dnsmasq serving a few names in a network namespace of the test's own, reached over a veth.
//!
//! The target's resolver config is a test resolv.conf bind-mounted over /etc/resolv.conf in a
//! private mount namespace of the client process only; the host's file is never touched.

use std::{
    ffi::CString,
    net::Ipv4Addr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use chaosd::faults::net::netns::Netns;
use chaosd::{
    api::{DnsAnswerParams, DnsDelayParams, DnsErrorParams, DnsTimeoutParams, FaultSpec},
    host::cgroup::spawn_in_cgroup,
};
use chaosd_integration::{
    Daemon, TestCgroup, block_on, inject,
    netns::{HostLinked, KillOnDrop, NetnsPair, spawn_in},
    request, unsupported_reason, wait_for,
};

/// What dnsmasq serves (under `.test`; other `.test` names are NXDOMAIN).
const DB: (&str, &str) = ("db.svc.test", "10.0.0.11");
const API: (&str, &str) = ("api.svc.test", "10.0.0.12");
const WEB: (&str, &str) = ("web.test", "10.0.0.20");
/// Six 250-byte TXT records: more than a 512-byte UDP answer holds.
const BIG: &str = "big.test";
const BIG_RECORDS: usize = 6;

/// dnsmasq in a namespace of its own, on a veth to the host's namespace.
struct DnsServer {
    link: HostLinked,
    _dnsmasq: KillOnDrop,
}

impl DnsServer {
    fn start() -> DnsServer {
        let link = HostLinked::new();
        let addr = link.far.v4;
        let txt = "x".repeat(250);
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--pid-file",
            "--user=root",
            "--bind-interfaces",
            "--port=53",
            "--local=/test/",
        ])
        .arg(format!("--listen-address={addr}"))
        .arg(format!("--host-record={},{}", DB.0, DB.1))
        .arg(format!("--host-record={},{}", API.0, API.1))
        .arg(format!("--host-record={},{}", WEB.0, WEB.1))
        .args((0..BIG_RECORDS).map(|i| format!("--txt-record={BIG},{i}{txt}")))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = KillOnDrop(spawn_in(&mut cmd, &link.far.netns, None));
        let server = DnsServer {
            link,
            _dnsmasq: child,
        };
        let up = wait_for(Duration::from_secs(10), || {
            let out = Command::new("dig")
                .args(["+short", "+tries=1", "+time=1"])
                .arg(format!("@{addr}"))
                .arg(WEB.0)
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains(WEB.1)
                .then_some(())
        });
        assert!(up.is_some(), "dnsmasq did not answer on {addr}");
        server
    }

    fn addr(&self) -> Ipv4Addr {
        self.link.far.v4
    }
}

/// The server, a resolv.conf naming it, a target cgroup and its sibling.
struct Scene {
    server: DnsServer,
    resolv: tempfile::NamedTempFile,
    target: TestCgroup,
    sibling: TestCgroup,
    /// Clients run in the server's namespace (another than chaosd's), not the test's.
    clients_in_server_netns: bool,
}

impl Scene {
    fn new(label: &str) -> Scene {
        let server = DnsServer::start();
        let mut resolv = tempfile::NamedTempFile::new().unwrap();
        // One try of one second: the timeout test's clients give up quickly.
        std::io::Write::write_all(
            &mut resolv,
            format!(
                "nameserver {}\noptions timeout:1 attempts:1\n",
                server.addr()
            )
            .as_bytes(),
        )
        .unwrap();
        Scene {
            server,
            resolv,
            target: TestCgroup::new(&format!("dns-{label}")),
            sibling: TestCgroup::new(&format!("dns-{label}-sib")),
            clients_in_server_netns: false,
        }
    }
}

/// What a client made of one name.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Res {
    Addrs(Vec<String>),
    NotFound,
    /// Any other failure, as the client words it (SERVFAIL, a timeout, ...).
    Fail(String),
}

impl Res {
    fn has(&self, ip: &str) -> bool {
        matches!(self, Res::Addrs(a) if a.iter().any(|x| x == ip))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Getent,
    Python,
    Dig,
    Go,
}

const PYTHON: &str = r#"
import socket, sys, time
t = time.monotonic()
try:
    r = socket.getaddrinfo(sys.argv[1], None, socket.AF_INET, socket.SOCK_STREAM)
    print("ok", " ".join(sorted({a[4][0] for a in r})))
except socket.gaierror as e:
    kind = {socket.EAI_NONAME: "notfound", socket.EAI_AGAIN: "again"}.get(e.errno, "fail")
    print(kind, e.errno, e)
print("elapsed", time.monotonic() - t)
"#;

/// Sends one A query with an unconnected socket (`sendto`, the sendmsg4 path; a dual-stack
/// IPv6 socket's sendmsg6 for an IPv4-mapped server) and prints the reply's source address
/// and port, its id and its rcode.
const PYTHON_SENDTO: &str = r#"
import socket, struct, sys
srv, name = sys.argv[1], sys.argv[2]
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
q += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET6 if ":" in srv else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(q, (srv, 53))
d, a = s.recvfrom(4096)
print(a[0], a[1], struct.unpack(">H", d[:2])[0], d[3] & 15)
"#;

const GO: &str = r#"package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
)

func main() {
	r := &net.Resolver{PreferGo: true}
	addrs, err := r.LookupHost(context.Background(), os.Args[1])
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			fmt.Println("notfound")
			return
		}
		fmt.Println("fail", err)
		return
	}
	sort.Strings(addrs)
	fmt.Println("ok", strings.Join(addrs, " "))
}
"#;

/// The Go resolver program, built once per run (None, with the reason printed, without go).
fn go_program() -> Option<&'static Path> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if Command::new("go").arg("version").output().is_err() {
                eprintln!("go is not installed (golang-go): the Go resolver checks are skipped");
                return None;
            }
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dns-go");
            std::fs::create_dir_all(&dir).unwrap();
            let src = dir.join("main.go");
            let bin = dir.join("goresolve");
            let same = std::fs::read_to_string(&src).is_ok_and(|s| s == GO);
            if !same || !bin.exists() {
                std::fs::write(&src, GO).unwrap();
                let out = Command::new("go")
                    .args(["build", "-o"])
                    .arg(&bin)
                    .arg(&src)
                    .env("GOCACHE", dir.join("cache"))
                    .env("GOPATH", dir.join("gopath"))
                    .env("HOME", &dir)
                    .env("CGO_ENABLED", "0")
                    .output()
                    .expect("running go build");
                assert!(
                    out.status.success(),
                    "go build: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Some(bin)
        })
        .as_deref()
}

fn clients() -> Vec<Client> {
    let mut c = vec![Client::Getent, Client::Python, Client::Dig];
    if go_program().is_some() {
        c.push(Client::Go);
    }
    c
}

/// Runs `program args` in `cg` (and in `netns`, if given), in a private mount namespace where
/// /etc/resolv.conf is `resolv`.
fn run_in(
    cg: &TestCgroup,
    netns: Option<&Netns>,
    resolv: &Path,
    program: &Path,
    args: &[&str],
) -> (Output, Duration) {
    let source = CString::new(resolv.as_os_str().as_encoded_bytes()).unwrap();
    let target = CString::new("/etc/resolv.conf").unwrap();
    let root = CString::new("/").unwrap();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("GODEBUG", "netdns=go")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only unshare(2) and mount(2), async-signal-safe; the
    // strings were made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                || libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let child = match netns {
        Some(ns) => spawn_in(&mut cmd, ns, Some(cg)),
        None => spawn_in_cgroup(&mut cmd, cg.dir()).expect("spawning a client"),
    };
    let out = child.wait_with_output().expect("waiting for a client");
    (out, started.elapsed())
}

/// `client` resolving `name` (A records, or everything the client asks for) in `cg`.
fn resolve(scene: &Scene, cg: &TestCgroup, client: Client, name: &str) -> (Res, Duration) {
    let resolv = scene.resolv.path();
    let ns = scene
        .clients_in_server_netns
        .then_some(&scene.server.link.far.netns);
    let run_in = |cg, resolv, program, args| run_in(cg, ns, resolv, program, args);
    let (out, took) = match client {
        Client::Getent => run_in(cg, resolv, Path::new("getent"), &["hosts", name]),
        Client::Python => run_in(
            cg,
            resolv,
            Path::new("/usr/bin/python3"),
            &["-c", PYTHON, name],
        ),
        Client::Dig => run_in(
            cg,
            resolv,
            Path::new("dig"),
            &[
                "+tries=1",
                "+time=1",
                "+noall",
                "+comments",
                "+answer",
                name,
                "A",
            ],
        ),
        Client::Go => run_in(cg, resolv, go_program().unwrap(), &[name]),
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let res = match client {
        Client::Getent => match out.status.code() {
            Some(0) => Res::Addrs(
                text.lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .map(str::to_string)
                    .collect(),
            ),
            Some(2) => Res::NotFound,
            other => Res::Fail(format!("getent exit {other:?}")),
        },
        Client::Python | Client::Go => {
            let first = text.lines().next().unwrap_or_default();
            match first.split_whitespace().next() {
                Some("ok") => Res::Addrs(
                    first
                        .split_whitespace()
                        .skip(1)
                        .map(str::to_string)
                        .collect(),
                ),
                Some("notfound") => Res::NotFound,
                _ => Res::Fail(first.to_string()),
            }
        }
        Client::Dig => {
            let status = text
                .split("status: ")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .unwrap_or("");
            match status {
                "NOERROR" => Res::Addrs(
                    text.lines()
                        .filter(|l| !l.starts_with(';') && l.contains("\tA\t"))
                        .filter_map(|l| l.split_whitespace().last())
                        .map(str::to_string)
                        .collect(),
                ),
                "NXDOMAIN" => Res::NotFound,
                "" if text.contains("timed out") => Res::Fail("timed out".into()),
                "" => Res::Fail(text.lines().last().unwrap_or_default().to_string()),
                other => Res::Fail(other.to_string()),
            }
        }
    };
    (res, took)
}

/// Skips where the kernel refuses the DNS kinds (with the reason); on the dev host they must
/// load: a refusal there is a bug, not a skip.
fn supported(daemon: &Daemon) -> bool {
    let Some(reason) = unsupported_reason(daemon, "dns.error") else {
        return true;
    };
    assert!(
        std::env::var_os("CHAOSD_VM").is_some(),
        "dns.error is refused on the dev host: {reason}"
    );
    chaosd_integration::record_skip(&format!("dns.* is unsupported on this kernel: {reason}"));
    false
}

fn error_fault(rcode: &str, domains: &[&str]) -> FaultSpec {
    FaultSpec::DnsError(DnsErrorParams {
        rcode: rcode.parse().unwrap(),
        domains: domains.iter().map(|d| d.parse().unwrap()).collect(),
        types: vec![],
        percent: 100.0,
    })
}

/// Every client in `cg` resolves every name of `names` to its address.
fn assert_all_resolve(scene: &Scene, cg: &TestCgroup, names: &[(&str, &str)], when: &str) {
    for client in clients() {
        for (name, ip) in names {
            let (res, _) = resolve(scene, cg, client, name);
            assert!(res.has(ip), "{when}: {client:?} {name}: {res:?}");
        }
    }
}

#[test]
fn nxdomain_for_a_wildcard_is_not_found_for_every_client_and_spares_other_names_and_the_sibling() {
    let daemon = Daemon::start();
    if !supported(&daemon) {
        return;
    }
    let scene = Scene::new("nx");
    assert_all_resolve(&scene, &scene.target, &[DB, API, WEB], "before the fault");
    let fault = inject(
        &daemon,
        &scene.target,
        error_fault("NXDOMAIN", &["*.svc.test"]),
        "2m",
    );
    for client in clients() {
        for name in [DB.0, API.0] {
            let (res, _) = resolve(&scene, &scene.target, client, name);
            assert_eq!(res, Res::NotFound, "{client:?} {name} under the fault");
        }
        let (res, _) = resolve(&scene, &scene.target, client, WEB.0);
        assert!(res.has(WEB.1), "{client:?} {}: {res:?}", WEB.0);
        let (res, _) = resolve(&scene, &scene.sibling, client, DB.0);
        assert!(res.has(DB.1), "sibling {client:?}: {res:?}");
    }
    // An unconnected socket (sendto: the sendmsg4 path) gets the fault's answer, from the
    // server's address and port (recvmsg4), with its query id.
    let server = scene.server.addr().to_string();
    let (out, _) = run_in(
        &scene.target,
        None,
        scene.resolv.path(),
        Path::new("/usr/bin/python3"),
        &["-c", PYTHON_SENDTO, &server, DB.0],
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        line,
        format!("{server} 53 16962 3"),
        "sendto client: {out:?}"
    );
    let (out, _) = run_in(
        &scene.target,
        None,
        scene.resolv.path(),
        Path::new("/usr/bin/python3"),
        &["-c", PYTHON_SENDTO, &server, WEB.0],
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        line,
        format!("{server} 53 16962 0"),
        "sendto client: {out:?}"
    );
    // A dual-stack socket sending to the IPv4-mapped server address: an IPv4 query to the
    // resolver, whose answer shows the mapped address it was sent to.
    let mapped = format!("::ffff:{server}");
    for (name, rcode) in [(DB.0, 3), (WEB.0, 0)] {
        let (out, _) = run_in(
            &scene.target,
            None,
            scene.resolv.path(),
            Path::new("/usr/bin/python3"),
            &["-c", PYTHON_SENDTO, &mapped, name],
        );
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            line,
            format!("{mapped} 53 16962 {rcode}"),
            "mapped sendto client, {name}: {out:?}"
        );
    }
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    eprintln!("counters: {:?}", info.counters);
    assert!(
        info.counters.seen >= 8 && info.counters.affected == info.counters.seen,
        "counters: {:?}",
        info.counters
    );
    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_all_resolve(&scene, &scene.target, &[DB, API, WEB], "after recover");
}

#[test]
fn servfail_timeout_and_a_wrong_answer_as_each_client_sees_them() {
    let daemon = Daemon::start();
    if !supported(&daemon) {
        return;
    }
    let scene = Scene::new("codes");

    let fault = inject(
        &daemon,
        &scene.target,
        error_fault("SERVFAIL", &[DB.0]),
        "2m",
    );
    for client in clients() {
        let (res, _) = resolve(&scene, &scene.target, client, DB.0);
        eprintln!("SERVFAIL: {client:?}: {res:?}");
        match client {
            // glibc's getent only says "not found" for any failure.
            Client::Getent => assert_eq!(res, Res::NotFound),
            Client::Python => assert!(
                matches!(&res, Res::Fail(f) if f.starts_with("again")),
                "{res:?}"
            ),
            Client::Dig => assert_eq!(res, Res::Fail("SERVFAIL".into())),
            Client::Go => assert!(
                matches!(&res, Res::Fail(f) if f.contains("server misbehaving")),
                "{res:?}"
            ),
        }
        let (res, _) = resolve(&scene, &scene.target, client, API.0);
        assert!(res.has(API.1), "{client:?} {}: {res:?}", API.0);
        let (res, _) = resolve(&scene, &scene.sibling, client, DB.0);
        assert!(res.has(DB.1), "sibling {client:?}: {res:?}");
    }
    block_on(daemon.client().recover(&fault.id)).unwrap();

    let timeout = FaultSpec::DnsTimeout(DnsTimeoutParams {
        domains: vec![DB.0.parse().unwrap()],
        types: vec![],
        percent: 100.0,
    });
    let fault = inject(&daemon, &scene.target, timeout, "2m");
    for client in clients() {
        let (res, took) = resolve(&scene, &scene.target, client, DB.0);
        let timed_out_after = took;
        eprintln!("timeout: {client:?}: {res:?} after {took:?}");
        assert!(
            !res.has(DB.1),
            "{client:?} resolved under the timeout: {res:?}"
        );
        // resolv.conf and dig ask for one try of one second.
        assert!(
            took >= Duration::from_millis(900),
            "{client:?} gave up after {took:?}"
        );
        match client {
            Client::Dig => assert_eq!(res, Res::Fail("timed out".into())),
            Client::Python => assert!(
                matches!(&res, Res::Fail(f) if f.starts_with("again")),
                "{res:?}"
            ),
            Client::Go => assert!(
                matches!(&res, Res::Fail(f) if f.contains("timeout")),
                "{res:?}"
            ),
            Client::Getent => assert_eq!(res, Res::NotFound),
        }
        // Another name is not held back: it resolves, and sooner than the timed-out one
        // gave up (both include the client's own start, a second of it under emulation).
        let (res, took) = resolve(&scene, &scene.target, client, API.0);
        assert!(
            res.has(API.1) && took < timed_out_after,
            "{client:?}: {res:?} after {took:?}, the timed-out query after {timed_out_after:?}"
        );
    }
    block_on(daemon.client().recover(&fault.id)).unwrap();

    let answer = FaultSpec::DnsAnswer(DnsAnswerParams {
        ips: vec!["10.9.9.9".parse().unwrap()],
        ttl: 0,
        domains: vec!["*.svc.test".parse().unwrap()],
        types: vec![],
        percent: 100.0,
    });
    let fault = inject(&daemon, &scene.target, answer, "2m");
    for client in clients() {
        let (res, _) = resolve(&scene, &scene.target, client, DB.0);
        assert_eq!(
            res,
            Res::Addrs(vec!["10.9.9.9".into()]),
            "{client:?} wrong answer"
        );
        let (res, _) = resolve(&scene, &scene.target, client, WEB.0);
        assert!(res.has(WEB.1), "{client:?}: {res:?}");
        let (res, _) = resolve(&scene, &scene.sibling, client, DB.0);
        assert!(res.has(DB.1), "sibling {client:?}: {res:?}");
    }
    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_all_resolve(&scene, &scene.target, &[DB, API, WEB], "after recover");
}

/// dig's own "Query time" of one query for `name`, in ms.
fn dig_query_ms(scene: &Scene, cg: &TestCgroup, name: &str) -> f64 {
    let (out, _) = run_in(
        cg,
        None,
        scene.resolv.path(),
        Path::new("dig"),
        &["+tries=1", "+time=3", name, "A"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let ms = text
        .split("Query time: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    ms.unwrap_or_else(|| panic!("no query time from dig: {text}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn delay_answers_late_within_ten_percent() {
    let daemon = Daemon::start();
    if !supported(&daemon) {
        return;
    }
    let scene = Scene::new("delay");
    let delay_ms = 300.0;
    let fault = inject(
        &daemon,
        &scene.target,
        FaultSpec::DnsDelay(DnsDelayParams {
            delay: "300ms".parse().unwrap(),
            domains: vec!["*.svc.test".parse().unwrap()],
            types: vec![],
            percent: 100.0,
        }),
        "2m",
    );
    let delayed = median(
        (0..7)
            .map(|_| dig_query_ms(&scene, &scene.target, DB.0))
            .collect(),
    );
    let other = median(
        (0..7)
            .map(|_| dig_query_ms(&scene, &scene.target, WEB.0))
            .collect(),
    );
    let sibling = median(
        (0..7)
            .map(|_| dig_query_ms(&scene, &scene.sibling, DB.0))
            .collect(),
    );
    eprintln!("dig query time: delayed {delayed} ms, other name {other} ms, sibling {sibling} ms");
    let tolerance = if std::env::var_os("CHAOSD_VM").is_some() {
        0.25
    } else {
        0.10
    };
    assert!(
        (delayed - delay_ms).abs() <= delay_ms * tolerance,
        "delayed query took {delayed} ms (wanted {delay_ms} ± {} %)",
        tolerance * 100.0
    );
    assert!(
        other < 50.0 && sibling < 50.0,
        "other {other} ms, sibling {sibling} ms"
    );
    // glibc answers late by the same (the time includes the process start).
    let (res, took) = resolve(&scene, &scene.target, Client::Python, DB.0);
    assert!(
        res.has(DB.1) && took >= Duration::from_millis(270),
        "{res:?} {took:?}"
    );
    block_on(daemon.client().recover(&fault.id)).unwrap();
}

#[test]
fn a_truncated_answer_falls_back_to_tcp_through_the_resolver() {
    let daemon = Daemon::start();
    if !supported(&daemon) {
        return;
    }
    let scene = Scene::new("tcp");
    let _fault = inject(
        &daemon,
        &scene.target,
        error_fault("NXDOMAIN", &["*.svc.test"]),
        "2m",
    );
    // Without EDNS the six TXT records do not fit in 512 bytes: the server truncates, dig
    // asks again over TCP (connect4 → the resolver's TCP side → forwarded over TCP).
    let (out, _) = run_in(
        &scene.target,
        None,
        scene.resolv.path(),
        Path::new("dig"),
        &["+noedns", "+tries=1", "+time=2", BIG, "TXT"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Truncated, retrying in TCP mode"), "{text}");
    assert!(text.contains("status: NOERROR"), "{text}");
    let records = text
        .lines()
        .filter(|l| l.starts_with(BIG) && l.contains("TXT"))
        .count();
    assert_eq!(records, BIG_RECORDS, "{text}");
    // Over TCP the fault applies too.
    let (out, _) = run_in(
        &scene.target,
        None,
        scene.resolv.path(),
        Path::new("dig"),
        &["+tcp", "+tries=1", "+time=2", DB.0, "A"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: NXDOMAIN"), "{text}");
    let (out, _) = run_in(
        &scene.target,
        None,
        scene.resolv.path(),
        Path::new("dig"),
        &["+tcp", "+short", "+tries=1", "+time=2", WEB.0, "A"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), WEB.1);
}

#[test]
fn resolution_goes_direct_within_a_second_of_kill_9() {
    let mut daemon = Daemon::start();
    if !supported(&daemon) {
        return;
    }
    let scene = Scene::new("kill");
    let _fault = inject(
        &daemon,
        &scene.target,
        error_fault("NXDOMAIN", &["*.svc.test"]),
        "10m",
    );
    let (res, _) = resolve(&scene, &scene.target, Client::Dig, DB.0);
    assert_eq!(res, Res::NotFound);
    daemon.kill9();
    let killed = Instant::now();
    let back = wait_for(Duration::from_secs(5), || {
        let (res, _) = resolve(&scene, &scene.target, Client::Dig, DB.0);
        res.has(DB.1).then(|| killed.elapsed())
    });
    let back = back.expect("resolution did not come back after kill -9");
    eprintln!("direct again {back:?} after kill -9");
    // The heartbeat goes stale after a second; each try runs dig, which under the VM
    // harness's emulation takes a good part of a second by itself.
    let limit = if std::env::var_os("CHAOSD_VM").is_some() {
        Duration::from_millis(2500)
    } else {
        Duration::from_secs(1)
    };
    assert!(back < limit, "direct only after {back:?}");
    assert_all_resolve(&scene, &scene.target, &[DB, WEB], "after kill -9");
}

/// Loopback UDP sockets in `ns` (`/proc/thread-self/net/udp{,6}` read from a thread in it):
/// the resolver's, while a fault serves that namespace.
fn loopback_udp_sockets(ns: &Netns) -> usize {
    ns.run(|| {
        let mut n = 0;
        for (file, loopback) in [
            ("udp", "0100007F:"),
            ("udp6", "00000000000000000000000001000000:"),
        ] {
            let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))?;
            n += text
                .lines()
                .skip(1)
                .filter(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|a| a.starts_with(loopback))
                })
                .count();
        }
        Ok(n)
    })
    .unwrap()
}

/// Targets in another network namespace (as a container's processes are) are served there:
/// chaosd's resolver listens inside that namespace and forwards from it, so every client
/// there sees the fault, names it does not take still resolve through the namespace's own
/// server, a sibling cgroup in the same namespace is untouched; after recover, and a moment
/// after `kill -9`, resolution goes direct, and no socket of chaosd's is left there.
#[test]
fn a_target_in_another_network_namespace_is_served_there() {
    let mut daemon = Daemon::start();
    if !supported(&daemon) {
        return;
    }
    let mut scene = Scene::new("ns");
    scene.clients_in_server_netns = true;
    let ns = scene.server.link.far.netns.try_clone().unwrap();
    let mut sleeper = Command::new("sleep");
    sleeper.arg("120");
    let _held = KillOnDrop(spawn_in(&mut sleeper, &ns, Some(&scene.target)));
    assert_all_resolve(&scene, &scene.target, &[DB, WEB], "before");
    assert_eq!(
        loopback_udp_sockets(&ns),
        0,
        "a loopback UDP socket before the fault"
    );
    let fault = inject(
        &daemon,
        &scene.target,
        error_fault("NXDOMAIN", &["*.svc.test"]),
        "60s",
    );
    assert!(
        loopback_udp_sockets(&ns) > 0,
        "no resolver socket in the target's namespace"
    );
    for client in clients() {
        let (res, _) = resolve(&scene, &scene.target, client, DB.0);
        assert_eq!(res, Res::NotFound, "{client:?} in the other namespace");
        let (res, _) = resolve(&scene, &scene.target, client, WEB.0);
        assert!(res.has(WEB.1), "{client:?} {}: {res:?}", WEB.0);
        let (res, _) = resolve(&scene, &scene.sibling, client, DB.0);
        assert!(res.has(DB.1), "sibling {client:?}: {res:?}");
    }
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    let n = clients().len() as u64;
    // getent asks for AAAA as well as A: at least one matching query per client.
    assert!(
        info.counters.seen >= n && info.counters.affected == info.counters.seen,
        "counters: {:?} for {n} clients",
        info.counters
    );
    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_eq!(
        loopback_udp_sockets(&ns),
        0,
        "the resolver outlived the fault there"
    );
    assert_all_resolve(&scene, &scene.target, &[DB, WEB], "after recover");

    inject(
        &daemon,
        &scene.target,
        error_fault("NXDOMAIN", &["*.svc.test"]),
        "10m",
    );
    assert_eq!(
        resolve(&scene, &scene.target, Client::Dig, DB.0).0,
        Res::NotFound
    );
    daemon.kill9();
    let back = wait_for(Duration::from_secs(5), || {
        resolve(&scene, &scene.target, Client::Dig, DB.0)
            .0
            .has(DB.1)
            .then_some(())
    });
    assert!(back.is_some(), "no direct resolution after kill -9");
    assert_eq!(
        loopback_udp_sockets(&ns),
        0,
        "a socket of chaosd's outlived it there"
    );
}

#[test]
fn bad_input_is_refused_with_clear_errors() {
    let daemon = Daemon::start();
    let cg = TestCgroup::new("dns-bad");
    let cases = [
        (
            r#"{"kind":"dns.error","params":{"rcode":"NXDOMAIN","domains":["*.*.svc.test"]}}"#,
            "only allowed as the first label",
        ),
        (
            r#"{"kind":"dns.error","params":{"rcode":"NXDOMAIN","domains":["db..test"]}}"#,
            "1 to 63 characters",
        ),
        (
            r#"{"kind":"dns.error","params":{"rcode":"NXDOMIAN"}}"#,
            "give NXDOMAIN, SERVFAIL, REFUSED",
        ),
        (
            r#"{"kind":"dns.answer","params":{"ips":["10.0.0.999"]}}"#,
            "expected an IPv4 or IPv6 address",
        ),
        (
            r#"{"kind":"dns.answer","params":{"ips":[]}}"#,
            "at least one address",
        ),
        (
            r#"{"kind":"dns.timeout","params":{"types":["BOGUS"]}}"#,
            "query type",
        ),
        (
            r#"{"kind":"dns.delay","params":{"delay":"2s","percent":0}}"#,
            "percent",
        ),
    ];
    for (fault, needle) in cases {
        let (status, body) = daemon.post_fault_text(fault, cg.rel(), "1m");
        assert_eq!(status, 400, "{fault}: {body}");
        assert!(body.contains(needle), "{fault}: {body} (wanted {needle:?})");
    }
    // A target in a namespace whose loopback is down cannot be served (a connect redirected
    // there would fail): refused, saying why, and nothing of the fault stays.
    if supported(&daemon) {
        let pair = NetnsPair::new();
        let bare = pair.a.netns.run(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            Ok(std::fs::File::open("/proc/thread-self/ns/net")?)
        });
        let bare = chaosd::faults::net::netns::Netns::from_file(bare.unwrap()).unwrap();
        let contained = TestCgroup::new("dns-netns");
        let mut sleeper = Command::new("sleep");
        sleeper.arg("60");
        let held = KillOnDrop(spawn_in(&mut sleeper, &bare, Some(&contained)));
        let refused =
            daemon.try_inject(&request(error_fault("NXDOMAIN", &[]), &[&contained], "1m"));
        let e = refused.expect_err("a target whose namespace has no loopback was accepted");
        assert!(
            e.to_string().contains("loopback (lo) is down")
                && e.to_string().contains(&held.0.id().to_string()),
            "{e}"
        );
        let listed = block_on(daemon.client().list(false)).unwrap();
        assert!(listed.is_empty(), "a refused fault is listed: {listed:?}");
    }
    // The CLI says the same before any request.
    let out = daemon
        .chaosctl()
        .args([
            "inject",
            "dns",
            "error",
            "--rcode",
            "NOPE",
            "--cgroup",
            cg.rel(),
            "--duration",
            "1m",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NXDOMAIN"),
        "{out:?}"
    );
}
