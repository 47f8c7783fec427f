//! Scenario files: a steady-state hypothesis, a schedule of fault steps, abort rules and
//! blast-radius limits in one TOML file, run by the daemon (see `docs/scenarios.md`).
//!
//! - [`format`]: the file format, parsed and validated with line and column in every error.
//! - [`probes`]: the HTTP(S), TCP, command and Prometheus checks of the steady state, and the
//!   queries of Prometheus abort rules ([`prometheus`], over [`fetch`]).
//! - [`runner`]: one run: preflight, inject per schedule while probing, abort, roll back,
//!   verify recovery, report.
//! - [`runs`]: the daemon's runs (in memory, reports also as JSON files) and their routes.
//! - [`report`]: the report and its Markdown rendering; [`html`]: the HTML page with its SVG
//!   timeline.
//! - [`service`]: demo services a scenario starts in a cgroup of their own.

pub mod fetch;
pub mod format;
pub mod html;
pub mod probes;
pub mod prometheus;
pub mod report;
pub mod runner;
pub mod runs;
pub mod service;
pub mod wire;

pub use format::{Scenario, ScenarioError};

/// Durations on the wire and in reports as whole milliseconds.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }

    /// The same for `Option<Duration>`.
    pub mod opt {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&(d.as_millis() as u64)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
        }
    }
}

pub mod client;
