//! The shipped monitoring: `deploy/prometheus/chaosd-rules.yaml` passes `promtool check rules`
//! and its unit tests (`promtool test rules`), and every chaosd metric the rules and
//! `deploy/grafana/chaosd.json` use exists in a live daemon's `/metrics` once it has injected,
//! recovered and run something.

use std::{collections::BTreeSet, path::PathBuf, process::Command, time::Duration};

use chaosd::{
    api::{FaultSpec, NetConnectErrorParams},
    scenario::wire::RunRequest,
};
use chaosd_integration::{
    Daemon, TestCgroup, block_on, free_port, inject, prometheus::which, request, skip,
    unsupported_reason,
};

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_check_and_pass_their_unit_tests() {
    if which("promtool").is_none() {
        skip!("promtool is not installed (apt-get install prometheus; `cargo xtask test` does)");
    }
    let check = promtool(&["check", "rules", "chaosd-rules.yaml"]);
    assert!(check.contains("SUCCESS: 3 rules found"), "{check}");
    let test = promtool(&["test", "rules", "chaosd-rules.test.yaml"]);
    assert!(test.contains("SUCCESS"), "{test}");
}

/// `chaosd_*` names in `text` (PromQL in JSON or YAML).
fn chaosd_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("chaosd_") {
        let start = i + at;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |e| start + e);
        if before_ok {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

/// The sample names a scrape exposes: each `# TYPE` family with its type's suffixes.
fn exposed(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        }
    }
    names
}

#[test]
fn every_metric_in_the_dashboard_and_rules_is_exported() {
    let dashboard = std::fs::read_to_string(deploy("grafana/chaosd.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let panels = parsed["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    for p in panels {
        let exprs = p["targets"].as_array().expect("targets");
        assert!(
            exprs
                .iter()
                .all(|t| t["expr"].as_str().is_some_and(|e| e.contains("chaosd_"))),
            "panel {} queries something else",
            p["title"]
        );
    }
    let rules = std::fs::read_to_string(deploy("prometheus/chaosd-rules.yaml")).unwrap();
    let wanted: BTreeSet<String> = chaosd_names(&dashboard)
        .into_iter()
        .chain(chaosd_names(&rules))
        .collect();
    assert!(wanted.len() >= 8, "{wanted:?}");

    let daemon = Daemon::start();
    for kind in ["net.loss", "net.connect_error"] {
        if let Some(reason) = unsupported_reason(&daemon, kind) {
            skip!("{kind} unsupported: {reason}");
        }
    }
    // Counter and histogram families appear once they have a series: inject a packet and a
    // syscall fault, recover them, run a scenario.
    let cg = TestCgroup::new("deploy");
    let loss = inject(
        &daemon,
        &cg,
        chaosd_integration::loss_spec(1.0, Default::default(), Default::default()),
        "30s",
    );
    let connect = chaosd_integration::inject_request(
        &daemon,
        &request(
            FaultSpec::NetConnectError(NetConnectErrorParams {
                errno: "ECONNREFUSED".parse().unwrap(),
                percent: 100.0,
                filter: Default::default(),
            }),
            &[&cg],
            "30s",
        ),
    );
    let client = daemon.client();
    block_on(client.recover(&loss.id)).unwrap();
    block_on(client.recover(&connect.id)).unwrap();
    let port = free_port();
    let scenario = format!(
        "title = \"t\"\n[services.web]\nhttp = \"127.0.0.1:{port}\"\n[steady_state]\ninterval = \"100ms\"\nbaseline = \"300ms\"\nrecovery_confirm = 1\n[[steady_state.probe]]\nname = \"home\"\nhttp = \"http://127.0.0.1:{port}/\"\n[[step]]\nkind = \"net.loss\"\nparams = {{ percent = 1 }}\ntarget = \"web\"\nduration = \"300ms\"\n"
    );
    let id = block_on(client.start_run(&RunRequest {
        scenario,
        source: None,
    }))
    .unwrap()
    .id;
    let follow = client.follow_run(&id, 0, |_| {});
    block_on(async { tokio::time::timeout(Duration::from_secs(60), follow).await })
        .expect("the run did not end")
        .unwrap();

    let (status, body) = block_on(client.raw(hyper::Method::GET, "/metrics", None)).unwrap();
    assert!(status.is_success());
    let metrics = String::from_utf8_lossy(&body);
    let have = exposed(&metrics);
    let missing: Vec<&String> = wanted.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "used in deploy/ but not exported: {missing:?}\n/metrics:\n{metrics}"
    );
}

/// `deploy/kubernetes/chaosd.yaml`: a DaemonSet in the host's PID and network namespaces whose
/// capabilities are exactly the systemd unit's bounding set and whose host paths are only
/// those chaosd uses, each mounted at the same path.
#[test]
fn the_daemonset_asks_for_what_the_unit_does_and_mounts_only_chaosd_s_paths() {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(deploy("kubernetes/chaosd.yaml")).unwrap();
    let docs: Vec<serde_json::Value> = yaml_serde::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .collect();
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("no DaemonSet in the manifest");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["hostNetwork"], true);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["securityContext"]["privileged"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    let added: BTreeSet<String> = c["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("CAP_{}", v.as_str().unwrap()))
        .collect();
    let unit = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../systemd/chaosd.service"),
    )
    .unwrap();
    let bounding: BTreeSet<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(
        added, bounding,
        "the DaemonSet's capabilities differ from the unit's"
    );

    use chaosd::host::directories as dirs;
    let parent = |p: &str| {
        std::path::Path::new(p)
            .parent()
            .unwrap()
            .display()
            .to_string()
    };
    let used: BTreeSet<String> = [
        "/sys/fs/cgroup".to_string(),
        "/sys/fs/bpf".to_string(),
        "/sys/kernel/btf".to_string(),
        dirs::STATE_DIR.to_string(),
        parent(dirs::HISTORY_DB),
    ]
    .into();
    assert_eq!(parent(dirs::SOCKET), dirs::STATE_DIR);
    let mounts: Vec<(String, String)> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["mountPath"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut host_paths = BTreeSet::new();
    for v in pod["volumes"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let at = &mounts
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("volume {name} is not mounted"))
            .1;
        if let Some(path) = v["hostPath"]["path"].as_str() {
            assert!(
                used.contains(path),
                "hostPath {path} is no path chaosd uses"
            );
            assert_eq!(at, path, "{name} is mounted elsewhere than on the host");
            host_paths.insert(path.to_string());
        } else {
            assert_eq!(at.as_str(), parent(dirs::CONFIG), "{name}");
        }
    }
    assert_eq!(host_paths, used, "a path chaosd uses is not mounted");
}
