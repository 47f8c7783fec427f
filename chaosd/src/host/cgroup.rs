//! cgroup v2: finding the mount, resolving targets to cgroup ids, a child-cgroup guard, and
//! starting a process inside a cgroup.
//!
//! The cgroup2 mount is read from /proc/self/mountinfo, never assumed: on hybrid hosts it is
//! /sys/fs/cgroup/unified, on pure v2 hosts /sys/fs/cgroup. A cgroup's id, as the kernel
//! programs see it, is the inode number of its directory.

use std::{
    fs::{self, OpenOptions},
    io,
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
    process::{Child, Command},
};

use crate::{
    api::{ProcessEntry, ResolvedTarget, TargetSelector},
    error::TargetError,
};

/// What [`join_init_cgroup_namespace`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupNamespace {
    /// Already PID 1's (or namespaces are not in use).
    Init,
    /// Was another; now PID 1's.
    Joined,
    /// Another one, and PID 1's cannot be entered (the reason): cgroup paths of processes
    /// outside this namespace do not resolve.
    Private(String),
}

static CGROUP_NAMESPACE: std::sync::Mutex<Option<CgroupNamespace>> = std::sync::Mutex::new(None);

/// Moves this process into PID 1's cgroup namespace when it runs in another one (a container
/// with the host's PID namespace, such as the Kubernetes DaemonSet: runtimes give containers a
/// private cgroup namespace). There, `/proc/PID/cgroup` of every process reads as a path under
/// the cgroup2 mount, as target resolution needs; in a private namespace it reads relative to
/// the container's own cgroup. Must run before any thread starts; children (the guardian,
/// workers) inherit it. Never fails: what it found is kept for the start-up log.
pub fn join_init_cgroup_namespace() -> CgroupNamespace {
    let link = |p: &str| fs::read_link(p).ok();
    let found = match (link("/proc/self/ns/cgroup"), link("/proc/1/ns/cgroup")) {
        (Some(own), Some(init)) if own != init => match fs::File::open("/proc/1/ns/cgroup")
            .map_err(|e| e.to_string())
            .and_then(|ns| {
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWCGROUP)
                    .map_err(|e| e.to_string())
            }) {
            Ok(()) => CgroupNamespace::Joined,
            Err(e) => CgroupNamespace::Private(e),
        },
        _ => CgroupNamespace::Init,
    };
    *CGROUP_NAMESPACE.lock().unwrap_or_else(|e| e.into_inner()) = Some(found.clone());
    found
}

/// What [`join_init_cgroup_namespace`] found, if it ran.
pub fn cgroup_namespace() -> Option<CgroupNamespace> {
    CGROUP_NAMESPACE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// The first cgroup2 mount point in /proc/self/mountinfo.
pub fn cgroup2_mount() -> Result<PathBuf, TargetError> {
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(|source| TargetError::Io {
        op: "reading",
        path: "/proc/self/mountinfo".into(),
        source,
    })?;
    parse_cgroup2_mount(&info).ok_or(TargetError::NoCgroup2)
}

fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let mount_point = pre.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// A resolved cgroup: its directory and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// Absolute directory path.
    pub dir: PathBuf,
    /// Path relative to the mount, starting with "/".
    pub rel: String,
    pub id: u64,
}

impl Cgroup {
    /// Depth below the root: "/" is 0, "/a" is 1, "/a/b" is 2.
    pub fn level(&self) -> usize {
        self.rel.split('/').filter(|s| !s.is_empty()).count()
    }

    /// Opens the cgroup directory of `path` under `mount` (absolute or relative to it).
    pub fn open(mount: &Path, path: &str) -> Result<Cgroup, TargetError> {
        let rel = relative_to_mount(mount, path)?;
        let dir = if rel == "/" {
            mount.to_path_buf()
        } else {
            mount.join(&rel[1..])
        };
        let meta = fs::metadata(&dir).map_err(|_| TargetError::CgroupNotFound {
            path: path.to_string(),
            mount: mount.to_path_buf(),
        })?;
        if !meta.is_dir() || !is_cgroup2(&dir) {
            return Err(TargetError::NotCgroup2 {
                path: path.to_string(),
                mount: mount.to_path_buf(),
            });
        }
        Ok(Cgroup {
            dir,
            rel,
            id: meta.ino(),
        })
    }
}

