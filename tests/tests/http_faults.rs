//! The HTTP faults (`http.*`) on the transparent proxy, checked with real clients in a target
//! cgroup: `curl` (one connection, several URLs: keep-alive) and a raw python socket
//! (pipelining) against a python `http.server` upstream on loopback outside the targets; a
//! sibling cgroup unchanged; a TLS upstream passed through; counters as the client saw.

use std::process::{Command, Stdio};

use chaosd::{
    api::{FaultSpec, HttpAbortParams, HttpDelayParams, HttpStatusParams, NetFilter},
    host::cgroup::spawn_in_cgroup,
};
use chaosd_integration::{
    Daemon, TestCgroup, block_on, http_upstream::Upstream, inject, unsupported_reason,
};

/// Sends two requests in one write (pipelined) and prints each response's status and body.
const PIPELINE: &str = r#"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"GET /api/x HTTP/1.1\r\nHost: t\r\n\r\nGET /other HTTP/1.1\r\nHost: t\r\n\r\n")
f = s.makefile("rb")
for _ in range(2):
    status = f.readline().split()[1].decode()
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    print(status, f.read(length).decode(), flush=True)
"#;

/// One transfer as curl reports it.
#[derive(Debug)]
struct Transfer {
    code: u16,
    secs: f64,
    /// New connections curl made for it (0: it reused the previous one).
    connects: u32,
    body: String,
}

/// Runs curl in `cg` on `urls` (one process: one kept-alive connection); returns its exit
/// code and one line per transfer.
fn curl(cg: &TestCgroup, extra: &[&str], urls: &[String]) -> (i32, Vec<Transfer>) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "30"]).args(extra);
    for url in urls {
        cmd.args([
            "-w",
            "\n@@ %{http_code} %{time_total} %{num_connects}\n",
            url.as_str(),
        ]);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = spawn_in_cgroup(&mut cmd, cg.dir())
        .expect("curl must be installed")
        .wait_with_output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut transfers = Vec::new();
    let mut body = String::new();
    for line in text.lines() {
        if let Some(stats) = line.strip_prefix("@@ ") {
            let f: Vec<&str> = stats.split_whitespace().collect();
            transfers.push(Transfer {
                code: f[0].parse().unwrap(),
                secs: f[1].parse().unwrap(),
                connects: f[2].parse().unwrap(),
                body: std::mem::take(&mut body),
            });
        } else {
            body.push_str(line);
        }
    }
    (out.status.code().unwrap_or(-1), transfers)
}

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

fn status_503_on_api(port: u16) -> FaultSpec {
    FaultSpec::HttpStatus(HttpStatusParams {
        status: "503".parse().unwrap(),
        headers: vec!["Retry-After: 7".parse().unwrap()],
        body: Some("chaos".into()),
        methods: vec![],
        path: Some("/api/*".parse().unwrap()),
        request_headers: vec![],
        percent: 100.0,
        filter: port_filter(port),
    })
}

