//! The runtime's heartbeat as a file the guardian can read: the same task that beats the
//! kernel's dead-man switch (`crate::faults::kernel::heartbeat`) writes its CLOCK_MONOTONIC time here, so a
//! daemon that is alive but stopped (SIGSTOP), hung or starved shows as stale to the guardian
//! exactly as it does to the eBPF programs.
//!
//! `state_dir/heartbeat` holds 8 bytes, little-endian nanoseconds, rewritten in place (one
//! `pwrite` of 8 bytes to the page cache: a reader never sees half of it), or [`IDLE`] while
//! no fault holds the heartbeat (the daemon then does not beat, and has nothing to guard). It
//! is not fsynced: a reboot ends the faults it guards anyway.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
};

/// Written instead of a time while the daemon has no live fault and so does not beat.
pub const IDLE: u64 = u64::MAX;

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("heartbeat")
}

/// The daemon's end: an open file it rewrites at every beat.
pub struct BeatFile(File);

impl BeatFile {
    pub fn create(state_dir: &Path) -> io::Result<BeatFile> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path(state_dir))?;
        Ok(BeatFile(file))
    }

    /// Records a beat at `now_ns` (CLOCK_MONOTONIC).
    pub fn beat(&self, now_ns: u64) -> io::Result<()> {
        self.0.write_all_at(&now_ns.to_le_bytes(), 0)
    }

    /// Records that the daemon stops beating because nothing needs it ([`IDLE`]).
    pub fn mark_idle(&self) -> io::Result<()> {
        self.beat(IDLE)
    }
}

/// The last beat written in `state_dir` (CLOCK_MONOTONIC ns, or [`IDLE`]); None without one.
pub fn last(state_dir: &Path) -> Option<u64> {
    let mut bytes = [0u8; 8];
    File::open(path(state_dir))
        .and_then(|f| f.read_exact_at(&mut bytes, 0))
        .ok()?;
    Some(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last(dir.path()), None);
        let f = BeatFile::create(dir.path()).unwrap();
        f.beat(42).unwrap();
        assert_eq!(last(dir.path()), Some(42));
        f.beat(u64::MAX - 1).unwrap();
        assert_eq!(last(dir.path()), Some(u64::MAX - 1));
        f.mark_idle().unwrap();
        assert_eq!(last(dir.path()), Some(IDLE));
    }
}
