//! A journal of faults, written before a fault touches the kernel and removed after it is
//! reverted, so a later start (or `chaosd --cleanup`, or the guardian) knows what a crashed
//! instance left. An entry being ended is renamed first (`crate::daemon::guardian::record`: the claim
//! that makes every revert happen once).

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use crate::{api::FaultInfo, error::FaultError};

pub struct Journal {
    dir: PathBuf,
}

/// The journal directory of `state_dir`.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("faults")
}

/// Every entry in `dir` (`*.json`, claimed ones too), with its path. An entry that does not
/// parse (torn by a crash mid-write, or damaged) is logged once per path in `torn_seen` and
/// skipped: the rest of the journal is still reverted.
pub fn read_entries(
    dir: &Path,
    torn_seen: &mut std::collections::HashSet<PathBuf>,
) -> Vec<(PathBuf, FaultInfo)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let parsed = fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<FaultInfo>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(info) => out.push((path, info)),
            Err(e) => {
                if torn_seen.insert(path.clone()) {
                    tracing::error!(
                        entry = %path.display(),
                        "journal entry is torn or unreadable ({e}): cannot revert what it \
                         describes; check that fault by hand. The rest of the journal is reverted"
                    );
                }
            }
        }
    }
    out
}

impl Journal {
    pub fn open(state_dir: &Path) -> std::io::Result<Journal> {
        let dir = dir(state_dir);
        fs::create_dir_all(&dir)?;
        Ok(Journal { dir })
    }

    /// The directory holding the entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Records `info` durably (write to a temp file, fsync, rename).
    pub fn record(&self, info: &FaultInfo) -> Result<(), FaultError> {
        let path = self.path(&info.id);
        let tmp = path.with_extension("tmp");
        let io = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        io().map_err(|source| FaultError::Journal { path, source })
    }

    /// Removes the entry of `id`, under its plain or claimed names.
    pub fn remove(&self, id: &str) {
        let claimed = [
            crate::engine::handoff::daemon_claim_path(&self.dir, id),
            crate::engine::handoff::guardian_claim_path(&self.dir, id),
        ];
        for path in std::iter::once(self.path(id)).chain(claimed) {
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(
                    fault_id = id,
                    "removing journal entry {}: {e}",
                    path.display()
                );
            }
        }
    }

    /// Entries left by an earlier instance, with their paths; torn ones are logged and
    /// left in place (see [`read_entries`]).
    pub fn leftovers(&self) -> Vec<(PathBuf, FaultInfo)> {
        read_entries(&self.dir, &mut Default::default())
    }
}
