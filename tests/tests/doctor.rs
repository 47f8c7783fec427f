//! `GET /v1/capabilities` and `chaosctl doctor`: what this host supports, and an unsupported
//! kind refused with the same reason, nothing applied.

use chaosd::api::{FaultSpec, IoErrnoParams};
use chaosd_integration::{Daemon, TestCgroup, block_on, unsupported_reason};

fn io_fault() -> FaultSpec {
    FaultSpec::IoErrno(IoErrnoParams {
        errno: "EIO".parse().unwrap(),
        path: None,
        ops: vec![],
        percent: 100.0,
    })
}

#[test]
fn doctor_io_support_matches_the_kernel_and_unsupported_injects_are_refused() {
    let daemon = Daemon::start();
    let reason = unsupported_reason(&daemon, "io.errno");
    if std::env::var_os("CHAOSD_VM").is_some() {
        // The Debian kernels of the VM harness load BPF LSM programs.
        assert_eq!(reason, None, "io.errno unsupported in the VM");
        return;
    }
    let Some(reason) = reason else {
        return; // a host that supports it: io.rs covers it
    };
    if std::fs::read_to_string("/proc/version").is_ok_and(|v| v.contains("6.18")) {
        assert!(
            reason.contains("BPF LSM programs are refused by this kernel")
                && reason.contains("EPERM"),
            "unexpected reason on the 6.18 host: {reason}"
        );
    }
    let target = TestCgroup::new("doctor");
    let req = chaosd::api::InjectRequest {
        fault: io_fault(),
        targets: vec![chaosd::api::TargetSelector::Cgroup(
            target.rel().to_string(),
        )],
        duration: Some("30s".into()),
    };
    let err = daemon.try_inject(&req).unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(422), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&reason) && msg.contains("Fix:"), "{msg}");
    assert!(
        block_on(daemon.client().list(true)).unwrap().is_empty(),
        "something was applied"
    );
    assert!(daemon.log_text().contains("I/O faults unavailable"));
}

#[test]
fn doctor_chaosctl_doctor_lists_every_kind_with_reason_and_fix() {
    let daemon = Daemon::start();
    let text = daemon.chaosctl_ok(&["doctor"]);
    for kind in ["net.loss", "io.errno"] {
        assert!(text.contains(kind), "doctor does not list {kind}:\n{text}");
    }
    let caps = block_on(daemon.client().capabilities()).unwrap();
    for k in caps.kinds.iter().filter(|k| !k.supported) {
        let fix = k.fix.as_deref().unwrap();
        assert!(
            text.contains(fix),
            "doctor does not print the fix for {}:\n{text}",
            k.kind
        );
    }
    assert!(caps.host.iter().any(|h| h.name == "btf"));
}

#[test]
fn doctor_capabilities_of_one_kind_load_only_its_programs() {
    let daemon = Daemon::start();
    let caps = block_on(daemon.client().capabilities_of("net.loss")).unwrap();
    assert!(
        caps.kind("net.loss").is_some_and(|k| k.supported),
        "{caps:?}"
    );
    let log = daemon.log_text();
    assert!(log.contains("group=Packet"), "{log}");
    for other in ["group=Lsm", "group=Classifier", "group=ClockExec"] {
        assert!(
            !log.contains(other),
            "asking for net.loss loaded {other}:\n{log}"
        );
    }
}
