//! `http.status`: chaosd answers the target's matching requests with a status code, headers
//! and a body; the server never sees them. The answer keeps the connection alive unless the
//! client asked to close it (or chaosd cannot know where the request's body ends).

use std::sync::{Arc, Mutex};

use super::{Action, apply_http, validate_select};
use crate::{
    api::HttpStatusParams,
    error::{FaultError, RequestError},
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

/// The largest body an answer may carry (it is kept in memory for the fault's life).
const MAX_BODY: usize = 1 << 20;

pub fn validate(p: &HttpStatusParams) -> Result<(), RequestError> {
    validate_select(p)?;
    let body = p.body.as_deref().unwrap_or_default();
    if p.status.get().bodiless() && !body.is_empty() {
        return Err(RequestError::BadParam {
            field: "body",
            input: format!("{} bytes", body.len()),
            reason: format!("a {} response has no body; drop --body", p.status),
        });
    }
    if body.len() > MAX_BODY {
        return Err(RequestError::BadParam {
            field: "body",
            input: format!("{} bytes", body.len()),
            reason: "must be at most 1 MiB".into(),
        });
    }
    Ok(())
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &HttpStatusParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    apply_http(kernel, p, answer(p), ctx)
}

/// The answer's head (status line, the request's headers, `content-length`) and body.
fn answer(p: &HttpStatusParams) -> Action {
    let code = p.status.get().0;
    let reason = hyper::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Status");
    let body = p.body.clone().unwrap_or_default().into_bytes();
    let mut head = format!("HTTP/1.1 {code} {reason}\r\n");
    for h in &p.headers {
        let h = h.value();
        head.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    if !p.status.get().bodiless() {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    Action::Answer { head, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_has_the_status_headers_and_length() {
        let p: HttpStatusParams = serde_json::from_str(
            r#"{"status": "503", "headers": ["Retry-After: 5"], "body": "down"}"#,
        )
        .unwrap();
        validate(&p).unwrap();
        let Action::Answer { head, body } = answer(&p) else {
            panic!("not an answer")
        };
        assert_eq!(
            head,
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\ncontent-length: 4\r\n"
        );
        assert_eq!(body, b"down");
    }

    #[test]
    fn a_body_on_a_204_is_refused() {
        let p: HttpStatusParams = serde_json::from_str(r#"{"status": 204, "body": "x"}"#).unwrap();
        assert!(validate(&p).unwrap_err().to_string().contains("no body"));
    }
}
