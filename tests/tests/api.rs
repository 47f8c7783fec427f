//! The API's edges: bad input gets a clear error and leaves nothing applied; unauthorised
//! peers are refused; the socket speaks plain HTTP.

use std::{os::unix::fs::PermissionsExt as _, process::Command};

use chaosd::{
    api::{Direction, FaultSpec, InjectRequest, NetLossParams, TargetSelector},
    client::ClientError,
};
use chaosd_integration::{Daemon, TestCgroup, block_on, loss_request, request, workspace_bin};
use hyper::{Method, StatusCode};

/// The daemon has no faults, no journal entries and no attached programs.
fn assert_nothing_applied(daemon: &Daemon) {
    assert!(
        block_on(daemon.client().list(true)).unwrap().is_empty(),
        "a fault was recorded"
    );
    assert!(
        !block_on(daemon.client().status())
            .unwrap()
            .net_programs_attached,
        "programs were attached"
    );
    let journal = std::fs::read_dir(daemon.state_dir().join("faults"))
        .unwrap()
        .count();
    assert_eq!(journal, 0, "a journal entry was left");
}

fn expect_bad_request(daemon: &Daemon, req: &InjectRequest, needle: &str) {
    match daemon.try_inject(req) {
        Err(ClientError::Api(msg, status)) => {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
            assert!(
                msg.contains(needle),
                "error {msg:?} does not mention {needle:?}"
            );
        }
        other => panic!("expected a 400 mentioning {needle:?}, got {other:?}"),
    }
    assert_nothing_applied(daemon);
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let daemon = Daemon::start_with_config("[faults]\nmax_duration = \"10m\"\n");
    let cg = TestCgroup::new("api");

    let mut unknown = loss_request(&cg, 30.0, Direction::Egress, "30s");
    unknown.targets = vec![TargetSelector::Cgroup("/chaosd-no-such-cgroup".into())];
    expect_bad_request(&daemon, &unknown, "does not exist");

    expect_bad_request(
        &daemon,
        &loss_request(&cg, 150.0, Direction::Egress, "30s"),
        "percent",
    );
    expect_bad_request(
        &daemon,
        &loss_request(&cg, 0.0, Direction::Egress, "30s"),
        "percent",
    );

    let mut no_duration = loss_request(&cg, 30.0, Direction::Egress, "30s");
    no_duration.duration = None;
    expect_bad_request(&daemon, &no_duration, "duration is required");

    expect_bad_request(
        &daemon,
        &loss_request(&cg, 30.0, Direction::Egress, "11m"),
        "maximum",
    );
    expect_bad_request(
        &daemon,
        &loss_request(&cg, 30.0, Direction::Egress, "soon"),
        "not valid",
    );

    let mut root = loss_request(&cg, 30.0, Direction::Egress, "30s");
    root.targets = vec![TargetSelector::Cgroup("/".into())];
    expect_bad_request(&daemon, &root, "root");

    let mut escape = loss_request(&cg, 30.0, Direction::Egress, "30s");
    escape.targets = vec![TargetSelector::Cgroup(format!("{}/../..", cg.rel()))];
    expect_bad_request(&daemon, &escape, "not a directory of the cgroup2");

    let mut own = loss_request(&cg, 30.0, Direction::Egress, "30s");
    own.targets = vec![TargetSelector::Pid(daemon.pid().as_raw() as u32)];
    expect_bad_request(&daemon, &own, "root"); // the daemon runs in the root cgroup here

    let mut no_pid = loss_request(&cg, 30.0, Direction::Egress, "30s");
    no_pid.targets = vec![TargetSelector::Pid(u32::MAX - 1)];
    expect_bad_request(&daemon, &no_pid, "no process");

    let mut no_unit = loss_request(&cg, 30.0, Direction::Egress, "30s");
    no_unit.targets = vec![TargetSelector::Unit("chaosd-no-such.service".into())];
    expect_bad_request(&daemon, &no_unit, "no cgroup of that name");

    let mut none = loss_request(&cg, 30.0, Direction::Egress, "30s");
    none.targets.clear();
    expect_bad_request(&daemon, &none, "target");
}

#[test]
fn malformed_json_and_unknown_routes_get_json_errors() {
    let daemon = Daemon::start();
    for body in [
        &b"{not json"[..],
        br#"{"fault":{"kind":"net.teleport","params":{}},"targets":[],"duration":"1s"}"#,
    ] {
        let (status, bytes) = block_on(daemon.client().raw(
            Method::POST,
            "/v1/faults",
            Some(body.to_vec()),
        ))
        .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let err: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            err["error"]
                .as_str()
                .unwrap()
                .contains("invalid request body"),
            "{err}"
        );
    }
    let (status, _) = block_on(daemon.client().raw(Method::GET, "/v2/nothing", None)).unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = block_on(
        daemon
            .client()
            .raw(Method::DELETE, "/v1/faults/ffffffff", None),
    )
    .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_nothing_applied(&daemon);
}

