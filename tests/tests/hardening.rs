//! Production hardening: `chaosd --cleanup` reverts what a killed daemon left, every mutation
//! is in the audit trail with its peer and outcome, and the blast-radius policy refuses what
//! the config protects.

use std::{path::Path, process::Command};

use chaosd::{
    api::{FaultSpec, InjectRequest, ProcessPauseParams, TargetSelector},
    client::ClientError,
};
use chaosd_integration::{Daemon, TestCgroup, block_on, inject, request, workspace_bin};
use hyper::StatusCode;

fn pause() -> FaultSpec {
    FaultSpec::ProcessPause(ProcessPauseParams {})
}

fn frozen(cgroup: &TestCgroup) -> bool {
    std::fs::read_to_string(cgroup.dir().join("cgroup.freeze"))
        .unwrap()
        .trim()
        == "1"
}

fn journal_entries(state_dir: &Path) -> usize {
    std::fs::read_dir(state_dir.join("faults")).unwrap().count()
}

/// Runs `chaosd --cleanup` on `state_dir`.
fn try_cleanup(state_dir: &Path) -> std::process::Output {
    let empty_config = tempfile::NamedTempFile::new().unwrap();
    Command::new(workspace_bin("chaosd"))
        .arg("--cleanup")
        .arg("--config")
        .arg(empty_config.path())
        .arg("--state-dir")
        .arg(state_dir)
        .output()
        .unwrap()
}

/// Runs `chaosd --cleanup` on `state_dir`; returns its stdout, panicking unless it exits 0.
fn cleanup(state_dir: &Path) -> String {
    let out = try_cleanup(state_dir);
    assert!(
        out.status.success(),
        "chaosd --cleanup failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn cleanup_reverts_what_a_killed_daemon_left() {
    let mut daemon = Daemon::start();
    let cgroup = TestCgroup::new("cleanup");
    let fault = inject(&daemon, &cgroup, pause(), "60s");
    assert!(frozen(&cgroup));
    // A live daemon's faults are its own to revert.
    let refused = try_cleanup(&daemon.state_dir());
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("a running chaosd holds"), "{stderr}");
    assert!(frozen(&cgroup));
    daemon.kill9();
    // A dead daemon thaws nothing: this is the residue --cleanup is for.
    assert!(frozen(&cgroup));
    assert_eq!(journal_entries(&daemon.state_dir()), 1);

    let printed = cleanup(&daemon.state_dir());
    let expected = format!(
        "fault {} (process.pause) on {}: reverted",
        fault.id,
        cgroup.rel()
    );
    assert!(printed.contains(&expected), "{printed}");
    assert!(!frozen(&cgroup), "the cgroup is still frozen");
    assert_eq!(journal_entries(&daemon.state_dir()), 0);

    assert!(cleanup(&daemon.state_dir()).contains("nothing to clean"));
}

fn own_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim_end()
        .to_string()
}

#[test]
fn history_records_each_mutation_with_its_peer_and_outcome() {
    let daemon = Daemon::start();
    let cgroup = TestCgroup::new("history");
    let fault = inject(&daemon, &cgroup, pause(), "30s");
    block_on(daemon.client().recover(&fault.id)).unwrap();
    let mut root = request(pause(), &[&cgroup], "30s");
    root.targets = vec![TargetSelector::Cgroup("/".into())];
    let refused = daemon.try_inject(&root).unwrap_err();
    let stranger = recover_all_as_nobody(&daemon);

    let history = block_on(daemon.client().history(10)).unwrap();
    // Reads (the readiness polls, this fetch) are not recorded.
    assert_eq!(history.len(), 4, "{history:#?}");
    let unauthorised = &history[0];
    assert_eq!(unauthorised.uid, 65534);
    assert_eq!(unauthorised.pid, Some(stranger as i32));
    assert_eq!(unauthorised.comm.as_deref(), Some("chaosctl"));
    assert_eq!(
        (unauthorised.method.as_str(), unauthorised.status),
        ("DELETE", 403)
    );
    assert!(
        unauthorised.outcome.contains("may not use chaosd"),
        "{}",
        unauthorised.outcome
    );
    for e in &history[1..] {
        assert_eq!(e.uid, 0);
        assert_eq!(e.pid, Some(std::process::id() as i32));
        assert_eq!(e.comm.as_deref(), Some(own_comm().as_str()));
    }
    let (denied, recovered, injected) = (&history[1], &history[2], &history[3]);
    assert_eq!(
        (injected.method.as_str(), injected.path.as_str()),
        ("POST", "/v1/faults")
    );
    assert_eq!(injected.status, 201);
    assert_eq!(injected.outcome, format!("ok: {}", fault.id));
    assert!(
        injected
            .request
            .as_deref()
            .unwrap()
            .contains("process.pause")
    );
    assert_eq!(recovered.method, "DELETE");
    assert_eq!(recovered.path, format!("/v1/faults/{}", fault.id));
    assert_eq!(recovered.outcome, format!("ok: {}", fault.id));
    assert_eq!(denied.status, 400);
    assert_eq!(denied.outcome, format!("error: {refused}"));
    assert!(denied.outcome.contains("root"), "{}", denied.outcome);

    let out = daemon.chaosctl_ok(&["history", "--limit", "2", "--json"]);
    let shown: Vec<chaosd::daemon::audit::HistoryEntry> = serde_json::from_str(&out).unwrap();
    assert_eq!(shown, history[..2]);
}

