//! `chaosctl inject clock skew ...`.

use chaosd::api::{ClockName, ClockOffset, ClockSkewParams, FaultSpec, Written};
use clap::Subcommand;

use crate::args::Common;

#[derive(Subcommand)]
pub enum ClockFault {
    /// Shift the clocks the target cgroups' processes read, also those started later.
    Skew {
        /// Signed offset, e.g. -2h30m, +90s, 45m (no sign: forward).
        #[arg(long, allow_hyphen_values = true)]
        offset: Written<ClockOffset>,
        /// Clocks to shift (comma-separated); realtime also covers gettimeofday and time.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "realtime")]
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
                clocks,
                common,
            } => (
                FaultSpec::ClockSkew(ClockSkewParams { offset, clocks }),
                common,
            ),
        }
    }
}
