//! Instant PromQL queries against a Prometheus HTTP API (`GET /api/v1/query?query=..`), for
//! prometheus probes and `[[abort.prometheus]]` rules. A query must yield one number: a scalar,
//! or a vector of exactly one sample (aggregate with `sum(..)` otherwise).

use serde::{Deserialize, de::IgnoredAny};

use crate::scenario::{
    fetch::{self, HttpUrl, Tls},
    format::PromQuery,
};

/// The API's envelope; `data` on success, `error` otherwise.
#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Scalar(Sample),
    Vector(Vec<VectorSample>),
    Matrix(IgnoredAny),
    String(IgnoredAny),
}

#[derive(Deserialize)]
struct VectorSample {
    value: Sample,
}

/// `[unix time, "value"]`: Prometheus sends numbers as strings (NaN and ±Inf included).
#[derive(Deserialize)]
struct Sample(IgnoredAny, String);

/// Runs `q` once and returns its value.
pub async fn instant(q: &PromQuery, tls: Option<&Tls>) -> Result<f64, String> {
    let mut headers = Vec::new();
    if let Some(path) = &q.bearer_token_file {
        let token = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("reading bearer_token_file {}: {e}", path.display()))?;
        headers.push(("authorization", format!("Bearer {}", token.trim())));
    }
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", &q.query)
        .finish();
    let url = HttpUrl {
        path: format!("/api/v1/query?{query}"),
        ..q.server.clone()
    };
    let resp = fetch::get(&url, &headers, tls).await?;
    value_of(resp.status, &resp.body)
}

/// The one value of a query's answer, or what is wrong with it.
fn value_of(status: u16, body: &[u8]) -> Result<f64, String> {
    let env: Envelope = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        format!("status {status}, not a Prometheus API answer ({e}): {text:?}")
    })?;
    if env.status != "success" {
        return Err(format!(
            "Prometheus refused the query (status {status}): {}",
            env.error.as_deref().unwrap_or("no reason given")
        ));
    }
    let sample = match env.data {
        Some(Data::Scalar(s)) => s,
        Some(Data::Vector(mut v)) if v.len() == 1 => v.remove(0).value,
        Some(Data::Vector(v)) if v.is_empty() => {
            return Err("the query returned no data (an empty vector)".into());
        }
        Some(Data::Vector(v)) => {
            return Err(format!(
                "the query returned {} series; aggregate it to one (sum(..), max(..))",
                v.len()
            ));
        }
        Some(Data::Matrix(_) | Data::String(_)) | None => {
            return Err("the query must yield a number (a scalar or one-sample vector), not a range or string".into());
        }
    };
    sample
        .1
        .parse::<f64>()
        .map_err(|_| format!("value {:?} is not a number", sample.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        let one = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.5,"0.25"]}]}}"#;
        assert_eq!(value_of(200, one), Ok(0.25));
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#;
        assert_eq!(value_of(200, scalar), Ok(3.0));
        let nan = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#;
        assert!(value_of(200, nan).unwrap().is_nan());
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(value_of(200, empty).unwrap_err().contains("no data"));
        let two = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]},{"metric":{},"value":[1,"2"]}]}}"#;
        assert!(value_of(200, two).unwrap_err().contains("2 series"));
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        assert!(value_of(400, bad).unwrap_err().contains("parse error"));
        assert!(
            value_of(502, b"<html>")
                .unwrap_err()
                .contains("not a Prometheus")
        );
    }
}