fn is_cgroup2(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// Normalises `path` to "/a/b" relative to `mount`, refusing `..` so a target never escapes it.
fn relative_to_mount(mount: &Path, path: &str) -> Result<String, TargetError> {
    let p = Path::new(path);
    let inner = p.strip_prefix(mount).unwrap_or(p);
    let mut parts = Vec::new();
    for c in inner.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(TargetError::NotCgroup2 {
                    path: path.to_string(),
                    mount: mount.to_path_buf(),
                });
            }
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The cgroup2 path ("/a/b") of a process, from the `0::` line of /proc/PID/cgroup.
pub fn cgroup_of_pid(pid: u32) -> Result<String, TargetError> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|_| TargetError::NoSuchPid { pid })?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end_matches(" (deleted)").to_string())
        .ok_or(TargetError::PidWithoutCgroup2 { pid })
}

/// Finds the cgroup systemd made for `unit`: a directory with exactly that name.
fn find_unit(mount: &Path, unit: &str) -> Result<String, TargetError> {
    let valid = [".service", ".scope", ".slice"]
        .iter()
        .any(|s| unit.len() > s.len() && unit.ends_with(s));
    if !valid || unit.contains('/') {
        return Err(TargetError::BadUnitName {
            unit: unit.to_string(),
        });
    }
    one_match(
        dirs_named(mount, 6, |name| name == unit),
        || TargetError::UnitNotFound {
            unit: unit.to_string(),
            mount: mount.to_path_buf(),
        },
        |matches| TargetError::UnitAmbiguous {
            unit: unit.to_string(),
            matches,
        },
    )
}

/// How deep container and pod cgroups are looked for (kubepods.slice/…/pod/container is 4-5).
const RUNTIME_DEPTH: usize = 10;

/// Container runtimes' cgroup name prefixes (systemd driver, `<prefix><id>.scope`; CRI-O also
/// under cgroupfs). The id alone is containerd's and Docker's cgroupfs name.
const CONTAINER_PREFIXES: &[&str] = &["cri-containerd-", "crio-", "docker-"];

/// The container id a cgroup directory name stands for, if it names a container.
fn container_id_of(name: &str) -> Option<&str> {
    let name = name.strip_suffix(".scope").unwrap_or(name);
    if name.starts_with("crio-conmon-") {
        return None;
    }
    let id = CONTAINER_PREFIXES
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Finds the cgroup of container `id` (full, or a unique prefix of 12+ hex digits; a
/// `containerd://`-style prefix is dropped).
fn find_container(mount: &Path, id: &str) -> Result<String, TargetError> {
    let wanted = id.rsplit("://").next().unwrap_or(id).to_ascii_lowercase();
    if wanted.len() < 12 || wanted.len() > 64 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TargetError::BadContainerId { id: id.to_string() });
    }
    one_match(
        dirs_named(mount, RUNTIME_DEPTH, |name| {
            container_id_of(name).is_some_and(|c| c.starts_with(&wanted))
        }),
        || TargetError::ContainerNotFound {
            id: id.to_string(),
            mount: mount.to_path_buf(),
        },
        |matches| TargetError::ContainerAmbiguous {
            id: id.to_string(),
            matches,
        },
    )
}

