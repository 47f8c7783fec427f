//! Process faults on a target cgroup: [`kill`] (`process.kill`) signals its processes once,
//! [`pause`] (`process.pause`) freezes it with cgroup v2's `cgroup.freeze` until the fault ends.
//!
//! A target covers its descendant cgroups, as for every fault kind. chaosd never signals or
//! freezes itself: the registry refuses cgroups that contain the daemon.
//!
//! # Kernel requirements
//! `cgroup.freeze` needs Linux 5.2+ (cgroup v2 freezer).

pub mod kill;
pub mod pause;

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::{api::ResolvedTarget, error::FaultError, error::RequestError, host::cgroup};

/// The directories of the resolved targets.
pub(crate) fn target_dirs(targets: &[ResolvedTarget]) -> Result<Vec<PathBuf>, FaultError> {
    let mount = cgroup::cgroup2_mount().map_err(|e| FaultError::kernel("finding cgroup2", e))?;
    targets
        .iter()
        .map(|t| cgroup::Cgroup::open(&mount, &t.cgroup).map(|c| c.dir))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FaultError::Refused(RequestError::Target(e)))
}

/// Pids in `dir` and every cgroup below it.
pub(crate) fn pids_in_subtree(dir: &Path) -> Vec<u32> {
    let mut out = crate::faults::stress::cgroup_procs(dir);
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(pids_in_subtree(&e.path()));
            }
        }
    }
    out
}
