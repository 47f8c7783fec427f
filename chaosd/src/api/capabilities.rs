//! Body of `GET /v1/capabilities` (`chaosctl doctor`).

use serde::{Deserialize, Serialize};

/// Body of `GET /v1/capabilities`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitiesInfo {
    /// `uname -r` of the host.
    pub kernel: String,
    /// One entry per fault kind.
    pub kinds: Vec<KindCapability>,
    /// The host facts the kinds are judged by.
    pub host: Vec<HostCheck>,
}

impl CapabilitiesInfo {
    pub fn kind(&self, kind: &str) -> Option<&KindCapability> {
        self.kinds.iter().find(|k| k.kind == kind)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCapability {
    /// Wire name, e.g. "io.errno".
    pub kind: String,
    pub summary: String,
    pub supported: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Supported, but not every request: what this kernel cannot do of the kind (e.g. connect
    /// errors other than EPERM before 5.19, which are refused with this reason) and the fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<KindLimit>,
}

/// What a supported kind cannot do on this kernel, and how to get all of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindLimit {
    pub reason: String,
    pub fix: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCheck {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}
