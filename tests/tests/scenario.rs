//! Scenario runs, end to end: the daemon starts an HTTP service in a cgroup of its own, probes
//! it from outside, injects loss into that cgroup on schedule, aborts on a rule or on request,
//! rolls back, measures recovery and writes a report. Checked from outside: the report, the
//! fault registry, the report file, and the cgroups the run made.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use chaosd::{
    api::FaultState,
    client::Client,
    scenario::{
        report::Report,
        wire::{Event, Phase, RunEvent, RunRequest, RunState, Verdict},
    },
};
use chaosd_integration::{Daemon, block_on, skip, unsupported_reason, wait_for, workspace_bin};

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scenario: the built-in responder as service `web` on `port`, probed over HTTP every
/// 100 ms, and 100 % loss both ways into its cgroup for `loss_for`, then `extra` TOML.
fn outage_scenario(port: u16, loss_for: &str, extra: &str) -> String {
    format!(
        r#"title = "test: web under full loss"

[services.web]
http = "127.0.0.1:{port}"

[steady_state]
interval = "100ms"
timeout = "400ms"
baseline = "1s"
recovery_timeout = "10s"

[[steady_state.probe]]
name = "home"
http = "http://127.0.0.1:{port}/"

[[step]]
name = "outage"
kind = "net.loss"
params = {{ percent = 100, direction = "both" }}
target = "web"
at = "0s"
duration = "{loss_for}"
{extra}"#
    )
}

/// A daemon where net.loss works, or the reason it cannot.
fn daemon_with_net_loss() -> Result<Daemon, String> {
    let daemon = Daemon::start();
    match unsupported_reason(&daemon, "net.loss") {
        Some(reason) => Err(reason),
        None => Ok(daemon),
    }
}

fn start(daemon: &Daemon, text: &str) -> String {
    let req = RunRequest {
        scenario: text.to_string(),
        source: Some("test.toml".into()),
    };
    block_on(daemon.client().start_run(&req))
        .unwrap_or_else(|e| panic!("starting the run failed: {e}\n{}", daemon.log_text()))
        .id
}

/// Follows the run to its end; returns its events and report.
fn follow(daemon: &Daemon, id: &str) -> (Vec<RunEvent>, Report) {
    let client = daemon.client();
    let mut events = Vec::new();
    let follow = client.follow_run(id, 0, |e| events.push(e.clone()));
    block_on(async { tokio::time::timeout(Duration::from_secs(60), follow).await })
        .expect("the run did not end within 60 s")
        .unwrap();
    (events, block_on(client.run_report(id)).unwrap())
}

/// Waits (bounded) for a run started elsewhere to finish; returns its report.
fn report_when_finished(client: &Client, id: &str) -> Report {
    wait_for(Duration::from_secs(60), || {
        let info = block_on(client.run(id)).unwrap();
        (info.state == RunState::Finished).then_some(())
    })
    .expect("the run did not finish within 60 s");
    block_on(client.run_report(id)).unwrap()
}

/// No fault is in force, the run's faults ended with `state`, and its cgroups are gone.
fn assert_rolled_back(daemon: &Daemon, report: &Report, states: &[FaultState]) {
    let client = daemon.client();
    let active = block_on(client.list(false)).unwrap();
    assert!(active.is_empty(), "faults left in force: {active:?}");
    for step in &report.steps {
        let id = step.fault_id.as_ref().expect("the step was injected");
        let fault = block_on(client.get(id)).unwrap();
        assert!(
            states.contains(&fault.state),
            "fault {id} ended {:?}, expected one of {states:?}",
            fault.state
        );
        for cgroup in &step.cgroups {
            // The mount from mountinfo: on a hybrid host /sys/fs/cgroup is not cgroup2.
            let mount = chaosd::host::cgroup::cgroup2_mount().unwrap();
            let dir = mount.join(cgroup.trim_start_matches('/'));
            assert!(!dir.exists(), "the run's cgroup {cgroup} is still there");
        }
    }
}

fn probe_phase(report: &Report, phase: Phase) -> &chaosd::scenario::report::PhaseStats {
    report.probes[0]
        .phases
        .iter()
        .find(|s| s.phase == phase)
        .unwrap_or_else(|| panic!("no {phase} stats in {:?}", report.probes[0]))
}

