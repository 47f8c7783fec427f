//! Prometheus probes and abort rules against a real Prometheus (Debian's `prometheus`) on
//! loopback, scraping a service in this test whose error counter the test raises: the PromQL
//! hypothesis holds while the service is healthy, the abort rule fires once errors pass 5 %,
//! and the run aborts and rolls back, the report naming the rule and when it fired.

use std::{sync::atomic::Ordering, time::Duration};

use chaosd::{
    api::FaultState,
    scenario::{
        fetch::HttpUrl,
        format::PromQuery,
        prometheus::instant,
        wire::{Event, Phase, RunRequest, Verdict},
    },
};
use chaosd_integration::{
    Daemon, block_on, free_port,
    prometheus::{MetricsService, Prometheus},
    skip, unsupported_reason, wait_for,
};

const RATIO: &str = "sum(rate(test_errors_total[3s])) / sum(rate(test_requests_total[3s]))";

fn scenario(prom: &str, web_port: u16) -> String {
    format!(
        r#"title = "test: abort when Prometheus says errors passed 5 %"

[services.web]
http = "127.0.0.1:{web_port}"

[steady_state]
interval = "250ms"
timeout = "1s"
warmup = "20s"
baseline = "2s"
recovery_timeout = "20s"
recovery_confirm = 2

[[steady_state.probe]]
name = "error ratio"
prometheus = "{prom}"
query = "{RATIO}"
max = 0.05

[[step]]
name = "a little loss"
kind = "net.loss"
params = {{ percent = 1, direction = "both" }}
target = "web"
duration = "40s"

[[abort.prometheus]]
name = "error ratio above 5 %"
prometheus = "{prom}"
query = "{RATIO}"
above = 0.05
interval = "500ms"
"#
    )
}

#[test]
fn promql_hypothesis_holds_then_the_abort_rule_fires_and_rolls_back() {
    let program = match Prometheus::program() {
        Ok(p) => p,
        Err(reason) => skip!("{reason}"),
    };
    let daemon = Daemon::start();
    if let Some(reason) = unsupported_reason(&daemon, "net.loss") {
        skip!("net.loss unsupported: {reason}");
    }
    let service = MetricsService::start();
    let prom = Prometheus::start(&program, &[format!("127.0.0.1:{}", service.port)]);

    // Rates need two scrapes; wait until the ratio is a number (bounded).
    let query = PromQuery {
        url: prom.url(),
        server: HttpUrl::parse(&prom.url()).unwrap(),
        query: RATIO.into(),
        bearer_token_file: None,
        ca_file: None,
    };
    wait_for(Duration::from_secs(30), || {
        block_on(instant(&query, None))
            .ok()
            .filter(|v| v.is_finite())
    })
    .unwrap_or_else(|| panic!("Prometheus never had the ratio:\n{}", prom.log_text()));

    let req = RunRequest {
        scenario: scenario(&prom.url(), free_port()),
        source: Some("prometheus.toml".into()),
    };
    let client = daemon.client();
    let id = block_on(client.start_run(&req))
        .unwrap_or_else(|e| panic!("starting the run: {e}\n{}", daemon.log_text()))
        .id;
    // Errors start once the fault is in force and stop at the abort, so recovery is seen.
    let counters = service.counters.clone();
    let follow = client.follow_run(&id, 0, |e| match &e.event {
        Event::StepStarted { .. } => counters.error_per_mille.store(300, Ordering::Relaxed),
        Event::Abort { .. } => counters.error_per_mille.store(0, Ordering::Relaxed),
        _ => {}
    });
    block_on(async { tokio::time::timeout(Duration::from_secs(90), follow).await })
        .expect("the run did not end within 90 s")
        .unwrap();
    let report = block_on(client.run_report(&id)).unwrap();
    let md = report.markdown();

    // The hypothesis on PromQL held while healthy: the baseline passed, so it injected.
    let baseline = report.probes[0]
        .phases
        .iter()
        .find(|s| s.phase == Phase::Baseline)
        .unwrap_or_else(|| panic!("no baseline stats:\n{md}"));
    assert!(
        baseline.checks >= 4 && baseline.success_percent == 100.0,
        "{baseline:?}"
    );
    assert_eq!(report.verdict, Verdict::Aborted, "{md}");
    let fired = report.abort_rule.clone().expect("the abort rule is named");
    assert_eq!(fired.rule, "error ratio above 5 %");
    assert!(fired.value > 0.05, "{fired:?}");
    let step = &report.steps[0];
    let (injected, reverted) = (step.injected_ms.unwrap(), step.reverted_ms.unwrap());
    assert!(
        fired.at_ms >= injected && fired.at_ms <= reverted,
        "fired at {} ms, step in force {injected}..{reverted} ms",
        fired.at_ms
    );
    assert!(
        reverted - injected < 20_000,
        "the step ran on: {injected}..{reverted}"
    );
    assert!(
        md.contains("| abort rule | `error ratio above 5 %` fired at +"),
        "{md}"
    );

    // Rolled back by the run: nothing in force, the fault recovered (not expired).
    assert!(block_on(client.list(false)).unwrap().is_empty());
    let fault = block_on(client.get(step.fault_id.as_ref().unwrap())).unwrap();
    assert_eq!(fault.state, FaultState::Recovered);
    // With the errors gone, the PromQL steady state held again.
    assert_eq!(report.recovered, Some(true), "{md}");
}