/// Finds the cgroup of pod `uid`: `pod<uid>` (cgroupfs) or `…-pod<uid, _ for ->.slice`.
fn find_pod(mount: &Path, uid: &str) -> Result<String, TargetError> {
    let wanted = uid.to_ascii_lowercase().replace('_', "-");
    let valid = wanted.len() == 36
        && wanted.bytes().enumerate().all(|(i, b)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    if !valid {
        return Err(TargetError::BadPodUid {
            uid: uid.to_string(),
        });
    }
    let cgroupfs = format!("pod{wanted}");
    let systemd = format!("-pod{}.slice", wanted.replace('-', "_"));
    one_match(
        dirs_named(mount, RUNTIME_DEPTH, |name| {
            name == cgroupfs || name.ends_with(&systemd)
        }),
        || TargetError::PodNotFound {
            uid: uid.to_string(),
            mount: mount.to_path_buf(),
        },
        |matches| TargetError::PodAmbiguous {
            uid: uid.to_string(),
            matches,
        },
    )
}

/// The one directory found, or `none()`, or `ambiguous(the paths found)`.
fn one_match(
    found: Vec<PathBuf>,
    none: impl FnOnce() -> TargetError,
    ambiguous: impl FnOnce(String) -> TargetError,
) -> Result<String, TargetError> {
    match found.as_slice() {
        [] => Err(none()),
        [one] => Ok(one.to_string_lossy().into_owned()),
        many => Err(ambiguous(
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// The directories up to `depth` levels below `mount` whose name `wanted` accepts.
fn dirs_named(mount: &Path, depth: usize, wanted: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk_dirs(mount, depth, &mut |dir| {
        if dir
            .file_name()
            .is_some_and(|n| wanted(&n.to_string_lossy()))
        {
            found.push(dir.to_path_buf());
        }
    });
    found
}

fn walk_dirs(dir: &Path, depth: usize, visit: &mut dyn FnMut(&Path)) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let path = entry.path();
            visit(&path);
            if depth > 1 {
                walk_dirs(&path, depth - 1, visit);
            }
        }
    }
}

/// Resolves a selector and checks the daemon may touch it: not the root, not an ancestor of
/// the daemon's own cgroup, not deeper than the kernel programs walk.
pub fn resolve(
    mount: &Path,
    selector: &TargetSelector,
    max_level: u32,
) -> Result<ResolvedTarget, TargetError> {
    let cgroup = match selector {
        TargetSelector::Cgroup(path) => Cgroup::open(mount, path)?,
        TargetSelector::Pid(pid) => Cgroup::open(mount, &cgroup_of_pid(*pid)?)?,
        TargetSelector::Unit(unit) => Cgroup::open(mount, &find_unit(mount, unit)?)?,
        TargetSelector::Container(id) => Cgroup::open(mount, &find_container(mount, id)?)?,
        TargetSelector::Pod(uid) => Cgroup::open(mount, &find_pod(mount, uid)?)?,
        // Many cgroups, not one: the registry expands it (`host_cover`).
        TargetSelector::Host => return Err(TargetError::HostIsNotOneCgroup),
    };
    if cgroup.level() == 0 {
        return Err(TargetError::Root);
    }
    if cgroup.level() > max_level as usize {
        let level = cgroup.level();
        return Err(TargetError::TooDeep {
            path: cgroup.rel,
            level,
            max: max_level,
        });
    }
    let own = cgroup_of_pid(std::process::id())?;
    if is_same_or_ancestor(&cgroup.rel, &own) {
        return Err(TargetError::ContainsDaemon {
            path: cgroup.rel,
            pid: std::process::id(),
        });
    }
    Ok(ResolvedTarget {
        selector: selector.clone(),
        cgroup: cgroup.rel,
        cgroup_id: cgroup.id,
    })
}

/// Name prefixes of the cgroups chaosd makes for itself (its guardian, its stress workers'
/// parent): never part of a host-wide target.
pub const OWN_CGROUP_PREFIXES: &[&str] = &["chaosd-guardian-", "chaosd-stress-"];

/// How a host-wide expansion ([`host_cover`]) treats one cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostPart {
    /// Left out, with everything below it.
    Excluded,
    /// Never a target itself (it holds chaosd, PID 1 or a protected cgroup): its children
    /// are looked at one by one.
    Split,
    /// A target, unless something below it is excluded.
    Whole,
}

/// The cgroups a host-wide target acts on: the largest subtrees that hold nothing excluded.
#[derive(Debug, Default)]
pub struct HostCover {
    /// Cgroup paths ("/a/b").
    pub targets: Vec<String>,
    /// The cgroups left out (their descendants are left out with them).
    pub excluded: Vec<String>,
    /// Cgroups not targeted themselves whose own processes therefore stay untouched (the root,
    /// a parent of an excluded cgroup), and subtrees deeper than the programs walk.
    pub uncovered: Vec<String>,
}

/// Expands "the host" into the cgroups to target under `mount`: walking down from the root,
/// a cgroup is taken whole when `part` says so for it and nothing below it is excluded; a
/// cgroup that holds an exclusion is split into its children. Cgroups deeper than
/// `max_level` cannot be targeted and count as uncovered.
pub fn host_cover(mount: &Path, max_level: usize, part: &dyn Fn(&str) -> HostPart) -> HostCover {
    let below = cover_below(mount, "", 0, max_level, part);
    let mut uncovered = below.uncovered;
    if !below.clean || has_processes(mount) {
        uncovered.insert(0, "/".to_string());
    }
    HostCover {
        targets: below.targets,
        excluded: below.excluded,
        uncovered,
    }
}

/// How the children of one cgroup are covered.
struct Below {
    /// Every descendant can be taken with the cgroup itself.
    clean: bool,
    targets: Vec<String>,
    excluded: Vec<String>,
    uncovered: Vec<String>,
}

/// Covers the children of `dir` (cgroup path `rel`, at `level`).
fn cover_below(
    dir: &Path,
    rel: &str,
    level: usize,
    max_level: usize,
    part: &dyn Fn(&str) -> HostPart,
) -> Below {
    let mut out = Below {
        clean: true,
        targets: Vec::new(),
        excluded: Vec::new(),
        uncovered: Vec::new(),
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    let mut children: Vec<(PathBuf, String)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| (e.path(), e.file_name().to_string_lossy().into_owned()))
        .collect();
    children.sort();
    for (child, name) in children {
        let child_rel = format!("{rel}/{name}");
        let child_part = part(&child_rel);
        if child_part == HostPart::Excluded {
            out.excluded.push(child_rel);
            out.clean = false;
            continue;
        }
        let below = cover_below(&child, &child_rel, level + 1, max_level, part);
        out.excluded.extend(below.excluded);
        if child_part == HostPart::Whole && below.clean {
            // Taken whole; too deep to be a target only if its parent is split too.
            if level < max_level {
                out.targets.push(child_rel);
            } else {
                out.uncovered.push(child_rel);
            }
            continue;
        }
        out.clean = false;
        if has_processes(&child) {
            out.uncovered.push(child_rel);
        }
        out.targets.extend(below.targets);
        out.uncovered.extend(below.uncovered);
    }
    out
}

/// The user-space processes (kernel threads left out) in cgroup `rel` and, with `below`, in
/// every cgroup under it, as `ps` names them.
pub fn processes_in(mount: &Path, rel: &str, below: bool) -> Vec<ProcessEntry> {
    let mut out = Vec::new();
    let dir = mount.join(rel.trim_start_matches('/'));
    collect_processes(&dir, rel, below, &mut out);
    out.sort_by_key(|p| p.pid);
    out
}

fn collect_processes(dir: &Path, rel: &str, below: bool, out: &mut Vec<ProcessEntry>) {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        // Kernel threads have an empty command line.
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.is_empty() {
            continue;
        }
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        out.push(ProcessEntry {
            pid,
            comm: comm.trim().to_string(),
            cgroup: rel.to_string(),
        });
    }
    if !below {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let child_rel = format!("{}/{name}", rel.trim_end_matches('/'));
            collect_processes(&e.path(), &child_rel, true, out);
        }
    }
}