#[test]
fn loss_scenario_reports_verdict_and_recovery_time() {
    let daemon = match daemon_with_net_loss() {
        Ok(d) => d,
        Err(reason) => skip!("net.loss unsupported: {reason}"),
    };
    let id = start(&daemon, &outage_scenario(free_port(), "2s", ""));
    let (events, report) = follow(&daemon, &id);

    assert_eq!(report.verdict, Verdict::Failed, "{}", report.markdown());
    assert_eq!(report.recovered, Some(true), "{}", report.markdown());
    let recovery_ms = report.recovery_ms.expect("recovery time measured");
    assert!(
        recovery_ms < 10_000,
        "recovery beyond the timeout: {recovery_ms}"
    );
    let baseline = probe_phase(&report, Phase::Baseline);
    assert!(
        baseline.checks >= 3 && baseline.success_percent == 100.0,
        "{baseline:?}"
    );
    let inject = probe_phase(&report, Phase::Inject);
    assert!(
        inject.checks >= 2 && inject.success_percent < 50.0,
        "{inject:?}"
    );
    assert!(inject.p99_ms >= inject.p50_ms && inject.max_ms >= inject.p99_ms);
    assert!(!report.probes[0].hypothesis_held);
    let availability = report.availability_percent.expect("availability");
    assert!(availability < 100.0 && availability > 0.0, "{availability}");
    assert!(
        report.phases.iter().map(|p| p.phase).collect::<Vec<_>>()
            == [
                Phase::Preflight,
                Phase::Baseline,
                Phase::Inject,
                Phase::Rollback,
                Phase::Recovery
            ]
    );
    assert_eq!(report.steps[0].outcome, "reverted");

    // The kernel dropped the service's packets: the fault's own counters.
    let fault_id = report.steps[0].fault_id.clone().unwrap();
    let fault = block_on(daemon.client().get(&fault_id)).unwrap();
    assert!(
        fault.counters.affected > 0,
        "the fault dropped nothing: {fault:?}"
    );
    assert_rolled_back(
        &daemon,
        &report,
        &[FaultState::Recovered, FaultState::Expired],
    );

    assert!(
        events
            .iter()
            .any(|e| matches!(e.event, Event::StepStarted { .. }))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e.event, Event::ProbeHealth { .. }))
    );
    let file = daemon.state_dir().join("runs").join(format!("{id}.json"));
    let saved: Report = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        saved, report,
        "the report file differs from the API's report"
    );
    let md = report.markdown();
    assert!(
        md.contains("**Verdict: failed**") && md.contains("| recovery time |"),
        "{md}"
    );
}

#[test]
fn abort_rule_fires_and_everything_is_rolled_back() {
    let daemon = match daemon_with_net_loss() {
        Ok(d) => d,
        Err(reason) => skip!("net.loss unsupported: {reason}"),
    };
    // The daemon refuses a malformed file with its place.
    let bad = RunRequest {
        scenario: "title = \"x\"\n[steady_state]\nintervall = \"1s\"\n".into(),
        source: Some("bad.toml".into()),
    };
    let err = block_on(daemon.client().start_run(&bad)).unwrap_err();
    assert_eq!(err.status(), Some(hyper::StatusCode::BAD_REQUEST));
    assert!(
        err.to_string().contains("bad.toml: line 3, column 1"),
        "{err}"
    );

    let abort = "\n[abort]\nfailure_rate = 50\nwindow = \"1s\"\n";
    let id = start(&daemon, &outage_scenario(free_port(), "30s", abort));
    let (_, report) = follow(&daemon, &id);

    assert_eq!(report.verdict, Verdict::Aborted, "{}", report.markdown());
    let reason = report.abort_reason.clone().expect("abort reason");
    assert!(reason.contains("failure_rate 50 %"), "{reason}");
    let step = &report.steps[0];
    let in_force = step.reverted_ms.unwrap() - step.injected_ms.unwrap();
    assert!(
        in_force < 30_000,
        "the step ran to its planned end: {in_force} ms"
    );
    // Recovered (by the run), not Expired (by its deadline).
    assert_rolled_back(&daemon, &report, &[FaultState::Recovered]);
    assert_eq!(report.recovered, Some(true), "{}", report.markdown());
}

/// A `chaosctl run` process, killed and reaped on drop.
struct RunClient(Child);

