//! The remote listener as Chaos Mesh's PhysicalMachineChaos controller uses it: golden
//! experiments (tests/golden/chaos-mesh/*.yaml, written as Chaos Mesh's examples are) flattened
//! the way the controller flattens them and posted over mutual TLS by curl with a client
//! certificate made here. Each mapped attack is checked from outside (datagrams lost, a cgroup
//! frozen, a clock read off, a filesystem filled, HTTP requests aborted or delayed as curl sees
//! them) and its DELETE reverts it; handshakes without
//! a client certificate or with one from another CA fail; unmapped attacks get a 4xx with the
//! reason; the audit trail names the certificate's subject.

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use chaosd_integration::{
    Daemon, TestCgroup, Tmpfs, block_on, free_port,
    http_upstream::Upstream,
    mtls::{CurlResult, Pki, curl},
    probe::UdpSink,
    record_skip, spawn_in_cgroup, udp_from_cgroup_to, unsupported_reason,
};
use serde_json::{Map, Value, json};

fn golden(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/chaos-mesh")
        .join(format!("{name}.yaml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What the controller posts for a PhysicalMachineChaos: `spec.action` split at its first
/// `-` into the route and the sub-action, `spec[action]`'s fields lifted next to `uid` and
/// `action`.
fn flatten(yaml: &str, uid: &str) -> (String, Value) {
    let doc: Value = yaml_serde::from_str(yaml).unwrap();
    let spec = &doc["spec"];
    let action = spec["action"].as_str().unwrap();
    let (route, sub) = action.split_once('-').unwrap_or((action, ""));
    let mut body = Map::new();
    body.insert("uid".into(), json!(uid));
    body.insert("action".into(), json!(sub));
    for (k, v) in spec[action].as_object().unwrap() {
        body.insert(k.clone(), v.clone());
    }
    (route.to_string(), Value::Object(body))
}

struct Remote {
    daemon: Daemon,
    pki: Pki,
    port: u16,
}

impl Remote {
    fn start(extra: &str) -> Remote {
        let pki = Pki::new();
        let port = free_port();
        let daemon = Daemon::start_with_config(&format!("{extra}\n{}", pki.remote_config(port)));
        Remote { daemon, pki, port }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> CurlResult {
        let text = body.map(Value::to_string);
        curl(
            &self.pki.ca,
            self.port,
            Some(&self.pki.client),
            method,
            path,
            text.as_deref(),
        )
    }

    fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (code, text) = self.call(method, path, body).unwrap();
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        (code, v)
    }

    /// Posts golden `name` (placeholders filled by `fill`) as attack `uid`.
    fn attack(&self, name: &str, uid: &str, fill: &[(&str, String)]) -> (u16, Value) {
        let mut yaml = golden(name);
        for (k, v) in fill {
            yaml = yaml.replace(k, v);
        }
        let (route, body) = flatten(&yaml, uid);
        self.ok("POST", &format!("/api/attack/{route}"), Some(&body))
    }

    fn delete(&self, uid: &str) -> (u16, Value) {
        self.ok("DELETE", &format!("/api/attack/{uid}"), None)
    }
}

/// The fault `id` as chaosd's own API lists it.
fn listed_fault(r: &Remote, id: &str) -> Value {
    let (_, faults) = r.ok("GET", "/v1/faults", None);
    faults
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{faults}"))
}

fn sink(addr: &str) -> UdpSink {
    UdpSink::bind(addr.parse::<SocketAddr>().unwrap()).unwrap()
}

#[test]
fn a_golden_network_loss_over_mtls_drops_what_it_names_and_its_delete_restores_it() {
    let r = Remote::start("");
    let (code, health) = r.ok("GET", "/api/system/health", None);
    assert_eq!(
        (code, health["status"].as_i64()),
        (200, Some(0)),
        "{health}"
    );

    let cgroup = TestCgroup::new("cm-loss");
    // The attack names 127.0.0.77; 127.0.0.1 is the bystander peer.
    let (peer, other) = (sink("127.0.0.77:0"), sink("127.0.0.1:0"));
    assert_eq!(
        udp_from_cgroup_to(&cgroup, &[&peer, &other], 200),
        [200, 200]
    );

    let uid = "5d6b1c7e-9a59-4f7c-9c2f-7b1e5d1f0a01";
    let (code, ans) = r.attack("network-loss", uid, &[("@PEER@", "127.0.0.77".into())]);
    assert_eq!(code, 200, "{ans}");
    assert_eq!(ans["uid"], uid, "{ans}");
    let fault_id = ans["faults"][0].as_str().unwrap().to_string();

    // chaosd's own view of it, over the same listener: host-wide net.loss to 127.0.0.77.
    let f = listed_fault(&r, &fault_id);
    assert_eq!(f["kind"], "net.loss");
    assert_eq!(f["fault"]["params"]["filter"]["dst"], "127.0.0.77");

    let during = udp_from_cgroup_to(&cgroup, &[&peer, &other], 200);
    assert_eq!(during, [0, 200], "100 % loss to the named peer only");

    // A retried POST (the controller re-applying) gets the same answer and no second fault.
    let (code, again) = r.attack("network-loss", uid, &[("@PEER@", "127.0.0.77".into())]);
    assert_eq!((code, &again["faults"]), (200, &ans["faults"]), "{again}");
    assert_eq!(block_on(r.daemon.client().list(false)).unwrap().len(), 1);

    let (code, rec) = r.delete(uid);
    assert_eq!(code, 200, "{rec}");
    assert_eq!(
        udp_from_cgroup_to(&cgroup, &[&peer, &other], 200),
        [200, 200]
    );
    // Already recovered: 404, which the controller takes as done.
    let (code, gone) = r.delete(uid);
    assert_eq!(code, 404, "{gone}");
    assert_eq!(gone["error"], true, "{gone}");

    // The audit trail: both calls, with the client certificate's subject.
    let history = block_on(r.daemon.client().history(20)).unwrap();
    let post = history
        .iter()
        .find(|e| e.method == "POST" && e.path == "/api/attack/network")
        .unwrap_or_else(|| panic!("{history:?}"));
    let who = post.peer.as_deref().unwrap_or_default();
    assert!(
        who.starts_with(r.pki.client_subject) && who.contains("from 127.0.0.1:"),
        "{who}"
    );
    assert_eq!(post.outcome, format!("ok: {uid}"));
    assert!(history.iter().any(|e| {
        e.method == "DELETE"
            && e.path == format!("/api/attack/{uid}")
            && e.status == 200
            && e.peer
                .as_deref()
                .is_some_and(|p| p.starts_with(r.pki.client_subject))
    }));
}

#[test]
fn no_client_certificate_or_one_from_another_ca_is_refused_at_the_handshake() {
    let r = Remote::start("");
    let body = json!({"uid": "x1", "action": "loss", "ip-address": "127.0.0.77", "percent": "100"})
        .to_string();
    let without = curl(
        &r.pki.ca,
        r.port,
        None,
        "POST",
        "/api/attack/network",
        Some(&body),
    );
    let e = without.expect_err("served without a client certificate");
    assert!(!e.contains("\n200") && !e.contains("\n400"), "{e}");
    let stranger = curl(
        &r.pki.ca,
        r.port,
        Some(&r.pki.stranger),
        "POST",
        "/api/attack/network",
        Some(&body),
    );
    let e = stranger.expect_err("served a certificate from another CA");
    assert!(e.contains("curl exit"), "{e}");
    assert!(block_on(r.daemon.client().list(true)).unwrap().is_empty());
    assert!(
        block_on(r.daemon.client().history(10))
            .unwrap()
            .iter()
            .all(|e| e.peer.is_none()),
        "a refused handshake reached HTTP"
    );
    let log = r.daemon.log_text();
    assert!(log.contains("refused a TLS client"), "{log}");
    // The right certificate is served.
    assert_eq!(r.ok("GET", "/api/system/health", None).0, 200);
}

#[test]
fn golden_partition_process_clock_and_disk_attacks_apply_and_their_deletes_revert_them() {
    let tmpfs = Tmpfs::new("64M");
    let r = Remote::start("[stress]\ndisk_floor = \"1MiB\"\ndisk_floor_percent = 1.0\n");

    // network-partition direction to: what the host sends to the peer is dropped.
    let cgroup = TestCgroup::new("cm-part");
    let (peer, other) = (sink("127.0.0.78:0"), sink("127.0.0.1:0"));
    let (code, ans) = r.attack(
        "network-partition",
        "p1",
        &[("@PEER@", "127.0.0.78".into())],
    );
    assert_eq!(code, 200, "{ans}");
    assert_eq!(udp_from_cgroup_to(&cgroup, &[&peer, &other], 100), [0, 100]);
    assert_eq!(r.delete("p1").0, 200);
    assert_eq!(
        udp_from_cgroup_to(&cgroup, &[&peer, &other], 100),
        [100, 100]
    );

    // process with signal 19 (SIGSTOP): its cgroup is frozen until the DELETE.
    let target = TestCgroup::new("cm-proc");
    let mut sleeper = spawn_in_cgroup(Command::new("sleep").arg("300"), target.dir()).unwrap();
    let pid = sleeper.id();
    let (code, ans) = r.attack("process-stop", "s1", &[("@PID@", pid.to_string())]);
    assert_eq!(code, 200, "{ans}");
    let events = || std::fs::read_to_string(target.dir().join("cgroup.events")).unwrap();
    assert!(events().contains("frozen 1"), "{}", events());
    assert_eq!(r.delete("s1").0, 200);
    assert!(events().contains("frozen 0"), "{}", events());

    // A process sharing its cgroup with another is refused: chaosd would stop both.
    let mut second = spawn_in_cgroup(Command::new("sleep").arg("300"), target.dir()).unwrap();
    let (code, ans) = r.attack("process-stop", "s2", &[("@PID@", pid.to_string())]);
    assert_eq!(code, 400, "{ans}");
    assert!(
        ans["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{} (sleep)", second.id())),
        "{ans}"
    );
    let _ = second.kill();
    let _ = second.wait();

    // clock -2h on the sleeper: a date run in its cgroup reads two hours early.
    let (code, ans) = r.attack("clock", "c1", &[("@PID@", pid.to_string())]);
    if code == 200 {
        let date = || {
            let mut cmd = Command::new("date");
            cmd.arg("+%s").stdout(std::process::Stdio::piped());
            let out = spawn_in_cgroup(&mut cmd, target.dir())
                .unwrap()
                .wait_with_output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<i64>()
                .unwrap()
        };
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64
        };
        let off = date() - now();
        assert!(
            (-7205..=-7195).contains(&off),
            "skewed by {off} s, asked -7200"
        );
        assert_eq!(r.delete("c1").0, 200);
        let off = date() - now();
        assert!(off.abs() <= 5, "still skewed by {off} s after the DELETE");
    } else {
        let why = ans["message"].as_str().unwrap_or_default();
        assert!(why.contains("clock"), "{ans}");
        eprintln!("clock attack not checked here: {why}");
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    // disk-fill 8M into the tmpfs, given as a file path there.
    let before = tmpfs.free();
    let dir = tmpfs.path().display().to_string();
    let (code, ans) = r.attack("disk-fill", "d1", &[("@DIR@", dir)]);
    assert_eq!(code, 200, "{ans}");
    let filled = before - tmpfs.free();
    assert!(
        (8 << 20..=9 << 20).contains(&filled),
        "filled {filled} bytes, asked 8M"
    );
    assert_eq!(r.delete("d1").0, 200);
    assert!(tmpfs.free() >= before - (64 << 10), "the fill stayed");
    assert!(block_on(r.daemon.client().list(false)).unwrap().is_empty());
}

/// One GET by curl run in `cg`: curl's exit code, the HTTP status (0: no response) and the
/// seconds it took.
fn get_from(cg: &TestCgroup, url: &str) -> (i32, u16, f64) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "--max-time", "20"])
        .args(["-w", "%{http_code} %{time_total}", url])
        .stdout(std::process::Stdio::piped());
    let out = spawn_in_cgroup(&mut cmd, cg.dir())
        .expect("curl must be installed")
        .wait_with_output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (code, secs) = text.split_once(' ').unwrap_or_else(|| panic!("{text:?}"));
    (
        out.status.code().unwrap_or(-1),
        code.parse().unwrap(),
        secs.parse().unwrap(),
    )
}