fn has_processes(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
}

/// Whether cgroup path `candidate` is `of` or one of its ancestors (by path component).
pub fn is_same_or_ancestor(candidate: &str, of: &str) -> bool {
    of == candidate || of.starts_with(&format!("{}/", candidate.trim_end_matches('/')))
}

/// A cgroup this process made, removed on drop after killing whatever runs in it.
/// Used by `chaosctl demo` and by the integration tests.
#[derive(Debug)]
pub struct ChildCgroup {
    cgroup: Cgroup,
}

impl ChildCgroup {
    /// Creates `name` under `parent` (a directory of the cgroup2 filesystem).
    pub fn create(parent: &Path, name: &str) -> std::io::Result<ChildCgroup> {
        let dir = parent.join(name);
        fs::create_dir(&dir)?;
        let mount = cgroup2_mount().map_err(std::io::Error::other)?;
        let rel = dir.strip_prefix(&mount).map_err(std::io::Error::other)?;
        let cgroup = Cgroup::open(&mount, &rel.to_string_lossy()).map_err(std::io::Error::other)?;
        Ok(ChildCgroup { cgroup })
    }

    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    pub fn dir(&self) -> &Path {
        &self.cgroup.dir
    }

    /// Path relative to the mount ("/a/b"), as `--cgroup` takes it.
    pub fn rel(&self) -> &str {
        &self.cgroup.rel
    }

    pub fn id(&self) -> u64 {
        self.cgroup.id
    }

