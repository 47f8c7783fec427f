//! `clock.skew`'s wire parameters.

use serde::{Deserialize, Serialize};

/// Parameters of `clock.skew`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClockSkewParams {
    /// Signed offset added to the clocks: "-2h30m", "+90s", "45m" (no sign: forward).
    pub offset: super::Written<super::ClockOffset>,
    /// Clocks that read skewed; `realtime` (which also covers gettimeofday and time) by default.
    #[serde(default = "default_clocks")]
    pub clocks: Vec<ClockName>,
}

fn default_clocks() -> Vec<ClockName> {
    vec![ClockName::Realtime]
}

/// A clock a `clock.skew` fault can move. The CPU-time clocks are not wall clocks and are
/// refused.
#[derive(
    Clone,
    Copy,
    Debug,
    Serialize,
    Deserialize,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum ClockName {
    /// CLOCK_REALTIME; also gettimeofday(2) and time(2).
    Realtime,
    Monotonic,
    MonotonicRaw,
    RealtimeCoarse,
    MonotonicCoarse,
    Boottime,
    RealtimeAlarm,
    BoottimeAlarm,
    Tai,
}

impl ClockName {
    /// The name as the API and the CLI spell it.
    pub fn name(self) -> &'static str {
        match self {
            ClockName::Realtime => "realtime",
            ClockName::Monotonic => "monotonic",
            ClockName::MonotonicRaw => "monotonic_raw",
            ClockName::RealtimeCoarse => "realtime_coarse",
            ClockName::MonotonicCoarse => "monotonic_coarse",
            ClockName::Boottime => "boottime",
            ClockName::RealtimeAlarm => "realtime_alarm",
            ClockName::BoottimeAlarm => "boottime_alarm",
            ClockName::Tai => "tai",
        }
    }

    /// The clock's id (`CLOCK_*` of <time.h>).
    pub fn id(self) -> u32 {
        match self {
            ClockName::Realtime => 0,
            ClockName::Monotonic => 1,
            ClockName::MonotonicRaw => 4,
            ClockName::RealtimeCoarse => 5,
            ClockName::MonotonicCoarse => 6,
            ClockName::Boottime => 7,
            ClockName::RealtimeAlarm => 8,
            ClockName::BoottimeAlarm => 9,
            ClockName::Tai => 11,
        }
    }
}