#[test]
fn status_answers_matching_paths_only_with_keep_alive_and_pipelining() {
    let daemon = Daemon::start();
    if !supported(&daemon, "http.status") {
        return;
    }
    let up = Upstream::start(None);
    let (target, sibling) = (
        TestCgroup::new("http-status"),
        TestCgroup::new("http-status-sib"),
    );
    let fault = inject(&daemon, &target, status_503_on_api(up.port), "60s");

    // One curl, one connection: /other from the server, /api/x from chaosd, /other again.
    let urls = [up.url("/other"), up.url("/api/x"), up.url("/other?q=1")];
    let (rc, got) = curl(&target, &["-i"], &urls);
    eprintln!("keep-alive through http.status: {got:?}");
    assert_eq!(rc, 0, "{got:?}");
    let codes: Vec<u16> = got.iter().map(|t| t.code).collect();
    assert_eq!(codes, [200, 503, 200], "{got:?}");
    let connects: Vec<u32> = got.iter().map(|t| t.connects).collect();
    assert_eq!(
        connects,
        [1, 0, 0],
        "curl did not keep the connection: {got:?}"
    );
    assert!(got[0].body.ends_with("upstream /other"), "{got:?}");
    assert!(
        got[1].body.contains("Retry-After: 7") && got[1].body.ends_with("chaos"),
        "{got:?}"
    );
    assert!(got[2].body.ends_with("upstream /other?q=1"), "{got:?}");

    // The sibling reaches the server on every path.
    let (_, beside) = curl(&sibling, &[], &[up.url("/api/x")]);
    assert_eq!(
        beside[0].code, 200,
        "the sibling was answered by chaosd: {beside:?}"
    );
    assert_eq!(beside[0].body, "upstream /api/x");

    // Two requests in one write: both answered, in order.
    let mut py = Command::new("python3");
    py.args(["-c", PIPELINE, &up.port.to_string()])
        .stdout(Stdio::piped());
    let out = spawn_in_cgroup(&mut py, target.dir())
        .unwrap()
        .wait_with_output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("pipelined: {lines:?}");
    assert_eq!(lines, "503 chaos\n200 upstream /other\n");

    // seen: the /api/ requests (the matching path); affected: all of them (100 %).
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert_eq!(
        (info.counters.seen, info.counters.affected),
        (2, 2),
        "counters: {:?}",
        info.counters
    );
    block_on(daemon.client().recover(&fault.id)).unwrap();
    let (_, after) = curl(&target, &[], &[up.url("/api/x")]);
    assert_eq!(after[0].code, 200, "after recover: {after:?}");
}

#[test]
fn delay_slows_about_half_the_requests_by_300_ms() {
    let daemon = Daemon::start();
    if !supported(&daemon, "http.delay") {
        return;
    }
    let up = Upstream::start(None);
    let target = TestCgroup::new("http-delay");
    let fault = inject(
        &daemon,
        &target,
        FaultSpec::HttpDelay(HttpDelayParams {
            delay: "300ms".parse().unwrap(),
            jitter: None,
            methods: vec!["GET".parse().unwrap()],
            path: None,
            request_headers: vec![],
            percent: 50.0,
            filter: port_filter(up.port),
        }),
        "120s",
    );
    const N: usize = 40;
    let urls: Vec<String> = (0..N).map(|i| up.url(&format!("/r{i}"))).collect();
    let (rc, got) = curl(&target, &[], &urls);
    assert_eq!((rc, got.len()), (0, N), "{got:?}");
    assert!(got.iter().all(|t| t.code == 200), "{got:?}");
    let mut times: Vec<f64> = got.iter().map(|t| t.secs).collect();
    times.sort_by(f64::total_cmp);
    let slow = times.iter().filter(|s| **s >= 0.3).count();
    let fast = times.iter().filter(|s| **s < 0.15).count();
    eprintln!(
        "http.delay 300ms 50 %: {slow}/{N} delayed (fastest {:.4} s, slowest {:.4} s)",
        times[0],
        times[N - 1]
    );
    // Binomial(40, 0.5): outside 8..=32 has a chance of about 1 in 10,000.
    assert_eq!(
        slow + fast,
        N,
        "a request was neither direct nor delayed: {times:?}"
    );
    assert!((8..=32).contains(&slow), "{slow} of {N} delayed");
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert_eq!(
        (info.counters.seen, info.counters.affected),
        (N as u64, slow as u64),
        "counters: {:?}",
        info.counters
    );
}

