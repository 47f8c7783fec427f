//! `chaosctl inject clock skew ...` and the hidden `__clock-bench` micro-benchmark.

use chaosd::api::{ClockName, ClockSkewParams, FaultSpec};
use clap::Subcommand;

use crate::args::Common;

#[derive(Subcommand)]
pub enum ClockFault {
    /// Shift the clocks the target cgroups' processes read, also those started later.
    Skew {
        /// Signed offset, e.g. -2h30m, +90s, 45m (no sign: forward).
        #[arg(long, allow_hyphen_values = true)]
        offset: String,
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

/// Prints {native_ns, patched_ns, ratio, iterations} for a patched clock_gettime.
pub fn bench(iterations: u64) -> anyhow::Result<()> {
    #[cfg(target_arch = "x86_64")]
    {
        let report = chaosd::clock::bench::run(iterations)?;
        println!("{}", serde_json::to_string(&report)?);
        Ok(())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = iterations;
        anyhow::bail!("clock skew is x86_64 only")
    }
}
