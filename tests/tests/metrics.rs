//! `GET /metrics`: the exposition agrees with the API and the traffic, on the socket and on
//! the optional loopback TCP listener; `--log-format json` carries fault ids.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use chaosd::api::{Direction, FaultInfo};
use chaosd_integration::{
    Daemon, TestCgroup, block_on, require_root, udp_from_cgroups, wait_for, workspace_bin,
};
use hyper::{Method, StatusCode};

const DATAGRAMS: u32 = 1_000;

/// The exposition text, scraped through the API socket.
fn scrape_socket(daemon: &Daemon) -> String {
    let (status, body) = block_on(daemon.client().raw(Method::GET, "/metrics", None)).unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    String::from_utf8(body.to_vec()).unwrap()
}

/// The exposition text, scraped over TCP with a plain HTTP/1.1 GET.
fn scrape_tcp(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of one series (`name{labels}` exactly as exposed), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

fn series(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Series order within a family is not fixed; compare expositions line by line.
fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines
}

fn packets(fault: &FaultInfo, outcome: &str) -> String {
    format!(
        "chaosd_fault_packets_total{{fault=\"{}\",kind=\"net.loss\",outcome=\"{outcome}\"}}",
        fault.id
    )
}

const ACTIVE_LOSS: &str = "chaosd_faults_active{kind=\"net.loss\"}";

#[test]
fn metrics_match_the_api_and_the_traffic_and_the_gauge_drops_at_recover() {
    let daemon = Daemon::start();
    let target = TestCgroup::new("metrics");
    assert_eq!(series(&scrape_socket(&daemon), ACTIVE_LOSS), 0.0);

    let fault = daemon.inject_loss(&target, 30.0, Direction::Egress, "60s");
    let received = udp_from_cgroups(&[&target], DATAGRAMS)[0];
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    let text = scrape_socket(&daemon);

    assert_eq!(series(&text, ACTIVE_LOSS), 1.0);
    assert_eq!(info.counters.seen, u64::from(DATAGRAMS));
    assert_eq!(
        series(&text, &packets(&fault, "seen")),
        f64::from(DATAGRAMS)
    );
    assert_eq!(
        series(&text, &packets(&fault, "affected")),
        info.counters.affected as f64,
        "affected differs from GET /v1/faults/{}",
        fault.id
    );
    assert_eq!(
        info.counters.affected,
        u64::from(DATAGRAMS - received),
        "dropped counter differs from what did not arrive"
    );
    assert_eq!(
        series(
            &text,
            "chaosd_inject_duration_seconds_count{kind=\"net.loss\"}"
        ),
        1.0
    );
    assert!(
        text.contains(&format!(
            "chaosd_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );

    let ended = block_on(daemon.client().recover(&fault.id)).unwrap();
    let text = scrape_socket(&daemon);
    assert_eq!(series(&text, ACTIVE_LOSS), 0.0, "gauge after recover");
    assert_eq!(
        series(&text, &packets(&fault, "affected")),
        ended.counters.affected as f64,
        "an ended fault keeps its final counters"
    );
    assert_eq!(
        series(
            &text,
            "chaosd_recover_duration_seconds_count{kind=\"net.loss\",reason=\"recovered\"}"
        ),
        1.0
    );
}

#[test]
fn tcp_listener_serves_metrics_on_loopback_when_configured() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let daemon = Daemon::start_with_config(&format!("[daemon]\nmetrics_listen = \"{addr}\"\n"));
    let target = TestCgroup::new("metrics-tcp");
    let fault = daemon.inject_loss(&target, 100.0, Direction::Egress, "60s");
    assert_eq!(udp_from_cgroups(&[&target], 200)[0], 0);

    let text = scrape_tcp(addr);
    assert_eq!(series(&text, ACTIVE_LOSS), 1.0);
    assert_eq!(series(&text, &packets(&fault, "affected")), 200.0);
    assert_eq!(
        sorted_lines(&text),
        sorted_lines(&scrape_socket(&daemon)),
        "TCP and socket expositions differ"
    );
}

#[test]
fn metrics_listen_off_loopback_is_refused_with_the_reason() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chaosd.toml");
    std::fs::write(&config, "[daemon]\nmetrics_listen = \"0.0.0.0:9464\"\n").unwrap();
    let mut child = Command::new(workspace_bin("chaosd"))
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(dir.path().join("chaosd.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(Duration::from_secs(10), || child.try_wait().unwrap());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("chaosd kept running with a non-loopback metrics_listen");
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success());
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    assert!(!dir.path().join("chaosd.sock").exists(), "left its socket");
}

#[test]
fn json_logs_carry_the_fault_id() {
    let daemon = Daemon::start_with_args("", &["--log-format", "json"]);
    let target = TestCgroup::new("jsonlog");
    let fault = daemon.inject_loss(&target, 10.0, Direction::Egress, "60s");
    block_on(daemon.client().recover(&fault.id)).unwrap();

    let lines: Vec<serde_json::Value> = daemon
        .log_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let message_with_id = |message: &str| {
        lines.iter().any(|l| {
            l["fields"]["message"] == message
                && (l["fields"]["fault_id"] == fault.id.as_str()
                    || l["span"]["fault_id"] == fault.id.as_str())
        })
    };
    for message in [
        "fault injected",
        "fault reverted",
        "packet programs attached",
    ] {
        assert!(
            message_with_id(message),
            "no {message:?} line with fault_id {}:\n{}",
            fault.id,
            daemon.log_text()
        );
    }
}