impl Drop for RunClient {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `chaosctl run FILE` and reads its output until the first step is injected.
fn chaosctl_run_until_injected(daemon: &Daemon, file: &Path) -> (RunClient, String) {
    let mut client = RunClient(
        Command::new(workspace_bin("chaosctl"))
            .arg("--socket")
            .arg(daemon.socket())
            .arg("run")
            .arg(file)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(client.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let id = first
        .strip_prefix("run ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    for line in lines.by_ref() {
        if line.unwrap().contains("injected into") {
            // Keep draining in the background so the client never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (client, id);
        }
    }
    panic!("chaosctl ended before injecting:\n{}", daemon.log_text());
}

fn scenario_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn client_disconnect_leaves_the_run_going_and_rolls_back_at_its_end() {
    let daemon = match daemon_with_net_loss() {
        Ok(d) => d,
        Err(reason) => skip!("net.loss unsupported: {reason}"),
    };
    let file = scenario_file(&outage_scenario(free_port(), "3s", ""));
    let (client_process, id) = chaosctl_run_until_injected(&daemon, file.path());
    drop(client_process); // SIGKILL: the client goes away mid-run

    let client = daemon.client();
    let info = block_on(client.run(&id)).unwrap();
    assert_eq!(
        info.state,
        RunState::Running,
        "the run ended with its client"
    );
    assert_eq!(info.active_faults.len(), 1, "{info:?}");
    let report = report_when_finished(&client, &id);
    assert_eq!(report.verdict, Verdict::Failed, "{}", report.markdown());
    assert_eq!(report.steps[0].outcome, "reverted");
    assert_rolled_back(
        &daemon,
        &report,
        &[FaultState::Recovered, FaultState::Expired],
    );
}

#[test]
fn ctrl_c_aborts_the_run_and_rolls_back() {
    let daemon = match daemon_with_net_loss() {
        Ok(d) => d,
        Err(reason) => skip!("net.loss unsupported: {reason}"),
    };
    let file = scenario_file(&outage_scenario(free_port(), "30s", ""));
    let (mut client_process, id) = chaosctl_run_until_injected(&daemon, file.path());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client_process.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_for(Duration::from_secs(30), || {
        client_process.0.try_wait().unwrap()
    })
    .expect("chaosctl did not leave after Ctrl-C");
    assert!(!status.success(), "an aborted run exits non-zero");

    let report = report_when_finished(&daemon.client(), &id);
    assert_eq!(report.verdict, Verdict::Aborted, "{}", report.markdown());
    assert!(
        report.reason.contains("aborted on request"),
        "{}",
        report.reason
    );
    assert_rolled_back(&daemon, &report, &[FaultState::Recovered]);
}

#[test]
fn preflight_refuses_a_missing_target_and_injects_nothing() {
    let daemon = Daemon::start();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = format!(
        r#"title = "test: missing target"

[targets.gone]
cgroup = "/chaosd-test-{}-no-such-cgroup"

[steady_state]
interval = "100ms"
baseline = "300ms"

[[steady_state.probe]]
name = "listener"
tcp = "{}"

[[step]]
kind = "process.pause"
target = "gone"
duration = "5s"
"#,
        std::process::id(),
        listener.local_addr().unwrap()
    );
    let id = start(&daemon, &text);
    let (_, report) = follow(&daemon, &id);
    assert_eq!(
        report.verdict,
        Verdict::PreflightFailed,
        "{}",
        report.markdown()
    );
    assert!(
        report.reason.contains("does not exist"),
        "{}",
        report.reason
    );
    assert_eq!(report.recovered, None);
    assert_eq!(report.steps[0].fault_id, None);
    let faults = block_on(daemon.client().list(true)).unwrap();
    assert!(faults.is_empty(), "a fault was injected: {faults:?}");
}

#[test]
fn services_run_as_the_user_who_started_the_run() {
    // The peer is uid 65534 with primary group gid 1, which the daemon lets in.
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(1))
        .unwrap()
        .expect("this test needs a group with gid 1 (daemon)");
    let daemon = Daemon::start_with_config(&format!("[daemon]\ngroup = \"{}\"\n", group.name));
    if let Some(reason) = unsupported_reason(&daemon, "net.loss") {
        skip!("net.loss unsupported: {reason}");
    }
    let dir = daemon.socket().parent().unwrap().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let file = scenario_file(&outage_scenario(port, "1s", ""));
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = daemon
        .chaosctl()
        .args(["run", "--detach"])
        .arg(file.path())
        .uid(65534)
        .gid(1)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "uid 65534 could not start a run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let client = daemon.client();
    let pid = wait_for(Duration::from_secs(10), || {
        let page = block_on(client.run_events(&id, 0, Duration::ZERO)).ok()?;
        page.events.iter().find_map(|e| match &e.event {
            Event::ServiceStarted { pid, .. } => Some(*pid),
            _ => None,
        })
    })
    .unwrap_or_else(|| panic!("the service did not start\n{}", daemon.log_text()));

    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> Vec<u32> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {status}"));
        line.split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect()
    };
    // real, effective, saved and filesystem ids; no supplementary groups.
    assert_eq!(field("Uid:"), [65534; 4], "{status}");
    assert_eq!(field("Gid:"), [1; 4], "{status}");
    assert_eq!(field("Groups:"), Vec::<u32>::new(), "{status}");
    // And it is the responder, serving: a plain HTTP request gets its 200.
    let answered = wait_for(Duration::from_secs(5), || {
        use std::io::{Read as _, Write as _};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).ok()?;
        answer.starts_with("HTTP/1.1 200").then_some(())
    });
    assert!(
        answered.is_some(),
        "the service run as uid 65534 does not answer"
    );