#[test]
fn golden_http_abort_and_delay_act_on_the_attacks_port_and_their_deletes_revert_them() {
    let r = Remote::start("");
    for kind in ["http.abort", "http.delay"] {
        if let Some(why) = unsupported_reason(&r.daemon, kind) {
            assert!(
                std::env::var_os("CHAOSD_VM").is_some(),
                "{kind} is refused on the dev host: {why}"
            );
            record_skip(&format!("{kind} is unsupported on this kernel: {why}"));
            return;
        }
    }
    // The attacked upstream and a bystander on another port; curl runs in a cgroup the
    // host-wide target covers (the test's own holds chaosd, which is protected).
    let (up, other) = (Upstream::start(None), Upstream::start(None));
    let cgroup = TestCgroup::new("cm-http");
    let port = [("@PORT@", up.port.to_string())];
    for url in [up.url("/api/x"), up.url("/other"), other.url("/api/x")] {
        let (rc, code, _) = get_from(&cgroup, &url);
        assert_eq!((rc, code), (0, 200), "before: {url}");
    }

    // http-abort on GET /api/* to the port: no response there, the rest served.
    let (code, ans) = r.attack("http-abort", "h1", &port);
    assert_eq!(code, 200, "{ans}");
    let fault_id = ans["faults"][0].as_str().unwrap().to_string();
    assert_eq!(ans["faults"].as_array().unwrap().len(), 1, "{ans}");
    let f = listed_fault(&r, &fault_id);
    assert_eq!(f["kind"], "http.abort", "{f}");
    assert_eq!(
        f["fault"]["params"]["filter"]["port"],
        up.port.to_string(),
        "{f}"
    );
    let aborted = get_from(&cgroup, &up.url("/api/x"));
    eprintln!("GET /api/x under http-abort: curl exit, status, secs = {aborted:?}");
    assert_eq!(
        aborted.1, 0,
        "a response came through http-abort: {aborted:?}"
    );
    assert_ne!(aborted.0, 0, "{aborted:?}");
    assert_eq!(get_from(&cgroup, &up.url("/other")).1, 200, "another path");
    assert_eq!(
        get_from(&cgroup, &other.url("/api/x")).1,
        200,
        "another port"
    );
    let (code, rec) = r.delete("h1");
    assert_eq!(code, 200, "{rec}");
    let after = get_from(&cgroup, &up.url("/api/x"));
    assert_eq!((after.0, after.1), (0, 200), "after the DELETE: {after:?}");

    // http-delay 700ms on every GET to the port.
    let (code, ans) = r.attack("http-delay", "h2", &port);
    assert_eq!(code, 200, "{ans}");
    let slow = get_from(&cgroup, &up.url("/api/x"));
    let beside = get_from(&cgroup, &other.url("/api/x"));
    eprintln!("under http-delay 700ms: the port {slow:?}, another port {beside:?}");
    assert_eq!(slow.1, 200, "{slow:?}");
    assert!(slow.2 >= 0.69, "not delayed: {slow:?}");
    assert!(slow.2 < 5.0, "delayed far past 700ms: {slow:?}");
    assert!(beside.2 < 0.5, "another port delayed: {beside:?}");
    let (code, rec) = r.delete("h2");
    assert_eq!(code, 200, "{rec}");
    let fast = get_from(&cgroup, &up.url("/api/x"));
    eprintln!("after the DELETE: {fast:?}");
    assert_eq!(fast.1, 200, "{fast:?}");
    assert!(fast.2 < 0.5, "still delayed after the DELETE: {fast:?}");

    // http-request makes requests: refused with the reason, nothing applied.
    let (code, ans) = r.attack("http-request", "h3", &port);
    assert_eq!(code, 400, "{ans}");
    assert!(
        ans["message"]
            .as_str()
            .unwrap()
            .contains("makes no requests"),
        "{ans}"
    );
    assert!(block_on(r.daemon.client().list(false)).unwrap().is_empty());
}

