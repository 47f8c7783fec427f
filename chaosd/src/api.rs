//! Wire types of the HTTP/JSON API on the Unix socket, shared by the daemon and `chaosctl`.
//!
//! Routes (all under `/v1`): `GET/POST /faults`, `DELETE /faults` (recover all),
//! `GET/DELETE /faults/{id}`, `GET /status`. Errors are `{"error": "..."}` with a 4xx/5xx status.

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/faults`.
///
/// ```json
/// {"fault": {"kind": "net.loss", "params": {"percent": 30, "direction": "egress"}},
///  "targets": [{"cgroup": "/demo"}], "duration": "30s"}
/// ```
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InjectRequest {
    pub fault: FaultSpec,
    pub targets: Vec<TargetSelector>,
    /// How long the fault lives, e.g. "30s", "5m". Required unless the daemon's config sets a
    /// default; never above the configured maximum.
    #[serde(default)]
    pub duration: Option<String>,
}

/// What to inject: the kind and its parameters.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", content = "params", deny_unknown_fields)]
pub enum FaultSpec {
    /// Drop a share of the target cgroups' packets.
    #[serde(rename = "net.loss")]
    NetLoss(NetLossParams),
}

impl FaultSpec {
    /// The kind's name as it appears on the wire and in tables.
    pub fn kind(&self) -> &'static str {
        match self {
            FaultSpec::NetLoss(_) => "net.loss",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetLossParams {
    /// Share of matching packets to drop, 0 < percent <= 100.
    pub percent: f64,
    #[serde(default)]
    pub direction: Direction,
}

/// Which packets of the target's sockets a network fault applies to.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Packets the target sends (what `tc netem` on an interface affects).
    #[default]
    Egress,
    /// Packets delivered to the target.
    Ingress,
    Both,
}

/// How a request names the cgroups a fault applies to. Each covers its descendant cgroups.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TargetSelector {
    /// A cgroup2 path: absolute under the cgroup2 mount, or relative to it ("/x" or "x").
    Cgroup(String),
    /// The cgroup2 cgroup of this process.
    Pid(u32),
    /// The cgroup systemd made for this unit, e.g. "nginx.service".
    Unit(String),
}

impl std::fmt::Display for TargetSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSelector::Cgroup(p) => write!(f, "cgroup {p}"),
            TargetSelector::Pid(p) => write!(f, "pid {p}"),
            TargetSelector::Unit(u) => write!(f, "unit {u}"),
        }
    }
}

/// A target as the daemon resolved it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResolvedTarget {
    pub selector: TargetSelector,
    /// Path relative to the cgroup2 mount, starting with "/".
    pub cgroup: String,
    /// cgroup v2 id (inode of the cgroup directory), as the kernel programs see it.
    pub cgroup_id: u64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FaultState {
    Active,
    /// Reverted on request.
    Recovered,
    /// Reverted at its deadline.
    Expired,
    /// Reverted because the daemon shut down.
    Stopped,
}

impl std::fmt::Display for FaultState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            FaultState::Active => "active",
            FaultState::Recovered => "recovered",
            FaultState::Expired => "expired",
            FaultState::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// Counters a fault kept: events that matched it and events it acted on.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    pub seen: u64,
    pub affected: u64,
}

/// A fault as the daemon reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FaultInfo {
    pub id: String,
    pub kind: String,
    pub fault: FaultSpec,
    pub targets: Vec<ResolvedTarget>,
    pub state: FaultState,
    pub duration_ms: u64,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub expires_at: String,
    #[serde(default)]
    pub ended_at: Option<String>,
    pub counters: Counters,
}

/// Body of `GET /v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusInfo {
    pub version: String,
    pub pid: u32,
    pub uptime_s: u64,
    pub kernel: String,
    pub cgroup2_mount: String,
    pub active_faults: usize,
    pub max_duration_s: u64,
    #[serde(default)]
    pub default_duration_s: Option<u64>,
    /// Whether the network programs are attached now (only while a network fault is active).
    pub net_programs_attached: bool,
}

/// Body of every error response.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_request_round_trips_with_kind_tag() {
        let json = r#"{"fault":{"kind":"net.loss","params":{"percent":30}},
                       "targets":[{"cgroup":"/a"},{"pid":1},{"unit":"x.service"}],"duration":"30s"}"#;
        let req: InjectRequest = serde_json::from_str(json).unwrap();
        assert_eq!(
            req.fault,
            FaultSpec::NetLoss(NetLossParams {
                percent: 30.0,
                direction: Direction::Egress
            })
        );
        assert_eq!(req.targets[1], TargetSelector::Pid(1));
        let back: InjectRequest =
            serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn unknown_kind_and_fields_are_rejected() {
        let bad_kind = r#"{"fault":{"kind":"net.nope","params":{}},"targets":[],"duration":"1s"}"#;
        assert!(serde_json::from_str::<InjectRequest>(bad_kind).is_err());
        let extra = r#"{"fault":{"kind":"net.loss","params":{"percent":1,"x":2}},"targets":[]}"#;
        assert!(serde_json::from_str::<InjectRequest>(extra).is_err());
    }
}