    block_on(client.abort_run(&id)).unwrap();
    report_when_finished(&client, &id);
    assert!(
        !chaosd_integration::alive(pid),
        "the service outlived its run"
    );
}

/// `chaosctl run FILE` with its output on a pseudo-terminal (util-linux `script`) or a pipe;
/// returns what it printed.
fn chaosctl_run_output(daemon: &Daemon, file: &Path, on_a_terminal: bool) -> String {
    let chaosctl = workspace_bin("chaosctl");
    let mut cmd = if on_a_terminal {
        let mut c = Command::new("script");
        c.args(["-qfe", "-c"]).arg(format!(
            "'{}' --socket '{}' run '{}'",
            chaosctl.display(),
            daemon.socket().display(),
            file.display()
        ));
        c.arg("/dev/null");
        c
    } else {
        let mut c = Command::new(&chaosctl);
        c.arg("--socket").arg(daemon.socket()).arg("run").arg(file);
        c
    };
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn run_shows_a_live_view_on_a_terminal_and_plain_lines_otherwise() {
    if chaosd_integration::prometheus::which("script").is_none() {
        skip!("util-linux script is not installed");
    }
    let daemon = match daemon_with_net_loss() {
        Ok(d) => d,
        Err(reason) => skip!("net.loss unsupported: {reason}"),
    };
    let file = scenario_file(&outage_scenario(free_port(), "2s", ""));
    let live = chaosctl_run_output(&daemon, file.path(), true);
    // Lines redrawn in place: cursor-up and erase-line sequences, the phase with its time
    // left, the probe's state line.
    assert!(
        live.contains("\x1b[2K") && live.contains("\x1b[1A"),
        "{live:?}"
    );
    assert!(live.contains("inject: faults in force, "), "{live:?}");
    assert!(live.contains(" left"), "{live:?}");
    assert!(
        live.contains("… home: waiting for a check")
            && live.contains("✗ home: ")
            && live.contains(" passed, p99 "),
        "{live:?}"
    );
    assert!(live.contains("verdict: failed"), "{live:?}");

    let plain = chaosctl_run_output(&daemon, file.path(), false);
    assert!(!plain.contains('\x1b'), "escape codes in a pipe: {plain:?}");
    assert!(
        plain.contains("probe home: ") && plain.contains("verdict: failed"),
        "{plain}"
    );
}

/// `examples/cert-expiry.toml` as shipped, with its port and directory made this test's own.
fn cert_expiry_example(port: u16, dir: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cert-expiry.toml");
    std::fs::read_to_string(path)
        .unwrap()
        .replace("/tmp/chaosd-cert-expiry", dir.to_str().unwrap())
        .replace("18443", &port.to_string())
}

#[test]
fn the_certificate_expiry_example_runs_to_its_verdict() {
    let daemon = Daemon::start();
    if let Some(reason) = unsupported_reason(&daemon, "clock.skew") {
        skip!("clock.skew unsupported: {reason}");
    }
    for tool in ["openssl", "curl"] {
        if chaosd_integration::prometheus::which(tool).is_none() {
            skip!("{tool} is not installed (cargo xtask test installs it)");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let id = start(&daemon, &cert_expiry_example(free_port(), dir.path()));
    let (_, report) = follow(&daemon, &id);

    // The client's calls fail under the skew only; the same call from outside never does.
    assert_eq!(report.verdict, Verdict::Failed, "{}", report.markdown());
    assert_eq!(report.recovered, Some(true), "{}", report.markdown());
    let phase = |probe: usize, phase: Phase| {
        report.probes[probe]
            .phases
            .iter()
            .find(|s| s.phase == phase)
            .map(|s| (s.passed, s.checks))
            .unwrap_or_else(|| panic!("no {phase} stats:\n{}", report.markdown()))
    };
    let (passed, checks) = phase(0, Phase::Baseline);
    assert_eq!(passed, checks, "the client failed before the skew");
    let (passed, checks) = phase(0, Phase::Inject);
    let under_skew = format!("{passed}/{checks}");
    assert!(
        passed < checks / 2,
        "the client mostly passed under the skew: {passed}/{checks}"
    );
    assert!(report.probes[1].hypothesis_held, "{}", report.markdown());
    for p in [Phase::Baseline, Phase::Inject] {
        let (passed, checks) = phase(1, p);
        assert_eq!(
            passed, checks,
            "the certificate was not valid outside the client ({p})"
        );
    }
    let err = std::fs::read_to_string(dir.path().join("curl.err")).unwrap();
    assert!(
        err.contains("certificate has expired"),
        "curl said: {err:?}"
    );
    eprintln!(
        "measured: the client passed {under_skew} checks under the skew; curl: {}",
        err.trim()
    );
    assert_rolled_back(
        &daemon,
        &report,
        &[FaultState::Recovered, FaultState::Expired],
    );
}
