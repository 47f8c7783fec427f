//! `io.errno`'s wire parameters.

use chaosd_common::io::{FileOp, IO_OPS};
use serde::{Deserialize, Serialize};

/// Parameters of `io.errno`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IoErrnoParams {
    /// The errno the operations fail with: a name ("EIO", "ENOSPC") or a number ("5").
    pub errno: super::Written<super::Errno>,
    /// Only files at or below this absolute path (a directory or a file); every file if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Operations that fail; every operation if empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<IoOp>,
    /// Share of matching operations that fail, above 0 and at most 100.
    #[serde(default = "hundred")]
    pub percent: f64,
}

fn hundred() -> f64 {
    100.0
}

/// A file operation an `io.errno` fault can fail.
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
#[serde(rename_all = "lowercase")]
pub enum IoOp {
    /// open(2) of an existing file (the file_open hook).
    Open,
    /// read(2) and friends (file_permission with MAY_READ).
    Read,
    /// write(2) and friends (file_permission with MAY_WRITE/MAY_APPEND).
    Write,
    /// Creating a file (inode_create).
    Create,
    /// unlink(2) (inode_unlink).
    Unlink,
    /// rename(2) of an entry (inode_rename, source side).
    Rename,
    /// mkdir(2) (inode_mkdir).
    Mkdir,
    /// rmdir(2) (inode_rmdir).
    Rmdir,
    /// truncate(2), ftruncate(2), open(O_TRUNC) (path_truncate, file_truncate).
    Truncate,
}

impl IoOp {
    pub const ALL: [IoOp; IO_OPS] = [
        IoOp::Open,
        IoOp::Read,
        IoOp::Write,
        IoOp::Create,
        IoOp::Unlink,
        IoOp::Rename,
        IoOp::Mkdir,
        IoOp::Rmdir,
        IoOp::Truncate,
    ];

    /// Index in the kernel's counters and bit in the rule's `ops`.
    pub fn index(self) -> u32 {
        self.file_op().code()
    }

    /// The operation as the programs know it.
    pub fn file_op(self) -> FileOp {
        match self {
            IoOp::Open => FileOp::Open,
            IoOp::Read => FileOp::Read,
            IoOp::Write => FileOp::Write,
            IoOp::Create => FileOp::Create,
            IoOp::Unlink => FileOp::Unlink,
            IoOp::Rename => FileOp::Rename,
            IoOp::Mkdir => FileOp::Mkdir,
            IoOp::Rmdir => FileOp::Rmdir,
            IoOp::Truncate => FileOp::Truncate,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            IoOp::Open => "open",
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Create => "create",
            IoOp::Unlink => "unlink",
            IoOp::Rename => "rename",
            IoOp::Mkdir => "mkdir",
            IoOp::Rmdir => "rmdir",
            IoOp::Truncate => "truncate",
        }
    }
}
