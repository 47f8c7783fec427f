//! Chaos Mesh's JSON on the remote listener, apart from what chaosd makes of it (`mapping`).
//!
//! Chaos Mesh's PhysicalMachineChaos controller splits the experiment's action at its first
//! `-` (`network-delay` → route `network`, `action: "delay"`), lifts the action's own fields
//! (named as in its `physical_machine_chaos_types.go`) to the top level next to `uid` and
//! `action`, and posts that object to `/api/attack/{route}`. It reads `uid` from a 200 answer
//! and recovers with `DELETE /api/attack/{uid}`, taking a 404 as already recovered. The field
//! names below are those; most values are strings there (`"percent": "50"`), a few numbers.

use serde::{Deserialize, Deserializer, Serialize};

/// A value Chaos Mesh sends as a string or as a number (`"percent": "50"`, `"signal": 9`),
/// kept as text; an empty string counts as absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loose(pub String);

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Loose(s.trim().to_string())),
            serde_json::Value::Number(n) => Ok(Loose(n.to_string())),
            serde_json::Value::Bool(b) => Ok(Loose(b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a string or a number, got {other}"
            ))),
        }
    }
}

/// `Some(text)` unless absent or empty.
pub fn given(v: &Option<Loose>) -> Option<&str> {
    v.as_ref().map(|l| l.0.as_str()).filter(|s| !s.is_empty())
}

/// stress-ng options: a string in older Chaos Mesh releases, a list in newer ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Options {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Options {
    pub fn is_empty(&self) -> bool {
        match self {
            Options::None => true,
            Options::One(s) => s.trim().is_empty(),
            Options::Many(v) => v.iter().all(|s| s.trim().is_empty()),
        }
    }
}

/// `POST /api/attack/network`: `NetworkCommonSpec` and the fields of each network action
/// (`delay`, `loss`, `corrupt`, `duplicate`, `partition`, `bandwidth`, `dns`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkAttack {
    pub uid: Option<String>,
    #[serde(default)]
    pub action: String,
    pub correlation: Option<Loose>,
    pub device: Option<Loose>,
    pub source_port: Option<Loose>,
    pub egress_port: Option<Loose>,
    pub ip_address: Option<Loose>,
    pub ip_protocol: Option<Loose>,
    pub hostname: Option<Loose>,
    pub percent: Option<Loose>,
    pub latency: Option<Loose>,
    pub jitter: Option<Loose>,
    pub direction: Option<Loose>,
    pub accept_tcp_flags: Option<Loose>,
    pub dns_server: Option<Loose>,
    pub dns_ip: Option<Loose>,
    /// chaos-mesh/chaosd's own name for it in some releases: `dns-host`.
    #[serde(alias = "dns-host")]
    pub dns_domain_name: Option<Loose>,
    pub rate: Option<Loose>,
    pub limit: Option<Loose>,
    pub buffer: Option<Loose>,
    pub peakrate: Option<Loose>,
    pub minburst: Option<Loose>,
}

/// `POST /api/attack/stress`: `stress-cpu` (`load`, `workers`) and `stress-mem` (`size`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StressAttack {
    pub uid: Option<String>,
    #[serde(default)]
    pub action: String,
    pub load: Option<Loose>,
    pub workers: Option<Loose>,
    pub size: Option<Loose>,
    #[serde(default)]
    pub options: Options,
}

/// `POST /api/attack/disk`: `disk-fill`, `disk-write-payload`, `disk-read-payload`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiskAttack {
    pub uid: Option<String>,
    #[serde(default)]
    pub action: String,
    pub size: Option<Loose>,
    pub path: Option<Loose>,
    /// chaos-mesh/chaosd's own structs spell it with underscores.
    #[serde(alias = "payload_process_num")]
    pub payload_process_num: Option<Loose>,
    #[serde(alias = "fill_by_fallocate")]
    pub fill_by_fallocate: Option<Loose>,
}

/// `POST /api/attack/process`: `process` (a name or a pid) and `signal` (a number).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessAttack {
    pub uid: Option<String>,
    /// Empty from Chaos Mesh (`process` has no sub-action); `kill` or `stop` from other
    /// clients of chaos-mesh/chaosd.
    #[serde(default)]
    pub action: String,
    pub process: Option<Loose>,
    pub signal: Option<Loose>,
    #[serde(rename = "recoverCmd")]
    pub recover_cmd: Option<Loose>,
}

