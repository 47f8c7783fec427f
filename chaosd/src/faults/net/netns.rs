//! The network namespaces a target cgroup's processes live in, and netlink work inside one.
//!
//! Faults that act on a device (the fq qdisc that delay and bandwidth need, the TC programs of
//! corrupt and duplicate) must act in the namespace the target's packets leave through. A
//! cgroup has no namespace of its own, so it is read from its processes. Delay and bandwidth
//! also take it from the request (`netns`: a path or a pid, [`Netns::open_spec`]), and fall
//! back to chaosd's own namespace when the target has no process yet ([`for_departure`]), so
//! a fault can be injected before the client it should slow down starts. The daemon never
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

use crate::{
    api::{NetnsFrom, NetnsUsed},
    error::RequestError,
};

/// One network namespace, held open so it cannot go away while in use.
#[derive(Debug)]
pub struct Netns {
    /// nsfs inode: the namespace's identity.
    pub inode: u64,
    /// A process seen in it (for messages); 0 when it was opened by path.
    pub via_pid: u32,
    /// What was opened (`/proc/PID/ns/net`, a request's path); empty for a bare descriptor.
    pub path: PathBuf,
    file: File,
}

impl Netns {
    /// The namespace of `pid`.
    pub fn of_pid(pid: u32) -> std::io::Result<Netns> {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let file = File::open(&path)?;
        Ok(Netns {
            inode: file.metadata()?.ino(),
            via_pid: pid,
            path,
            file,
        })
    }

    /// chaosd's own namespace.
    pub fn own() -> std::io::Result<Netns> {
        Netns::of_pid(std::process::id())
    }

    /// A namespace held by an open nsfs file, e.g. one a test created (`via_pid` is 0).
    pub fn from_file(file: File) -> std::io::Result<Netns> {
        Ok(Netns {
            inode: file.metadata()?.ino(),
            via_pid: 0,
            path: PathBuf::new(),
            file,
        })
    }

    /// The namespace a request's `netns` names: a pid (its `/proc/PID/ns/net`) or an absolute
    /// path to a network namespace (`/run/netns/NAME` as `ip netns add` makes them,
    /// `/proc/PID/ns/net`). Anything else is refused with the reason.
    pub fn open_spec(spec: &str) -> Result<Netns, RequestError> {
        let bad = |reason: String| bad_spec(spec, reason);
        let (path, via_pid) = match parse_spec(spec)? {
            NetnsSpec::Pid(pid) => {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    return Err(bad(format!("no process with pid {pid}")));
                }
                (PathBuf::from(format!("/proc/{pid}/ns/net")), pid)
            }
            NetnsSpec::Path(p) => (p, 0),
        };
        let file =
            File::open(&path).map_err(|e| bad(format!("opening {}: {e}", path.display())))?;
        check_is_netns(&file).map_err(|reason| bad(format!("{} {reason}", path.display())))?;
        let inode = file
            .metadata()
            .map_err(|e| bad(format!("reading {}: {e}", path.display())))?
            .ino();
        Ok(Netns {
            inode,
            via_pid,
            path,
            file,
        })
    }

    /// Another handle on the same namespace.
    pub fn try_clone(&self) -> std::io::Result<Netns> {
        Ok(Netns {
            inode: self.inode,
            via_pid: self.via_pid,
            path: self.path.clone(),
            file: self.file.try_clone()?,
        })
    }

    /// For messages: "of pid N", the path, or the inode.
    fn describe(&self) -> String {
        if self.via_pid != 0 {
            format!("of pid {}", self.via_pid)
        } else if !self.path.as_os_str().is_empty() {
            self.path.display().to_string()
        } else {
            format!("net:[{}]", self.inode)
        }
    }

    /// How a fault reports this namespace.
    pub fn used(&self, from: NetnsFrom) -> NetnsUsed {
        NetnsUsed {
            inode: self.inode,
            from,
            path: self.path.display().to_string(),
        }
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&self.file, CloneFlags::CLONE_NEWNET).with_context(|| {
                    format!("entering the network namespace {}", self.describe())
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

/// A request's `netns`, parsed (nothing opened yet).
enum NetnsSpec {
    Pid(u32),
    Path(PathBuf),
}

fn bad_spec(spec: &str, reason: String) -> RequestError {
    RequestError::BadParam {
        field: "netns",
        input: spec.to_string(),
        reason,
    }
}

fn parse_spec(spec: &str) -> Result<NetnsSpec, RequestError> {
    let s = spec.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u32>() {
            Ok(pid) if pid > 0 => Ok(NetnsSpec::Pid(pid)),
            _ => Err(bad_spec(spec, "a pid must be a number above 0".into())),
        };
    }
    if s.starts_with('/') {
        return Ok(NetnsSpec::Path(PathBuf::from(s)));
    }
    Err(bad_spec(
        spec,
        "give an absolute path to a network namespace (/run/netns/NAME, /proc/PID/ns/net) or \
         a pid"
            .into(),
    ))
}

/// Checks a request's `netns` without opening anything (what validation may do).
pub fn check_spec(spec: &str) -> Result<(), RequestError> {
    parse_spec(spec).map(drop)
}

/// Whether `file` is a network namespace (nsfs, `NS_GET_NSTYPE` = `CLONE_NEWNET`); the
/// reason when not.
fn check_is_netns(file: &File) -> Result<(), &'static str> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor's namespace type.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if kind == libc::CLONE_NEWNET {
        Ok(())
    } else if kind >= 0 {
        Err("is a namespace, but not a network namespace")
    } else {
        Err("is not a namespace (expected /run/netns/NAME or /proc/PID/ns/net)")
    }
}

