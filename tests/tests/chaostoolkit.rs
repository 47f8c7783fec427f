//! The real `chaos run` (Chaos Toolkit from PyPI) with chaosd's extension against a live
//! chaosd and a real web service (Python's http.server) in a target cgroup: an experiment whose
//! method cuts the service off and ends the fault completes with its hypothesis holding and
//! the fault's id in the journal; one that leaves the fault in force deviates, and its
//! rollback still ends the fault. The same experiment runs against chaosd's remote listener
//! over mutual TLS (the extension's `chaosd_url` mode).

use std::{fs, net::TcpStream, path::Path, process::Command, time::Duration};

use chaosd::api::FaultState;
use chaosd_integration::{
    Daemon, TestCgroup, block_on, chaostoolkit, free_port, mtls::Pki, netns::KillOnDrop,
    spawn_in_cgroup, wait_for,
};
use serde_json::{Value, json};

/// A real HTTP server in `cgroup` on 127.0.0.1:`port`, answering once it listens.
fn web_service(cgroup: &TestCgroup, port: u16, root: &Path) -> KillOnDrop {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .arg("--directory")
    .arg(root)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let server = KillOnDrop(spawn_in_cgroup(&mut cmd, cgroup.dir()).unwrap());
    wait_for(Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .expect("http.server did not listen");
    server
}

/// The extension's configuration for this host's socket.
fn on_socket(socket: &Path) -> Value {
    json!({"chaosd_socket": socket.display().to_string()})
}

fn experiment(configuration: Value, cgroup: &str, port: u16, end_it: bool) -> Value {
    let home_page = json!({
        "type": "probe", "name": "home-page-answers", "tolerance": 200,
        "provider": {"type": "http", "url": format!("http://127.0.0.1:{port}/"), "timeout": 2}
    });
    let mut method = vec![
        json!({
            "type": "action", "name": "cut-the-service-off",
            "provider": {
                "type": "python", "module": "chaosd.actions", "func": "inject",
                "arguments": {
                    "kind": "net.loss", "duration": "2m", "cgroup": cgroup,
                    "params": {"percent": 100, "direction": "both"}
                }
            }
        }),
        json!({
            "type": "probe", "name": "the-fault-is-in-force", "tolerance": true,
            "provider": {
                "type": "python", "module": "chaosd.probes", "func": "fault_active",
                "arguments": {"kind": "net.loss"}
            }
        }),
    ];
    if end_it {
        method.push(json!({
            "type": "action", "name": "end-the-fault",
            "provider": {"type": "python", "module": "chaosd.actions", "func": "recover"}
        }));
    }
    json!({
        "title": "the web service answers again once its network comes back",
        "description": "chaosd drops every packet of the service's cgroup for a while",
        "configuration": configuration,
        "steady-state-hypothesis": {"title": "the service answers", "probes": [home_page]},
        "method": method,
        "rollbacks": [{
            "type": "action", "name": "end-what-this-run-injected",
            "provider": {"type": "python", "module": "chaosd.actions", "func": "recover"}
        }]
    })
}

/// Runs `chaos run` on `exp`; returns (exit success, the journal).
fn chaos_run(exp: &Value, dir: &Path) -> (bool, Value) {
    let venv = chaostoolkit::venv();
    let file = dir.join("experiment.json");
    let journal = dir.join("journal.json");
    fs::write(&file, serde_json::to_vec_pretty(exp).unwrap()).unwrap();
    let out = Command::new(venv.join("bin/chaos"))
        .args(["--no-version-check", "--log-file"])
        .arg(dir.join("chaostoolkit.log"))
        .arg("run")
        // The default strategy skips rollbacks once the hypothesis deviates afterwards.
        .args(["--rollback-strategy", "always"])
        .arg("--journal-path")
        .arg(&journal)
        .arg(&file)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = fs::read_to_string(&journal).unwrap_or_else(|e| {
        panic!(
            "no journal ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), serde_json::from_str(&text).unwrap())
}

#[test]
fn chaos_run_drives_chaosd_through_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let cgroup = TestCgroup::new("ctk-web");
    let port = free_port();
    let _web = web_service(&cgroup, port, dir.path());
    let daemon = Daemon::start();

    // Completed: hypothesis before and after hold, the method's inject is in the journal.
    let (ok, journal) = chaos_run(
        &experiment(on_socket(&daemon.socket()), cgroup.rel(), port, true),
        dir.path(),
    );
    assert!(ok, "chaos run failed: {journal:#}");
    assert_eq!(journal["status"], "completed", "{journal:#}");
    assert_eq!(journal["deviated"], false);
    let id = journal["run"][0]["output"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no fault id in the journal: {journal:#}"))
        .to_string();
    assert_eq!(
        journal["run"][1]["output"], true,
        "fault_active saw nothing"
    );
    let listed = block_on(daemon.client().list(true)).unwrap();
    let fault = listed
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("{id} unknown to chaosd: {listed:?}"));
    assert_eq!(fault.state, FaultState::Recovered);
    assert_eq!(fault.targets[0].cgroup, cgroup.rel());

    // Deviated: the fault stays in force, the service does not answer, the rollback ends it.
    let (ok, journal) = chaos_run(
        &experiment(on_socket(&daemon.socket()), cgroup.rel(), port, false),
        dir.path(),
    );
    assert!(!ok, "a deviated run exited 0: {journal:#}");
    assert_eq!(journal["deviated"], true, "{journal:#}");
    assert!(
        block_on(daemon.client().list(false)).unwrap().is_empty(),
        "the rollback left a fault in force: {:#}",
        journal["rollbacks"]
    );
    assert!(
        TcpStream::connect_timeout(
            &format!("127.0.0.1:{port}").parse().unwrap(),
            Duration::from_secs(2)
        )
        .is_ok(),
        "the service is still cut off"
    );
}

#[test]
fn chaos_run_drives_a_remote_chaosd_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cgroup = TestCgroup::new("ctk-remote");
    let port = free_port();
    let _web = web_service(&cgroup, port, dir.path());
    let pki = Pki::new();
    let remote_port = free_port();
    let daemon = Daemon::start_with_config(&pki.remote_config(remote_port));
    let configuration = json!({
        "chaosd_url": format!("https://127.0.0.1:{remote_port}"),
        "chaosd_server_name": chaosd_integration::mtls::SERVER_NAME,
        "chaosd_ca": pki.ca,
        "chaosd_cert": pki.client.cert,
        "chaosd_key": pki.client.key,
    });
    let (ok, journal) = chaos_run(
        &experiment(configuration, cgroup.rel(), port, true),
        dir.path(),
    );
    assert!(ok, "chaos run over TLS failed: {journal:#}");
    assert_eq!(journal["status"], "completed", "{journal:#}");
    let id = journal["run"][0]["output"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no fault id in the journal: {journal:#}"))
        .to_string();
    assert_eq!(
        journal["run"][1]["output"], true,
        "fault_active saw nothing"
    );
    let fault = block_on(daemon.client().get(&id)).unwrap();
    assert_eq!(fault.state, FaultState::Recovered);
    // Audited with the client certificate's subject.
    let history = block_on(daemon.client().history(20)).unwrap();
    let post = history
        .iter()
        .find(|e| e.method == "POST" && e.path == "/v1/faults")
        .unwrap_or_else(|| panic!("{history:?}"));
    assert!(
        post.peer
            .as_deref()
            .is_some_and(|p| p.starts_with(pki.client_subject)),
        "{post:?}"
    );
    assert_eq!(post.outcome, format!("ok: {id}"));
}

/// The extension's own unit tests (`integrations/chaostoolkit/tests`), in the same virtualenv.
#[test]
fn the_extension_s_own_tests_pass() {
    let venv = chaostoolkit::venv();
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("../integrations/chaostoolkit");
    let out = Command::new(venv.join("bin/python"))
        .args(["-m", "unittest", "discover", "-s", "tests", "-v"])
        .current_dir(&package)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Ran 8 tests"), "{text}");
}