#[test]
fn unmapped_attacks_get_a_4xx_with_the_reason_and_leave_nothing() {
    let r = Remote::start("");
    let cases = [
        ("network-down", "never changes the host's interfaces"),
        ("http-request", "makes no requests"),
        ("network-delay-correlated", "correlation 25"),
    ];
    for (name, reason) in cases {
        let (code, ans) = r.attack(name, "u-unmapped", &[("@PEER@", "127.0.0.79".into())]);
        assert_eq!(code, 400, "{name}: {ans}");
        assert_eq!(ans["error"], true, "{ans}");
        assert_eq!(ans["code"], "error.api.invalid_request", "{ans}");
        let message = ans["message"].as_str().unwrap();
        assert!(message.contains(reason), "{name}: {message}");
    }
    let (code, ans) = r.ok(
        "POST",
        "/api/attack/jvm",
        Some(&json!({"action": "gc", "pid": 1})),
    );
    assert_eq!(code, 400, "{ans}");
    assert!(ans["message"].as_str().unwrap().contains("JVM"), "{ans}");
    let (code, ans) = r.ok(
        "POST",
        "/api/attack/http",
        Some(&json!({"uid": "u-cfg", "action": "config", "file_path": "/etc/chaosd/rules.json"})),
    );
    assert_eq!(code, 400, "{ans}");
    assert!(
        ans["message"].as_str().unwrap().contains("http.status"),
        "{ans}"
    );
    let (code, ans) = r.ok(
        "POST",
        "/api/attack/network",
        Some(&json!({"action": "loss", "percent": "5", "ip-address": "127.0.0.79", "lossy": 1})),
    );
    assert_eq!(code, 400, "{ans}");
    assert!(ans["message"].as_str().unwrap().contains("lossy"), "{ans}");
    assert!(block_on(r.daemon.client().list(true)).unwrap().is_empty());
    // Refusals are audited too, with the reason.
    let history = block_on(r.daemon.client().history(20)).unwrap();
    assert!(
        history
            .iter()
            .any(|e| e.status == 400 && e.outcome.contains("correlation 25") && e.peer.is_some())
    );
}

