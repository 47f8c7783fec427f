//! The network namespaces a target cgroup's processes live in, and netlink work inside one.
//!
//! Faults that act on a device (the fq qdisc that delay and bandwidth need, the TC programs of
//! corrupt and duplicate) must act in the namespace the target's packets leave through. A
//! cgroup has no namespace of its own, so it is read from its processes. The daemon never
//! changes its own namespace: the work runs on a short-lived thread that `setns`es first
//! (the network namespace is per thread).

use std::{
    collections::BTreeMap,
    fs::File,
    future::Future,
    os::{
        fd::{AsFd, BorrowedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};

/// One network namespace, held open so it cannot go away while in use.
#[derive(Debug)]
pub struct Netns {
    /// nsfs inode: the namespace's identity.
    pub inode: u64,
    /// A process of the target seen in it (for messages).
    pub via_pid: u32,
    file: File,
}

impl Netns {
    /// The namespace of `pid`.
    pub fn of_pid(pid: u32) -> std::io::Result<Netns> {
        let file = File::open(format!("/proc/{pid}/ns/net"))?;
        Ok(Netns {
            inode: file.metadata()?.ino(),
            via_pid: pid,
            file,
        })
    }

    /// A namespace held by an open nsfs file, e.g. one a test created (`via_pid` is 0).
    pub fn from_file(file: File) -> std::io::Result<Netns> {
        Ok(Netns {
            inode: file.metadata()?.ino(),
            via_pid: 0,
            file,
        })
    }

    /// Another handle on the same namespace.
    pub fn try_clone(&self) -> std::io::Result<Netns> {
        Ok(Netns {
            inode: self.inode,
            via_pid: self.via_pid,
            file: self.file.try_clone()?,
        })
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&self.file, CloneFlags::CLONE_NEWNET).with_context(|| {
                    format!("entering the network namespace of pid {}", self.via_pid)
                })?;
                f()
            })
            .join()
            .unwrap_or_else(|_| bail!("netlink worker thread panicked"))
        })
    }

    /// Runs `f` with an rtnetlink handle bound to this namespace.
    pub fn netlink<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send,
        F: FnOnce(rtnetlink::Handle) -> Fut + Send,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        self.run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting a netlink runtime")?;
            rt.block_on(async {
                let (conn, handle, _) =
                    rtnetlink::new_connection().context("opening a netlink socket")?;
                let conn = tokio::spawn(conn);
                let out = f(handle).await;
                conn.abort();
                out
            })
        })
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// The distinct network namespaces of every process in the cgroups at `dirs` and below.
/// Errors when there is no process at all: the namespace cannot be known then.
pub fn of_cgroups(dirs: &[PathBuf]) -> anyhow::Result<Vec<Netns>> {
    let mut found = BTreeMap::new();
    for dir in dirs {
        for pid in pids_under(dir) {
            // A process may exit while we look: skip it.
            if let Ok(ns) = Netns::of_pid(pid) {
                found.entry(ns.inode).or_insert(ns);
            }
        }
    }
    if found.is_empty() {
        bail!(
            "the target cgroup has no processes, so its network namespace is unknown; start the \
             service first (this fault acts on the devices of the namespace it sends through)"
        );
    }
    Ok(found.into_values().collect())
}

/// Pids in the cgroup at `dir` and its descendants.
fn pids_under(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(pids_under(&e.path()));
            }
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_is_found_and_entered() {
        let me = Netns::of_pid(std::process::id()).unwrap();
        let seen = me
            .run(|| Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino()))
            .unwrap();
        assert_eq!(seen, me.inode);
    }

    #[test]
    fn an_empty_cgroup_has_no_namespace() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), "").unwrap();
        let err = of_cgroups(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(err.to_string().contains("no processes"), "{err}");
    }
}
