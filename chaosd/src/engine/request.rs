//! The checks of a request that need no host state: the daemon runs these before anything is
//! applied, and the fuzz targets (`fuzz/`) run exactly these.

use std::time::Duration;

use crate::{
    api::InjectRequest, config::FaultsConfig, engine::registry::resolve_duration, error::Error,
    faults::FaultKinds,
};

/// The checks of an inject request that need no host state: the duration against the config
/// (returned) and the kind's parameters. Targets and kernel support are checked after this.
pub fn check_inject(req: &InjectRequest, faults: &FaultsConfig) -> Result<Duration, Error> {
    let duration = resolve_duration(req.duration.as_deref(), faults)?;
    FaultKinds::validate(&req.fault)?;
    Ok(duration)
}

/// A duration as the request wrote it (trimmed), else `resolved` as humantime prints it (a
/// configured default): what answers, `chaosctl list` and the journal echo back.
pub fn written_duration(asked: Option<&str>, resolved: Duration) -> String {
    match asked {
        Some(s) => s.trim().to_string(),
        None => humantime::format_duration(resolved).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_echoed_as_written() {
        let d = Duration::from_secs(100 * 86_400);
        assert_eq!(written_duration(Some(" 100d "), d), "100d");
        assert_eq!(written_duration(None, Duration::from_secs(90)), "1m 30s");
        let cfg = FaultsConfig::default();
        let err = resolve_duration(Some("100d"), &cfg)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("duration 100d is above the maximum of 1h"),
            "{err}"
        );
    }
}
