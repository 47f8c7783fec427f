//! `clock.skew`'s wire parameters.

use serde::{Deserialize, Serialize};

/// Parameters of `clock.skew`: an offset, a drift (or rate), or both.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClockSkewParams {
    /// Signed offset added to the clocks: "-2h30m", "+90s", "45m" (no sign: forward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<super::Written<super::ClockOffset>>,
    /// How much faster (+) or slower (-) the clocks run from the moment of injection, e.g.
    /// "+500ppm", "-20ppm".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<super::Written<super::ClockDrift>>,
    /// The same as a rate: skewed seconds per true second, e.g. 1.0005 (= +500ppm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Clocks that read skewed; `realtime` (which also covers gettimeofday and time) by default.
    #[serde(default = "default_clocks")]
    pub clocks: Vec<ClockName>,
}

fn default_clocks() -> Vec<ClockName> {
    vec![ClockName::Realtime]
}

/// A clock a `clock.skew` fault can move. The CPU-time clocks are not wall clocks and are
/// refused.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
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

impl ClockSkewParams {
    /// The offset in ns (0 when only a drift was asked).
    pub fn offset_ns(&self) -> i64 {
        self.offset.as_ref().map_or(0, |o| o.get().0)
    }

    /// Skewed seconds per true second (1.0: no drift), from `drift` or `rate`.
    pub fn rate(&self) -> f64 {
        match (&self.drift, self.rate) {
            (Some(d), _) => 1.0 + d.get().0 / 1e6,
            (None, Some(r)) => r,
            (None, None) => 1.0,
        }
    }
}