#[test]
fn abort_closes_or_resets_and_tls_passes_through() {
    let daemon = Daemon::start();
    if !supported(&daemon, "http.abort") {
        return;
    }
    let up = Upstream::start(None);
    let target = TestCgroup::new("http-abort");
    let abort = |reset: bool| {
        FaultSpec::HttpAbort(HttpAbortParams {
            reset,
            methods: vec![],
            path: Some("/api/*".parse().unwrap()),
            request_headers: vec!["X-Chaos: on".parse().unwrap()],
            percent: 100.0,
            filter: port_filter(up.port),
        })
    };
    let header = ["-H", "X-Chaos: on"];

    let closed = inject(&daemon, &target, abort(false), "60s");
    let (rc, got) = curl(&target, &header, &[up.url("/api/x")]);
    assert_eq!(rc, 52, "expected curl's empty reply (52): {got:?}");
    // Without the header the request is not taken.
    let (rc, got) = curl(&target, &[], &[up.url("/api/x")]);
    assert_eq!((rc, got[0].code), (0, 200), "{got:?}");
    let info = block_on(daemon.client().get(&closed.id)).unwrap();
    assert_eq!((info.counters.seen, info.counters.affected), (1, 1));
    block_on(daemon.client().recover(&closed.id)).unwrap();

    let reset = inject(&daemon, &target, abort(true), "60s");
    let (rc, got) = curl(&target, &header, &[up.url("/api/x")]);
    assert_eq!(rc, 56, "expected curl's receive error (56: reset): {got:?}");
    // A request before the aborted one on the same connection still gets its response.
    let (rc, got) = curl(&target, &header, &[up.url("/other"), up.url("/api/y")]);
    assert_eq!(rc, 56, "{got:?}");
    assert_eq!(got[0].code, 200, "{got:?}");
    block_on(daemon.client().recover(&reset.id)).unwrap();

    // TLS: a ClientHello instead of a request line passes through with the TCP toxics only.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed");
    assert!(made.success());
    let tls = Upstream::start(Some((cert.to_str().unwrap(), key.to_str().unwrap())));
    let every = inject(
        &daemon,
        &target,
        FaultSpec::HttpStatus(HttpStatusParams {
            path: None,
            ..match status_503_on_api(tls.port) {
                FaultSpec::HttpStatus(p) => p,
                _ => unreachable!(),
            }
        }),
        "60s",
    );
    let url = format!("https://127.0.0.1:{}/api/x", tls.port);
    let (rc, got) = curl(&target, &["-k"], &[url]);
    eprintln!("https through http.status: {got:?}");
    assert_eq!((rc, got[0].code), (0, 200), "{got:?}");
    assert_eq!(got[0].body, "upstream /api/x");
    let info = block_on(daemon.client().get(&every.id)).unwrap();
    assert_eq!(info.counters.seen, 0, "a TLS request was counted");
    // The same fault answers plaintext on that port (the python server speaks TLS only).
    let (_, plain) = curl(&target, &[], &[format!("http://127.0.0.1:{}/x", tls.port)]);
    assert_eq!(plain[0].code, 503, "{plain:?}");
}

#[test]
fn bad_http_requests_are_refused_with_the_reason() {
    let daemon = Daemon::start();
    let cg = TestCgroup::new("http-bad");
    let cases = [
        (
            r#"{"kind": "http.status", "params": {"status": "503", "path": "/api/[a-"}}"#,
            "never closed",
        ),
        (
            r#"{"kind": "http.status", "params": {"status": "700"}}"#,
            "200 to 599",
        ),
        (
            r#"{"kind": "http.status", "params": {"status": "503", "headers": ["Retry-After 5"]}}"#,
            "Name: value",
        ),
        (
            r#"{"kind": "http.abort", "params": {"request_headers": ["Bad Name: x"]}}"#,
            "header name",
        ),
        (
            r#"{"kind": "http.delay", "params": {"delay": "10ms", "jitter": "20ms"}}"#,
            "jitter",
        ),
        (
            r#"{"kind": "http.status", "params": {"status": "204", "body": "x"}}"#,
            "no body",
        ),
        (
            r#"{"kind": "http.abort", "params": {"filter": {"proto": "udp"}}}"#,
            "TCP",
        ),
        (
            r#"{"kind": "http.abort", "params": {"percent": 0}}"#,
            "percent",
        ),
    ];
    for (fault, needle) in cases {
        let (status, msg) = daemon.post_fault_text(fault, cg.rel(), "10s");
        assert_eq!(status, 400, "{fault}: {msg}");
        assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
    }
    assert!(block_on(daemon.client().list(true)).unwrap().is_empty());
}
