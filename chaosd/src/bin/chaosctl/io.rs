//! `chaosctl inject io ...`.

use chaosd::api::{Errno, FaultSpec, IoErrnoParams, IoOp, Written};
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
        #[arg(long, value_enum, value_delimiter = ',')]
        ops: Vec<IoOp>,
        /// Share of matching operations that fail, above 0 and at most 100.
        #[arg(long, default_value_t = 100.0)]
        percent: f64,
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
        }
    }
}
