//! A journal of faults, written before a fault touches the kernel and removed after it is
//! reverted, so a later start (or `chaosd --cleanup`) knows what a crashed instance left.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use crate::{api::FaultInfo, error::FaultError};

pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn open(state_dir: &Path) -> std::io::Result<Journal> {
        let dir = state_dir.join("faults");
        fs::create_dir_all(&dir)?;
        Ok(Journal { dir })
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

    pub fn remove(&self, id: &str) {
        let path = self.path(id);
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

    /// Entries left by an earlier instance.
    pub fn leftovers(&self) -> Vec<FaultInfo> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }
}