/// `chaosctl recover --all` as uid 65534 on a socket opened to everyone, so that the daemon's
/// peer check is what refuses it; returns that chaosctl's pid.
fn recover_all_as_nobody(daemon: &Daemon) -> u32 {
    use std::os::unix::{fs::PermissionsExt as _, process::CommandExt as _};
    for path in [daemon.socket().parent().unwrap(), &daemon.socket()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let child = Command::new(workspace_bin("chaosctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["recover", "--all"])
        .uid(65534)
        .gid(65534)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "nobody was allowed to recover");
    pid
}

fn expect_refusal(daemon: &Daemon, req: &InjectRequest, status: StatusCode, key: &str) {
    match daemon.try_inject(req) {
        Err(ClientError::Api(msg, got)) => {
            assert_eq!(got, status, "{msg}");
            assert!(msg.contains(key), "{msg:?} does not name {key}");
        }
        other => panic!("expected a refusal naming {key}, got {other:?}"),
    }
}

#[test]
fn policy_refuses_protected_cgroups_slices_and_one_fault_too_many() {
    let base = TestCgroup::new("policy");
    let protected = base.child("protected");
    let inside = protected.child("inner");
    let slice = base.child("batch.slice");
    let (first, second) = (base.child("first"), base.child("second"));
    let daemon = Daemon::start_with_config(&format!(
        "[policy]\nprotected_cgroups = [\"{}\"]\nrefuse_slices = true\nmax_concurrent_faults = 1\n",
        protected.rel()
    ));

    for target in [&protected, &inside, &base] {
        let req = request(pause(), &[target], "30s");
        expect_refusal(
            &daemon,
            &req,
            StatusCode::BAD_REQUEST,
            "policy.protected_cgroups",
        );
    }
    let req = request(pause(), &[&slice], "30s");
    expect_refusal(
        &daemon,
        &req,
        StatusCode::BAD_REQUEST,
        "policy.refuse_slices",
    );
    assert!(
        !frozen(&protected) && !frozen(&slice),
        "a refused fault was applied"
    );

    let kept = inject(&daemon, &first, pause(), "30s");
    let req = request(pause(), &[&second], "30s");
    expect_refusal(
        &daemon,
        &req,
        StatusCode::CONFLICT,
        "policy.max_concurrent_faults",
    );
    assert!(!frozen(&second));
    block_on(daemon.client().recover(&kept.id)).unwrap();
    let room_again = inject(&daemon, &second, pause(), "30s");
    assert!(frozen(&second));
    block_on(daemon.client().recover(&room_again.id)).unwrap();
}

#[test]
fn cleanup_removes_the_cgroups_of_runs_a_killed_daemon_left() {
    let state = tempfile::Builder::new()
        .prefix("chaosd-test-")
        .tempdir()
        .unwrap();
    // What a daemon killed mid-run leaves: the run's cgroup with a service cgroup inside, and
    // the marker naming it in the state dir.
    let dir = chaosd::host::cgroup::cgroup2_mount()
        .unwrap()
        .join(format!("chaosd-run-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("web")).unwrap();
    std::fs::create_dir_all(state.path().join("runs")).unwrap();
    std::fs::write(
        state.path().join("runs").join("deadbeef.cgroup"),
        dir.as_os_str().as_encoded_bytes(),
    )
    .unwrap();
    let out = try_cleanup(state.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.exists(), "the run's cgroup is still there");
    assert!(text.contains("scenario run cgroups removed: 1"), "{text}");
    assert!(!state.path().join("runs").join("deadbeef.cgroup").exists());
}