/// `POST /api/attack/clock`: `pid`, `time-offset`, `clock-ids-slice`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClockAttack {
    pub uid: Option<String>,
    #[serde(default)]
    pub action: String,
    pub pid: Option<Loose>,
    pub time_offset: Option<Loose>,
    pub clock_ids_slice: Option<Loose>,
}

/// `POST /api/attack/http`: `http-abort` and `http-delay` (Chaos Mesh's `HTTPCommonSpec`:
/// `proxy_ports`, `target`, `port`, `path`, `method`, `code`; `delay`), `http-config`
/// (`file_path`) and `http-request` (`url`, `enable-conn-pool`, `count`). chaos-mesh/chaosd's
/// own clients also send `abort` (true for `http-abort`) and an empty `delay` for it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAttack {
    pub uid: Option<String>,
    #[serde(default)]
    pub action: String,
    /// A list of port numbers (`[8080]`); `null` counts as absent.
    pub proxy_ports: Option<Vec<Loose>>,
    /// `Request` or `Response`.
    pub target: Option<Loose>,
    pub port: Option<Loose>,
    pub path: Option<Loose>,
    pub method: Option<Loose>,
    pub code: Option<Loose>,
    pub abort: Option<Loose>,
    pub delay: Option<Loose>,
    pub file_path: Option<Loose>,
    pub url: Option<Loose>,
    #[serde(rename = "enable-conn-pool")]
    pub enable_conn_pool: Option<Loose>,
    pub count: Option<Loose>,
    /// Older chaos-mesh/chaosd clients nest the selector and actions in a chaos-tproxy rule;
    /// kept to refuse it with the flat fields to send instead.
    pub rule: Option<serde_json::Value>,
    pub rules: Option<serde_json::Value>,
}

/// A 200 answer to an attack, as chaos-mesh/chaosd gives it (`status`, `message`, `uid`),
/// plus the ids of the chaosd faults it became.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttackAnswer {
    pub status: u16,
    pub message: String,
    pub uid: String,
    pub faults: Vec<String>,
}

/// Every error answer: chaos-mesh/chaosd's shape; Chaos Mesh shows the body on the
/// experiment's status, so `message` says what is wrong and what to change.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorAnswer {
    pub error: bool,
    pub message: String,
    /// `error.api.invalid_request`, `error.api.resource_not_found`, ...
    pub code: String,
    pub full_text: String,
}

/// `GET /api/system/health`: status 0 is healthy.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    pub status: i32,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattened_bodies_decode_with_chaos_meshs_names() {
        let n: NetworkAttack = serde_json::from_str(
            r#"{"uid":"u1","action":"loss","device":"eth0","ip-address":"10.0.0.1",
                "ip-protocol":"udp","egress-port":"53","percent":"50","correlation":"0"}"#,
        )
        .unwrap();
        assert_eq!(given(&n.percent), Some("50"));
        assert_eq!(given(&n.egress_port), Some("53"));
        let p: ProcessAttack =
            serde_json::from_str(r#"{"uid":"u2","action":"","process":"nginx","signal":19}"#)
                .unwrap();
        assert_eq!(given(&p.signal), Some("19"));
        let s: StressAttack =
            serde_json::from_str(r#"{"action":"cpu","load":50,"options":["--cpu-method","all"]}"#)
                .unwrap();
        assert!(!s.options.is_empty());
        let d: DiskAttack =
            serde_json::from_str(r#"{"action":"fill","size":"1M","payload_process_num":2}"#)
                .unwrap();
        assert_eq!(given(&d.payload_process_num), Some("2"));
        let h: HttpAttack = serde_json::from_str(
            r#"{"uid":"u3","action":"abort","proxy_ports":[8080,"8081"],"target":"Request",
                "port":8080,"path":"/api/*","method":"GET"}"#,
        )
        .unwrap();
        let ports: Vec<&str> = h
            .proxy_ports
            .iter()
            .flatten()
            .map(|p| p.0.as_str())
            .collect();
        assert_eq!(ports, ["8080", "8081"]);
        assert_eq!(given(&h.port), Some("8080"));
        let none: HttpAttack =
            serde_json::from_str(r#"{"action":"delay","proxy_ports":null,"delay":"1s"}"#).unwrap();
        assert!(none.proxy_ports.is_none());
        let e = serde_json::from_str::<NetworkAttack>(r#"{"action":"loss","flood":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `flood`"), "{e}");
    }
}