#[test]
fn a_query_prometheus_refuses_is_a_clear_probe_error() {
    let program = match Prometheus::program() {
        Ok(p) => p,
        Err(reason) => skip!("{reason}"),
    };
    let prom = Prometheus::start(&program, &[]);
    let query = PromQuery {
        url: prom.url(),
        server: HttpUrl::parse(&prom.url()).unwrap(),
        query: "sum(rate(x[".into(),
        bearer_token_file: None,
        ca_file: None,
    };
    let err = wait_for(Duration::from_secs(20), || {
        block_on(instant(&query, None))
            .err()
            .filter(|e| e.contains("refused the query"))
    })
    .unwrap_or_else(|| panic!("no refusal:\n{}", prom.log_text()));
    assert!(err.contains("parse error"), "{err}");
}

/// `openssl s_server -www` with a fresh self-signed certificate for `localhost`; killed on drop.
struct TlsServer {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsServer {
    fn start() -> Option<TlsServer> {
        let dir = tempfile::tempdir().unwrap();
        let d = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(
            d("leaf.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        // A CA, and a certificate for localhost it signed (rustls refuses a CA as the server's).
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=chaosd test CA",
                "-keyout",
                &d("ca.key"),
                "-out",
                &d("ca.pem"),
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                &d("key.pem"),
                "-out",
                &d("leaf.csr"),
            ],
            &[
                "x509",
                "-req",
                "-in",
                &d("leaf.csr"),
                "-CA",
                &d("ca.pem"),
                "-CAkey",
                &d("ca.key"),
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &d("leaf.ext"),
                "-out",
                &d("cert.pem"),
            ],
        ];
        for args in steps {
            let ok = std::process::Command::new("openssl")
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .ok()?
                .success();
            assert!(ok, "openssl {args:?} failed");
        }
        let (cert, key) = (d("cert.pem"), d("key.pem"));
        let port = free_port();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(TlsServer { child, port, dir })
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_probes_trust_the_ca_file_and_refuse_an_unknown_certificate() {
    use chaosd::scenario::fetch::{Tls, get};
    let Some(server) = TlsServer::start() else {
        skip!("openssl is not installed");
    };
    let url = HttpUrl::parse(&format!("https://localhost:{}/", server.port)).unwrap();
    let ca = Tls::new(Some(&server.dir.path().join("ca.pem"))).unwrap();
    let mut last = String::new();
    let status = wait_for(Duration::from_secs(10), || {
        block_on(get(&url, &[], Some(&ca)))
            .map_err(|e| last = e)
            .ok()
            .map(|r| r.status)
    })
    .unwrap_or_else(|| panic!("no https answer with the CA file: {last}"));
    assert_eq!(status, 200);
    // The system's trust store does not know a self-signed certificate.
    let system = Tls::new(None).unwrap();
    let err = block_on(get(&url, &[], Some(&system)))
        .err()
        .expect("an unknown certificate was trusted");
    assert!(err.contains("TLS with localhost"), "{err}");
}