    /// Moves process `pid` into this cgroup.
    pub fn add_pid(&self, pid: u32) -> std::io::Result<()> {
        fs::write(self.cgroup.dir.join("cgroup.procs"), pid.to_string())
    }

    /// Pids currently in this cgroup (not its children).
    pub fn pids(&self) -> Vec<u32> {
        fs::read_to_string(self.cgroup.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.cgroup.dir);
    }
}

/// Starts `cmd` as a member of the cgroup at `dir`: the child joins it before `exec`, so
/// every socket it creates belongs to that cgroup.
pub fn spawn_in_cgroup(cmd: &mut Command, dir: &Path) -> io::Result<Child> {
    spawn_in_cgroup_as(cmd, dir, None)
}

/// A user to run a child as: its uid and primary gid, no supplementary groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunUser {
    pub uid: u32,
    pub gid: u32,
}

/// [`spawn_in_cgroup`], then, still before `exec` and after joining the cgroup (which needs
/// the daemon's privileges on kernels before 5.16), drops to `user`: `setgroups` (none),
/// `setgid`, `setuid`. Any failure fails the spawn: the program never runs with more.
pub fn spawn_in_cgroup_as(
    cmd: &mut Command,
    dir: &Path,
    user: Option<RunUser>,
) -> io::Result<Child> {
    use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
    let procs = OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))?;
    let fd = procs.as_raw_fd();
    // SAFETY: between fork and exec the closure only calls write(2), which is async-signal-safe;
    // "0" moves the writing process itself.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if let Some(RunUser { uid, gid }) = user {
        // SAFETY: setgroups(2), setgid(2) and setuid(2) only, in the single-threaded child;
        // registered after the cgroup closure above, so it runs after it.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn();
    drop(procs);
    child
}

/// Kills every process below `dir` and removes the directories, children first.
pub fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    for _ in 0..200 {
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        kill_members(dir);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    tracing::warn!(cgroup = %dir.display(), "could not remove cgroup");
}