#[test]
fn a_delete_after_a_restart_answers_that_the_attack_already_ended() {
    let pki = Pki::new();
    let port = free_port();
    let config = pki.remote_config(port);
    let daemon = Daemon::start_with_config(&config);
    let r = Remote { daemon, pki, port };
    // A cgroup for the host-wide target to cover (this host may have none besides chaosd's).
    let _cgroup = TestCgroup::new("cm-restart");
    let (code, ans) = r.attack("network-loss", "r1", &[("@PEER@", "127.0.0.80".into())]);
    assert_eq!(code, 200, "{ans}");
    let Remote { daemon, pki, port } = r;
    let daemon = daemon.restart();
    let r = Remote { daemon, pki, port };
    // Wait for the restarted listener.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while r.call("GET", "/api/system/health", None).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no listener after restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, ans) = r.delete("r1");
    assert_eq!(code, 200, "{ans}");
    assert!(
        ans["message"].as_str().unwrap().contains("already ended"),
        "{ans}"
    );
}

/// Plain HTTP (loopback, no TLS files): served to local users who may use the socket (root
/// here), refused to others (nobody), as the socket's peer check does.
#[test]
fn plain_http_on_loopback_serves_only_users_allowed_on_the_socket() {
    use std::os::unix::process::CommandExt as _;
    let port = free_port();
    let daemon = Daemon::start_with_config(&format!("[remote]\nlisten = \"127.0.0.1:{port}\"\n"));
    let url = format!("http://127.0.0.1:{port}/api/system/health");
    let curl = |as_nobody: bool| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "30", "-w", "\n%{http_code}", &url]);
        if as_nobody {
            cmd.uid(65534).gid(65534);
        }
        cmd.output().unwrap()
    };
    let root = curl(false);
    assert!(
        String::from_utf8_lossy(&root.stdout).ends_with("\n200"),
        "{root:?}"
    );
    let nobody = curl(true);
    assert!(!nobody.status.success(), "nobody was served: {nobody:?}");
    assert!(
        daemon
            .log_text()
            .contains("refused a local client whose user may not use chaosd"),
        "{}",
        daemon.log_text()
    );
}
