//! Chaos Mesh's attack uids and the chaosd faults each became, kept in
//! `STATE_DIR/chaos-mesh-attacks.json` so that a `DELETE /api/attack/{uid}` after a chaosd
//! restart still finds its attack (its faults were reverted when the old daemon stopped, and
//! the answer says so). An entry goes at its DELETE, or a day after its faults' deadline.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// How long an entry is kept after its faults' deadline, for a late DELETE to be answered
/// with what happened rather than "no such attack".
const KEPT_AFTER_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// One attack as Chaos Mesh posted it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Attack {
    /// The route: network, stress, disk, process, clock, http.
    pub route: String,
    /// The body as posted: a repeated POST of the same body gets the same answer.
    pub body: serde_json::Value,
    /// chaosd fault ids, in the order they were injected.
    pub faults: Vec<String>,
    /// Seconds since the epoch at which the faults end by themselves.
    pub deadline_unix: u64,
}

/// Errors reading or writing the file.
#[derive(Debug, thiserror::Error)]
pub enum AttacksError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The uid → attack map and its file. Callers serialise changes (the remote router holds a
/// lock across an attack's inject or recover).
pub struct Attacks {
    path: PathBuf,
    map: BTreeMap<String, Attack>,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Attacks {
    /// Reads the file in `state_dir` if there is one; an unreadable one is set aside with a
    /// warning (its faults ended with the daemon that made them).
    pub fn open(state_dir: &Path) -> Attacks {
        let path = state_dir.join("chaos-mesh-attacks.json");
        let map = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), "ignoring an unreadable attack list: {e}");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        let mut attacks = Attacks { path, map };
        attacks.prune(now_unix());
        attacks
    }

    pub fn get(&self, uid: &str) -> Option<&Attack> {
        self.map.get(uid)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn insert(&mut self, uid: String, attack: Attack) -> Result<(), AttacksError> {
        self.prune(now_unix());
        self.map.insert(uid, attack);
        self.save()
    }

    pub fn remove(&mut self, uid: &str) -> Result<Option<Attack>, AttacksError> {
        let gone = self.map.remove(uid);
        self.save()?;
        Ok(gone)
    }

    fn prune(&mut self, now: u64) {
        self.map
            .retain(|_, a| a.deadline_unix + KEPT_AFTER_DEADLINE.as_secs() > now);
    }

    /// Writes the map whole (a temporary file renamed over the old one).
    fn save(&self) -> Result<(), AttacksError> {
        let io = |op, source| AttacksError::Io {
            op,
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&self.map).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(|e| io("writing", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io("renaming into", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attack(deadline_unix: u64) -> Attack {
        Attack {
            route: "network".into(),
            body: serde_json::json!({"action": "loss"}),
            faults: vec!["ab12".into()],
            deadline_unix,
        }
    }

    #[test]
    fn entries_outlive_a_restart_until_deleted_or_long_expired() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Attacks::open(dir.path());
        a.insert("u1".into(), attack(now_unix() + 60)).unwrap();
        a.insert("old".into(), attack(now_unix() - 2 * 24 * 3600))
            .unwrap();
        let reopened = Attacks::open(dir.path());
        assert_eq!(
            reopened.get("u1"),
            Some(&attack(reopened.get("u1").unwrap().deadline_unix))
        );
        assert!(
            reopened.get("old").is_none(),
            "a long-expired entry was kept"
        );
        let mut a = reopened;
        assert!(a.remove("u1").unwrap().is_some());
        assert!(Attacks::open(dir.path()).is_empty());
    }
}
