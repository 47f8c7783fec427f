//! Request bodies from bytes to checked values, without touching the host: the server runs
//! these before anything is applied, and the fuzz targets (`fuzz/`) run exactly these.

use std::time::Duration;

use axum::{Json, http::HeaderMap, http::StatusCode};
use serde::de::DeserializeOwned;

use crate::{
    api::InjectRequest, config::FaultsConfig, error::Error, faults::FaultKinds,
    engine::registry::resolve_duration, daemon::http::ApiError,
};

/// A JSON body as every route decodes it (`ApiJson`); the error says where the body is wrong.
pub fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    Json::<T>::from_bytes(body).map(|Json(v)| v).map_err(|r| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {}", r.body_text()),
        )
    })
}

/// `application/json`, or a `+json` type, as axum's `Json` extractor requires.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json") || sub.to_ascii_lowercase().ends_with("+json"))
}

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
    fn json_content_types() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(axum::http::header::CONTENT_TYPE, v.parse().unwrap());
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/problem+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
        assert!(!is_json(&HeaderMap::new()));
    }

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

    #[test]
    fn bad_bodies_say_where() {
        let e = decode_json::<InjectRequest>(b"{\"fault\": 1}").unwrap_err();
        let text = format!("{e:?}");
        assert!(
            text.contains("invalid request body") && text.contains("fault"),
            "{text}"
        );
    }
}
