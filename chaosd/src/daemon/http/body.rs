//! Request bodies from bytes to values, as every route decodes them (the fuzz targets in
//! `fuzz/` drive these too).

use axum::{Json, http::HeaderMap, http::StatusCode};
use serde::de::DeserializeOwned;

use super::ApiError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InjectRequest;

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
    fn bad_bodies_say_where() {
        let e = decode_json::<InjectRequest>(b"{\"fault\": 1}").unwrap_err();
        let text = format!("{e:?}");
        assert!(
            text.contains("invalid request body") && text.contains("fault"),
            "{text}"
        );
    }
}
