//! `chaosctl inject io errno | throttle`.

use chaosd::api::{ByteRate, Errno, FaultSpec, IoErrnoParams, IoOp, IoThrottleParams, Written};
use clap::Subcommand;

use crate::args::Common;

#[derive(Subcommand)]
pub enum IoFault {
    /// Fail file operations of the target cgroups with an errno.
    Errno {
        /// errno name or number, e.g. EIO, ENOSPC, EACCES, EROFS, EDQUOT, ENOMEM, EINTR, 5.
        #[arg(long)]
        errno: Written<Errno>,
        /// Only files at or below this absolute path (as chaosd sees it); every file if absent.
        #[arg(long)]
        path: Option<String>,
        /// Operations that fail (comma-separated); every operation if absent.
        #[arg(long, value_parser = crate::args::choice::<IoOp>(), value_delimiter = ',')]
        ops: Vec<IoOp>,
        /// Share of matching operations that fail, above 0 and at most 100.
        #[arg(long, default_value_t = 100.0)]
        percent: f64,
        #[command(flatten)]
        common: Common,
    },
    /// Cap the target cgroups' block I/O to one disk (io.max): reads and writes that reach
    /// the disk are delayed beyond the rates; page-cache hits are not slowed.
    #[command(group(clap::ArgGroup::new("disk").required(true).args(["path", "device"])))]
    #[command(group(clap::ArgGroup::new("limits").required(true).multiple(true)
        .args(["rbps", "wbps", "riops", "wiops"])))]
    Throttle {
        /// A file or directory on the disk, or its device node (a partition means its disk).
        #[arg(long)]
        path: Option<String>,
        /// The disk as MAJ:MIN (lsblk's MAJ:MIN), e.g. 8:0.
        #[arg(long)]
        device: Option<String>,
        /// Read bytes per second, e.g. 10MiB/s.
        #[arg(long)]
        rbps: Option<Written<ByteRate>>,
        /// Written bytes per second.
        #[arg(long)]
        wbps: Option<Written<ByteRate>>,
        /// Read operations per second.
        #[arg(long)]
        riops: Option<u64>,
        /// Write operations per second.
        #[arg(long)]
        wiops: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
}

impl IoFault {
    pub fn into_spec(self) -> (FaultSpec, Common) {
        match self {
            IoFault::Errno {
                errno,
                path,
                ops,
                percent,
                common,
            } => (
                FaultSpec::IoErrno(IoErrnoParams {
                    errno,
                    path,
                    ops,
                    percent,
                }),
                common,
            ),
            IoFault::Throttle {
                path,
                device,
                rbps,
                wbps,
                riops,
                wiops,
                common,
            } => (
                FaultSpec::IoThrottle(IoThrottleParams {
                    path,
                    device,
                    rbps,
                    wbps,
                    riops,
                    wiops,
                }),
                common,
            ),
        }
    }
}

/// One line on what an `io.throttle` fault does.
pub fn throttle_text(p: &IoThrottleParams) -> String {
    let limits: Vec<String> = [
        p.rbps.as_ref().map(|r| format!("reads {r}")),
        p.wbps.as_ref().map(|r| format!("writes {r}")),
        p.riops.map(|n| format!("{n} reads/s")),
        p.wiops.map(|n| format!("{n} writes/s")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let disk = match (&p.path, &p.device) {
        (Some(path), _) => format!("the disk of {path}"),
        (None, Some(dev)) => format!("disk {dev}"),
        (None, None) => "?".into(),
    };
    format!("{} on {disk} (io.max)", limits.join(", "))
}