/// `chaosctl list` as uid 65534 (gid 65534) against a daemon whose `daemon.group` is `group`;
/// returns chaosctl's stderr, after checking that it failed.
fn list_as_nobody(group: &str) -> String {
    let daemon = Daemon::start_with_config(&format!("[daemon]\ngroup = \"{group}\"\n"));
    // Let anyone reach the socket file so the daemon's own check is what refuses.
    let dir = daemon.socket().parent().unwrap().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(daemon.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = {
        use std::os::unix::process::CommandExt as _;
        Command::new(workspace_bin("chaosctl"))
            .arg("--socket")
            .arg(daemon.socket())
            .arg("list")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "nobody was served: {stderr}");
    assert!(
        stderr.contains("uid 65534 may not use chaosd"),
        "expected the daemon's 403, got: {stderr}"
    );
    stderr
}

#[test]
fn a_peer_that_is_neither_root_nor_in_the_group_gets_403() {
    // A group that exists here and that uid/gid 65534 is not in: its name is the way in.
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(1))
        .unwrap()
        .filter(|g| !g.mem.iter().any(|m| m == "nobody"))
        .expect("this test needs a group with gid 1 (daemon) that nobody is not in");
    let stderr = list_as_nobody(&group.name);
    let named = format!("members of group {} (gid 1)", group.name);
    assert!(stderr.contains(&named), "{stderr:?} does not say {named:?}");

    // A group that does not exist: only root may, and no group is named.
    let missing = "chaosd-test-no-such-group";
    assert!(nix::unistd::Group::from_name(missing).unwrap().is_none());
    let stderr = list_as_nobody(missing);
    assert!(stderr.contains("only root may"), "{stderr}");
    assert!(
        !stderr.contains(missing) && !stderr.contains("members of"),
        "the refusal names a group that does not exist: {stderr}"
    );
}

#[test]
fn chaosctl_drives_the_daemon_end_to_end_with_json() {
    let daemon = Daemon::start();
    let cg = TestCgroup::new("ctl");
    let ctl = |args: &[&str]| {
        let out = Command::new(workspace_bin("chaosctl"))
            .arg("--socket")
            .arg(daemon.socket())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = ctl(&[
        "--json",
        "inject",
        "net",
        "loss",
        "--cgroup",
        cg.rel(),
        "--percent",
        "30",
        "--duration",
        "30s",
    ]);
    assert!(ok, "{err}");
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let (ok, out, _) = ctl(&["list"]);
    assert!(
        ok && out.contains(&id) && out.contains("net.loss") && out.contains(cg.rel()),
        "{out}"
    );
    let (ok, out, _) = ctl(&["show", &id]);
    assert!(ok && out.contains("state:      active"), "{out}");
    let (ok, _, _) = ctl(&["recover", "--all"]);
    assert!(ok);
    let (ok, out, _) = ctl(&["--json", "list"]);
    assert!(ok && out.trim() == "[]", "{out}");

    let (ok, _, err) = ctl(&[
        "inject",
        "net",
        "loss",
        "--cgroup",
        cg.rel(),
        "--percent",
        "150",
        "--duration",
        "30s",
    ]);
    assert!(
        !ok && err.contains("percent must be above 0 and at most 100"),
        "{err}"
    );
    let (ok, _, err) = ctl(&["show", "nope"]);
    assert!(!ok && err.contains("no fault with id nope"), "{err}");

    // The same request built by hand stays accepted: the wire format is the contract.
    let req = InjectRequest {
        fault: FaultSpec::NetLoss(NetLossParams {
            percent: 5.0,
            direction: Direction::Both,
            filter: Default::default(),
        }),
        targets: vec![TargetSelector::Cgroup(cg.rel().into())],
        duration: Some("5s".into()),
    };
    assert!(daemon.try_inject(&req).is_ok());
}

#[test]
fn durations_are_echoed_as_written() {
    let daemon = Daemon::start_with_config("[faults]\nmax_duration = \"200d\"\n");
    let cg = TestCgroup::new("duration");
    let pause = FaultSpec::ProcessPause(chaosd::api::ProcessPauseParams {});
    let req = request(pause.clone(), &[&cg], "100d");
    let raw = serde_json::to_vec(&req).unwrap();
    let (status, body) =
        block_on(daemon.client().raw(Method::POST, "/v1/faults", Some(raw))).unwrap();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["duration"], "100d", "{answer}");
    assert_eq!(answer["duration_ms"], 100 * 86_400_000u64, "{answer}");
    let id = answer["id"].as_str().unwrap().to_string();

    let shown = block_on(daemon.client().get(&id)).unwrap();
    assert_eq!(shown.duration, "100d");
    let listed = block_on(daemon.client().list(false)).unwrap();
    assert_eq!(listed[0].duration, "100d");
    let journal = daemon.state_dir().join("faults").join(format!("{id}.json"));
    let journaled: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&journal).unwrap()).unwrap();
    assert_eq!(journaled["duration"], "100d", "{journaled}");

    let ctl = |args: &[&str]| daemon.chaosctl_ok(args);
    let list = ctl(&["list"]);
    let row = list.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(row.split_whitespace().any(|w| w == "100d"), "{list}");
    let show = ctl(&["show", &id]);
    assert!(show.lines().any(|l| l == "duration:   100d"), "{show}");
    block_on(daemon.client().recover(&id)).unwrap();

    // Refused as written too: the maximum of a default daemon is 1h.
    let strict = Daemon::start();
    match strict.try_inject(&request(pause, &[&cg], "100d")) {
        Err(ClientError::Api(msg, status)) => {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
            assert!(
                msg.contains("duration 100d is above the maximum of 1h"),
                "{msg}"
            );
        }
        other => panic!("100d was not refused: {other:?}"),
    }
}

#[test]
fn shipped_binaries_carry_no_test_verbs() {
    // What tests and benchmarks run inside cgroups lives in chaosd-test-helper.
    let test_verbs = [
        "udp-ping",
        "udp-stamped",
        "udp-recv",
        "tcp-connect",
        "file-ops",
        "clock-bench",
    ];
    for bin in ["chaosd", "chaosctl"] {
        for verb in test_verbs {
            let out = Command::new(workspace_bin(bin))
                .args([&format!("__{verb}"), "--help"])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && stderr.contains("unrecognized subcommand"),
                "{bin} still has __{verb}: {stderr}"
            );
        }
    }
    let helper = chaosd_integration::helper_bin();
    for verb in test_verbs {
        let out = Command::new(&helper)
            .args([verb, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "chaosd-test-helper has no {verb}");
    }
}
