//! `chaosctl inject clock skew ...`.

use chaosd::api::{ClockDrift, ClockName, ClockOffset, ClockSkewParams, FaultSpec, Written};
use clap::Subcommand;

use crate::args::Common;

#[derive(Subcommand)]
pub enum ClockFault {
    /// Shift the clocks the target cgroups' processes read, also those started later: by an
    /// offset, a drift (the clocks run fast or slow from now on), or both.
    Skew {
        /// Signed offset, e.g. -2h30m, +90s, 400d (no sign: forward).
        #[arg(long, allow_hyphen_values = true, required_unless_present_any = ["drift", "rate"])]
        offset: Option<Written<ClockOffset>>,
        /// Run fast (+) or slow (-) from the moment of injection, e.g. +500ppm, -20ppm.
        #[arg(long, allow_hyphen_values = true, conflicts_with = "rate")]
        drift: Option<Written<ClockDrift>>,
        /// The drift as skewed seconds per true second, e.g. 1.0005 (= +500ppm), 0.5 to 2.
        #[arg(long)]
        rate: Option<f64>,
        /// Clocks to shift (comma-separated); realtime also covers gettimeofday and time.
        #[arg(long, value_parser = crate::args::choice::<ClockName>(), value_delimiter = ',', default_value = "realtime")]
        clocks: Vec<ClockName>,
        #[command(flatten)]
        common: Common,
    },
}

impl ClockFault {
    pub fn into_spec(self) -> (FaultSpec, Common) {
        match self {
            ClockFault::Skew {
                offset,
                drift,
                rate,
                clocks,
                common,
            } => (
                FaultSpec::ClockSkew(ClockSkewParams {
                    offset,
                    drift,
                    rate,
                    clocks,
                }),
                common,
            ),
        }
    }
}

/// "-2h", "+500ppm", "+400d, rate 0.999": what a skew does, as the request wrote it.
pub fn what(p: &ClockSkewParams) -> String {
    let offset = p.offset.as_ref().map(ToString::to_string);
    let drift = match (&p.drift, p.rate) {
        (Some(d), _) => Some(format!("drift {d}")),
        (None, Some(r)) => Some(format!("rate {r}")),
        (None, None) => None,
    };
    [offset, drift]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
}