/// The namespaces `net.delay` and `net.bandwidth` put sch_fq in, with how each was chosen:
/// the request's `asked` namespace, else those of the processes in the cgroups at `dirs`,
/// else (no process yet) chaosd's own.
pub fn for_departure(
    dirs: &[PathBuf],
    asked: Option<&str>,
) -> Result<Vec<(Netns, NetnsFrom)>, RequestError> {
    if let Some(spec) = asked {
        return Ok(vec![(Netns::open_spec(spec)?, NetnsFrom::Request)]);
    }
    let found = of_processes(dirs);
    if !found.is_empty() {
        return Ok(found
            .into_iter()
            .map(|ns| (ns, NetnsFrom::Target))
            .collect());
    }
    let own = Netns::own().map_err(|e| RequestError::NoNetns {
        reason: format!("opening chaosd's own network namespace: {e}"),
    })?;
    Ok(vec![(own, NetnsFrom::Chaosd)])
}

/// The distinct network namespaces of every process in the cgroups at `dirs` and below.
/// Errors when there is no process at all: the namespace cannot be known then.
pub fn of_cgroups(dirs: &[PathBuf]) -> anyhow::Result<Vec<Netns>> {
    let found = of_processes(dirs);
    if found.is_empty() {
        bail!(
            "the target cgroup has no processes, so its network namespace is unknown; start the \
             service first (this fault acts on the devices of the namespace it sends through)"
        );
    }
    Ok(found)
}

/// The distinct network namespaces of the processes in the cgroups at `dirs` and below.
pub fn of_processes(dirs: &[PathBuf]) -> Vec<Netns> {
    let mut found = BTreeMap::new();
    for dir in dirs {
        for pid in pids_under(dir) {
            // A process may exit while we look: skip it.
            if let Ok(ns) = Netns::of_pid(pid) {
                found.entry(ns.inode).or_insert(ns);
            }
        }
    }
    found.into_values().collect()
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
    fn a_netns_spec_is_a_pid_or_a_namespace_path() {
        let me = Netns::own().unwrap();
        let by_pid = Netns::open_spec(&std::process::id().to_string()).unwrap();
        assert_eq!(by_pid.inode, me.inode);
        assert_eq!(by_pid.path, me.path);
        let by_path = Netns::open_spec("/proc/self/ns/net").unwrap();
        assert_eq!(by_path.inode, me.inode);
        assert_eq!(by_path.via_pid, 0);
        let used = by_path.used(NetnsFrom::Request);
        assert_eq!(
            (used.inode, used.path.as_str()),
            (me.inode, "/proc/self/ns/net")
        );

        let refused = |spec: &str, needle: &str| {
            let err = Netns::open_spec(spec).unwrap_err().to_string();
            assert!(
                err.contains("netns") && err.contains(needle),
                "{spec:?}: {err}"
            );
        };
        refused("", "absolute path");
        refused("netns/x", "absolute path");
        refused("0", "above 0");
        refused("99999999999", "above 0");
        refused("4194305", "no process with pid 4194305");
        refused("/nonexistent/netns", "opening /nonexistent/netns");
        refused("/proc/self/status", "is not a namespace");
        refused("/proc/self/ns/mnt", "not a network namespace");
        assert!(check_spec(" 42 ").is_ok() && check_spec("/run/netns/x").is_ok());
        assert!(check_spec("x").is_err());
    }

    #[test]
    fn departure_namespaces_come_from_the_request_the_target_or_chaosd() {
        let empty = tempfile::tempdir().unwrap();
        std::fs::write(empty.path().join("cgroup.procs"), "").unwrap();
        let dirs = [empty.path().to_path_buf()];
        let own = Netns::own().unwrap();
        let chosen = for_departure(&dirs, None).unwrap();
        assert_eq!(chosen.len(), 1);
        assert_eq!(
            (chosen[0].0.inode, chosen[0].1),
            (own.inode, NetnsFrom::Chaosd)
        );

        let with_me = tempfile::tempdir().unwrap();
        std::fs::write(
            with_me.path().join("cgroup.procs"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        let chosen = for_departure(&[with_me.path().to_path_buf()], None).unwrap();
        assert_eq!(
            (chosen[0].0.inode, chosen[0].1),
            (own.inode, NetnsFrom::Target)
        );

        let chosen = for_departure(&dirs, Some("/proc/self/ns/net")).unwrap();
        assert_eq!(chosen[0].1, NetnsFrom::Request);
        assert!(for_departure(&dirs, Some("/proc/self/status")).is_err());
    }

    #[test]
    fn an_empty_cgroup_has_no_namespace() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), "").unwrap();
        let err = of_cgroups(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(err.to_string().contains("no processes"), "{err}");
    }
}
