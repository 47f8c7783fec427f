//! Bytes as the body of `POST /v1/faults` and `POST /v1/runs`, through the decoding and the
//! host-independent checks the daemon runs on them before it applies anything.

#![no_main]

use std::{path::Path, sync::LazyLock, time::Duration};

use chaosd::{
    api::{InjectRequest, TargetSelector},
    host::cgroup,
    config::{FaultsConfig, PolicyConfig},
    faults::FaultKinds,
    engine::request,
    scenario::{format, wire::RunRequest},
};
use libfuzzer_sys::fuzz_target;

/// Targets resolve under a mount that does not exist: the selector's text is checked and
/// normalised, and no real cgroup is ever looked up.
const NO_MOUNT: &str = "/nonexistent/chaosd-fuzz";

/// The default limits, and the widest a config file can set.
static CONFIGS: LazyLock<[FaultsConfig; 2]> = LazyLock::new(|| {
    [
        FaultsConfig::default(),
        FaultsConfig {
            max_duration: Some(Duration::MAX),
            default_duration: Some(Duration::MAX),
            apply_timeout: Some(Duration::MAX),
        },
    ]
});

fuzz_target!(|body: &[u8]| {
    if let Ok(req) = chaosd::daemon::http::body::decode_json::<InjectRequest>(body) {
        check_inject(&req);
    }
    if let Ok(run) = chaosd::daemon::http::body::decode_json::<RunRequest>(body) {
        let _ = format::parse(&run.scenario);
    }
});

fn check_inject(req: &InjectRequest) {
    for cfg in CONFIGS.iter() {
        let _ = request::check_inject(req, cfg);
    }
    let _ = FaultKinds::target_rule(&req.fault);
    let policy = PolicyConfig {
        refuse_slices: true,
        ..PolicyConfig::default()
    };
    for selector in &req.targets {
        let _ = cgroup::resolve(
            Path::new(NO_MOUNT),
            selector,
            chaosd_common::net::MAX_CGROUP_LEVEL,
        );
        if let TargetSelector::Cgroup(path) = selector {
            let _ = policy.check_target(path);
        }
    }
}