fn kill_members(dir: &Path) {
    // cgroup.kill (5.14+) kills the whole subtree; fall back to signalling each pid.
    if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory tree shaped like a cgroup hierarchy; `procs` cgroups hold a process.
    fn tree(dirs: &[&str], procs: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for d in dirs {
            fs::create_dir_all(root.path().join(d)).unwrap();
        }
        for d in procs {
            let dir = root.path().join(d.trim_start_matches('/'));
            fs::write(dir.join("cgroup.procs"), "4242\n").unwrap();
        }
        root
    }

    const C1: &str = "3f4c9a1b2d7e11112222333344445555666677778888999900001111aaaabbbb";
    const C2: &str = "3f4c9a1b2d7e99992222333344445555666677778888999900001111aaaabbbb";
    const POD: &str = "7c0e2a52-1d43-4a8b-9f1e-0a6b2f3c4d5e";

    /// Containers and pods named as each runtime names them, under both drivers.
    fn runtime_tree() -> tempfile::TempDir {
        let pod_systemd = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7c0e2a52_1d43_4a8b_9f1e_0a6b2f3c4d5e.slice";
        tree(
            &[
                &format!("{pod_systemd}/cri-containerd-{C1}.scope"),
                &format!("{pod_systemd}/crio-conmon-{C2}.scope"),
                &format!("kubepods/besteffort/pod0b0e2a52-1d43-4a8b-9f1e-0a6b2f3c4d5e/crio-{C2}"),
                "system.slice/docker-aaaabbbbccccddddeeeeffff0000111122223333444455556666777788889999.scope",
                "docker/bbbbbbbbccccddddeeeeffff0000111122223333444455556666777788889999",
            ],
            &[],
        )
    }

    #[test]
    fn containers_are_found_by_each_runtime_s_cgroup_name() {
        let root = runtime_tree();
        let m = root.path();
        let rel = |p: String| {
            p.strip_prefix(&m.display().to_string())
                .unwrap()
                .to_string()
        };
        assert!(
            rel(find_container(m, C1).unwrap()).ends_with(&format!("cri-containerd-{C1}.scope"))
        );
        // A `containerd://`-style prefix is dropped; crio-conmon-ID is the monitor, not ID.
        assert_eq!(
            find_container(m, &format!("containerd://{C1}")).unwrap(),
            find_container(m, C1).unwrap()
        );
        assert!(
            rel(find_container(m, &format!("cri-o://{C2}")).unwrap())
                .ends_with(&format!("crio-{C2}"))
        );
        // A unique 12-digit prefix is enough.
        assert!(
            rel(find_container(m, "aaaabbbbcccc").unwrap()).starts_with("/system.slice/docker-")
        );
        assert!(rel(find_container(m, "bbbbbbbbcccc").unwrap()).starts_with("/docker/"));
        // The shared 12-digit prefix of C1 and C2 is ambiguous; more digits are not.
        let e = find_container(m, &C1[..12]).unwrap_err();
        assert!(matches!(e, TargetError::ContainerAmbiguous { .. }), "{e}");
        assert!(find_container(m, &C1[..13]).is_ok());
        let e = find_container(m, "0123456789ab").unwrap_err();
        assert!(matches!(e, TargetError::ContainerNotFound { .. }), "{e}");
        for bad in ["abc", "zzzzzzzzzzzz", ""] {
            let e = find_container(m, bad).unwrap_err();
            assert!(
                matches!(e, TargetError::BadContainerId { .. }),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn pods_are_found_under_both_drivers() {
        let root = runtime_tree();
        let m = root.path();
        let found = find_pod(m, POD).unwrap();
        assert!(
            found.ends_with("kubepods-burstable-pod7c0e2a52_1d43_4a8b_9f1e_0a6b2f3c4d5e.slice"),
            "{found}"
        );
        // The uid as the systemd driver writes it finds the same cgroup.
        assert_eq!(find_pod(m, &POD.replace('-', "_")).unwrap(), found);
        let cgroupfs = find_pod(m, "0b0e2a52-1d43-4a8b-9f1e-0a6b2f3c4d5e").unwrap();
        assert!(cgroupfs.ends_with("/kubepods/besteffort/pod0b0e2a52-1d43-4a8b-9f1e-0a6b2f3c4d5e"));
        let e = find_pod(m, "11111111-1d43-4a8b-9f1e-0a6b2f3c4d5e").unwrap_err();
        assert!(matches!(e, TargetError::PodNotFound { .. }), "{e}");
        let e = find_pod(m, "not-a-uid").unwrap_err();
        assert!(matches!(e, TargetError::BadPodUid { .. }), "{e}");
    }

    #[test]
    fn host_cover_takes_the_largest_subtrees_without_exclusions() {
        let root = tree(
            &[
                "a/x",
                "sys/sshd.service",
                "sys/app",
                "sys/db/inner",
                "deep/l2/l3/sshd.service",
                "deep/l2/l3/other",
            ],
            &["/", "/sys"],
        );
        let part = |c: &str| {
            if c.ends_with("/sshd.service") {
                HostPart::Excluded
            } else {
                HostPart::Whole
            }
        };
        let cover = host_cover(root.path(), 2, &part);
        // l3/other is at level 4, below what a target may be (2): uncovered.
        assert_eq!(cover.targets, ["/a", "/sys/app", "/sys/db"]);
        assert_eq!(
            cover.excluded,
            ["/deep/l2/l3/sshd.service", "/sys/sshd.service"]
        );
        assert_eq!(cover.uncovered, ["/", "/deep/l2/l3/other", "/sys"]);
    }

    #[test]
    fn finds_cgroup2_mount_on_hybrid_and_pure_hosts() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure =
            "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            parse_cgroup2_mount(pure),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            parse_cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }

    #[test]
    fn relative_paths_never_escape_the_mount() {
        let m = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(
            relative_to_mount(m, "/sys/fs/cgroup/unified/a/b").unwrap(),
            "/a/b"
        );
        assert_eq!(relative_to_mount(m, "/a/b/").unwrap(), "/a/b");
        assert_eq!(relative_to_mount(m, "a").unwrap(), "/a");
        assert_eq!(relative_to_mount(m, "/").unwrap(), "/");
        assert!(relative_to_mount(m, "/a/../../etc").is_err());
    }

    #[test]
    fn ancestry_is_by_path_component() {
        assert!(is_same_or_ancestor("/a", "/a/b"));
        assert!(is_same_or_ancestor("/a", "/a"));
        assert!(!is_same_or_ancestor("/a", "/ab"));
        assert!(!is_same_or_ancestor("/a/b", "/a"));
    }
}
