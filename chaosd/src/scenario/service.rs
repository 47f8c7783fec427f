//! Demo services a scenario starts, each in a fresh child cgroup of the run's own cgroup
//! (`/chaosd-run-<id>/<service>`), so the scenario can target them without any setup. Both
//! cgroups, and every process in them, are removed when the run ends.
//!
//! `http = "IP:PORT"` runs chaosd's built-in responder (`chaosd __http-responder`), which
//! answers every request with `200 ok`; `command = [..]` runs a program. Both run as the user
//! who started the run (the API peer's uid and gid, no supplementary groups), never as root
//! unless root started it: so a non-root user's `http` service cannot bind a port below 1024.

use std::{
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{
    host::cgroup::{ChildCgroup, spawn_in_cgroup_as},
    scenario::{
        format::{ServiceRun, ServiceSpec},
        probes::RunAs,
    },
};

/// Prefix of the cgroups runs make directly under the cgroup2 mount.
pub const RUN_CGROUP_PREFIX: &str = "chaosd-run-";

/// A service process in its cgroup; dropping it kills the process and removes the cgroup.
pub struct RunningService {
    pub name: String,
    pub pid: u32,
    child: Child,
    // Declared last: dropped after the child is killed and reaped.
    cgroup: ChildCgroup,
}

impl RunningService {
    /// The service's cgroup, relative to the cgroup2 mount.
    pub fn cgroup(&self) -> &str {
        self.cgroup.rel()
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates the service's cgroup under the run's and starts it there.
pub fn start(parent: &RunCgroup, spec: &ServiceSpec, run_as: RunAs) -> io::Result<RunningService> {
    let cgroup = ChildCgroup::create(parent.cgroup().dir(), &spec.name)?;
    let mut cmd = match &spec.run {
        ServiceRun::Http(addr) => {
            let mut cmd = Command::new("/proc/self/exe");
            cmd.arg("__http-responder")
                .arg("--listen")
                .arg(addr.to_string());
            cmd
        }
        ServiceRun::Command(argv) => {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            cmd
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Joins the cgroup first, then drops to the user, both before exec.
    let child = spawn_in_cgroup_as(&mut cmd, cgroup.dir(), run_as.user())?;
    Ok(RunningService {
        name: spec.name.clone(),
        pid: child.id(),
        child,
        cgroup,
    })
}

/// The run's own cgroup (`/chaosd-run-<id>`), parent of its services' cgroups. A marker file
/// in the state dir names it while it exists, so a daemon that restarts after a crash removes
/// what its predecessor left ([`remove_leftovers`]) and nothing of other daemons.
pub struct RunCgroup {
    cgroup: ChildCgroup,
    marker: PathBuf,
}

impl RunCgroup {
    pub fn create(mount: &Path, run_id: &str, runs_dir: &Path) -> io::Result<RunCgroup> {
        let cgroup = ChildCgroup::create(mount, &format!("{RUN_CGROUP_PREFIX}{run_id}"))?;
        let marker = runs_dir.join(format!("{run_id}.cgroup"));
        std::fs::write(&marker, cgroup.dir().as_os_str().as_encoded_bytes())?;
        Ok(RunCgroup { cgroup, marker })
    }

    pub fn cgroup(&self) -> &ChildCgroup {
        &self.cgroup
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        crate::host::cgroup::remove_cgroup_tree(self.cgroup.dir());
        let _ = std::fs::remove_file(&self.marker);
    }
}

/// Removes the cgroups (and their processes) of runs a previous daemon with this state dir
/// left when it died mid-run; returns how many.
pub fn remove_leftovers(runs_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return 0;
    };
    let mut removed = 0;
    for marker in entries.flatten().map(|e| e.path()) {
        if marker.extension().is_none_or(|e| e != "cgroup") {
            continue;
        }
        let dir = PathBuf::from(std::fs::read_to_string(&marker).unwrap_or_default());
        let ours = dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(RUN_CGROUP_PREFIX));
        if ours && dir.is_dir() {
            tracing::warn!(cgroup = %dir.display(), "removing the cgroup of a run a previous chaosd left");
            crate::host::cgroup::remove_cgroup_tree(&dir);
            removed += 1;
        }
        let _ = std::fs::remove_file(&marker);
    }
    removed
}

/// The built-in responder: answers every HTTP request on `listen` with `200 ok`, one thread
/// per connection, until killed.
pub fn http_responder(listen: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::spawn(move || {
            let _ = answer(conn);
        });
    }
    Ok(())
}

fn answer(mut conn: TcpStream) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
    )
}
