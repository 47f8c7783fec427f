//! systemd integration, as the service manager sees it: READY=1 only once the API answers,
//! STATUS= with the active fault count, STOPPING=1 on SIGTERM, WATCHDOG=1 pings only when
//! WATCHDOG_USEC asks for them, and a listening socket passed as fd 3 (socket activation).

use std::{
    os::{
        fd::AsRawFd as _,
        unix::{
            fs::MetadataExt as _,
            net::{UnixDatagram, UnixListener},
            process::CommandExt as _,
        },
    },
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use chaosd::{
    api::{FaultSpec, ProcessPauseParams},
    client::Client,
};
use chaosd_integration::{Daemon, TestCgroup, block_on, inject, wait_for};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// What the daemon wrote to a test-owned NOTIFY_SOCKET, one string per datagram. When a
/// datagram with READY=1 arrives, the API is asked for its status at once and the answer is
/// recorded right after it as `api answered: true|false`.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl NotifySocket {
    fn start(api_socket: PathBuf) -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (Arc::clone(&messages), Arc::clone(&stop));
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let ready = text.lines().any(|l| l == "READY=1");
                seen.lock().unwrap().push(text);
                if ready {
                    let answered = block_on(Client::new(&api_socket).status()).is_ok();
                    seen.lock()
                        .unwrap()
                        .push(format!("api answered: {answered}"));
                }
            }
        });
        NotifySocket {
            _dir: dir,
            path,
            messages,
            stop,
            reader: Some(reader),
        }
    }

    fn lines(&self) -> Vec<String> {
        let messages = self.messages.lock().unwrap();
        messages
            .iter()
            .flat_map(|m| m.lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|l| *l == line).count()
    }

    /// Waits (bounded) until `line` has arrived `times` times.
    fn wait_for(&self, line: &str, times: usize) {
        let arrived = wait_for(Duration::from_secs(10), || {
            (self.count(line) >= times).then_some(())
        });
        assert!(
            arrived.is_some(),
            "{line:?} did not arrive {times} times; got {:?}",
            self.lines()
        );
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Starts chaosd with NOTIFY_SOCKET set and, if given, WATCHDOG_USEC.
fn start_notifying(watchdog_usec: Option<u64>) -> (Daemon, NotifySocket) {
    let mut notify = None;
    let daemon = Daemon::start_customized("", |dir, mut cmd| {
        let socket = NotifySocket::start(dir.join("chaosd.sock"));
        cmd.env("NOTIFY_SOCKET", &socket.path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        if let Some(usec) = watchdog_usec {
            cmd.env("WATCHDOG_USEC", usec.to_string());
        }
        notify = Some(socket);
        cmd
    });
    (daemon, notify.unwrap())
}

#[test]
fn ready_comes_once_the_api_answers_and_status_counts_faults() {
    let (daemon, notify) = start_notifying(None);
    notify.wait_for("READY=1", 1);
    notify.wait_for("api answered: true", 1);
    assert_eq!(notify.count("api answered: false"), 0);
    notify.wait_for("STATUS=serving; 0 active faults", 1);

    let cgroup = TestCgroup::new("notify");
    let fault = inject(
        &daemon,
        &cgroup,
        FaultSpec::ProcessPause(ProcessPauseParams {}),
        "30s",
    );
    notify.wait_for("STATUS=serving; 1 active fault", 1);
    let idle_before = notify.count("STATUS=serving; 0 active faults");
    block_on(daemon.client().recover(&fault.id)).unwrap();
    notify.wait_for("STATUS=serving; 0 active faults", idle_before + 1);

    kill(daemon.pid(), Signal::SIGTERM).unwrap();
    notify.wait_for("STOPPING=1", 1);
    assert_eq!(
        notify.count("WATCHDOG=1"),
        0,
        "pinged a watchdog nobody asked for: {:?}",
        notify.lines()
    );
    assert_eq!(notify.count("READY=1"), 1);
}

#[test]
fn watchdog_pings_come_when_watchdog_usec_asks_for_them() {
    // 400 ms: pings every 200 ms at most.
    let (_daemon, notify) = start_notifying(Some(400_000));
    notify.wait_for("READY=1", 1);
    notify.wait_for("WATCHDOG=1", 5);
}

#[test]
fn a_listening_socket_passed_as_fd_3_is_served() {
    let mut passed: Option<UnixListener> = None;
    let mut socket_path = PathBuf::new();
    let daemon = Daemon::start_customized("", |dir, cmd| {
        // Bound where the daemon would bind: had it not used fd 3, it would have found a live
        // socket there and refused to start.
        socket_path = dir.join("chaosd.sock");
        let listener = UnixListener::bind(&socket_path).unwrap();
        let wrapped = socket_activated(cmd, listener.as_raw_fd());
        passed = Some(listener);
        wrapped
    });
    let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let bound_inode = inode(&socket_path);
    drop(passed);

    let status = block_on(daemon.client().status()).unwrap();
    assert_eq!(status.active_faults, 0);
    assert_eq!(
        inode(&socket_path),
        bound_inode,
        "the daemon replaced the passed socket"
    );
    assert!(
        daemon.log_text().contains("socket activation"),
        "{}",
        daemon.log_text()
    );

    kill(daemon.pid(), Signal::SIGTERM).unwrap();
    let stopped = wait_for(Duration::from_secs(10), || {
        daemon.log_text().contains("chaosd stopped").then_some(())
    });
    assert!(stopped.is_some(), "{}", daemon.log_text());
    assert!(
        socket_path.exists(),
        "the daemon removed the socket systemd owns"
    );
}

/// `cmd` run as systemd runs a socket-activated service: `fd` as fd 3, LISTEN_FDS=1 and
/// LISTEN_PID set to the service's own pid (which only exists after fork, hence `sh`'s `$$`
/// before `exec`).
fn socket_activated(cmd: Command, fd: i32) -> Command {
    let mut sh = Command::new("/bin/sh");
    sh.arg("-c")
        .arg(r#"export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" "$@""#)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            sh.env(key, value);
        }
    }
    // SAFETY: dup2 and fcntl are async-signal-safe; nothing is allocated after fork.
    unsafe {
        sh.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    sh
}

/// The shipped units under a real systemd (PID 1 of a test container): `kill -9` of the main
/// process. Within a second the frozen unit thaws and the vDSO is whole again (the guardian,
/// outside the unit's cgroup, or ExecStopPost=, whichever takes the state lock first);
/// systemd restarts chaosd (Restart=on-failure); a request sent while it is down queues on
/// the socket systemd keeps and is answered by the new daemon; every fault is listed as ended
/// with what was done and reverted exactly once in the history; the new daemon works.
#[test]
fn under_systemd_a_killed_daemon_is_restarted_and_each_fault_reverted_exactly_once() {
    use chaosd::api::{ClockName, ClockSkewParams, FaultState, InjectRequest, TargetSelector};
    use chaosd_integration::{systemd_container::SystemdContainer, vdso_bytes, workspace_bin};
    use std::time::Instant;

    let (paused, skewed) = ("chaosd-test-paused.service", "chaosd-test-skewed.service");
    let container = SystemdContainer::start(
        "systemd-kill",
        &workspace_bin("chaosd"),
        &[(paused, "/bin/sleep 600"), (skewed, "/bin/sleep 600")],
    );
    let socket = container.path("/run/chaosd/chaosd.sock");
    let client = Client::new(&socket);
    // The first connection starts chaosd.service (socket activation).
    block_on(client.status()).unwrap_or_else(|e| panic!("{e}\n{}", container.log_text()));
    let main_pid = || container.unit_pids("chaosd.service", "chaosd");
    let first = main_pid();
    assert_eq!(first.len(), 1, "chaosd.service: {first:?}");
    let skewed_pid = container.unit_pids(skewed, "sleep")[0];
    let vdso_before = vdso_bytes(skewed_pid);
    let freeze = container.cgroup_dir(&format!("system.slice/{paused}/cgroup.freeze"));
    let frozen = || std::fs::read_to_string(&freeze).unwrap().trim() == "1";

    let inject = |fault: FaultSpec, unit: &str| {
        let req = InjectRequest {
            fault,
            targets: vec![TargetSelector::Unit(unit.to_string())],
            duration: Some("10m".into()),
        };
        block_on(client.inject(&req))
            .unwrap_or_else(|e| panic!("{unit}: {e}\n{}", container.log_text()))
            .id
    };
    let ids = [
        inject(FaultSpec::ProcessPause(ProcessPauseParams {}), paused),
        inject(
            FaultSpec::ClockSkew(ClockSkewParams {
                offset: "+2h".parse().unwrap(),
                clocks: vec![ClockName::Realtime],
            }),
            skewed,
        ),
    ];
    assert!(frozen(), "process.pause froze nothing");
    assert_ne!(vdso_bytes(skewed_pid), vdso_before, "no vDSO patch");
    // KillMode= cannot reach the guardian: it runs in a cgroup of its own, beside the unit's.
    let guardians: Vec<String> = std::fs::read_dir(container.cgroup_dir("/"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("chaosd-guardian-")
        })
        .map(|e| std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap())
        .filter(|procs| !procs.trim().is_empty())
        .collect();
    assert_eq!(
        guardians.len(),
        1,
        "no running guardian beside the unit: {guardians:?}"
    );

    let killed = Instant::now();
    kill(Pid::from_raw(first[0] as i32), Signal::SIGKILL).unwrap();
    // Asked while chaosd is down (RestartSec=2s): the socket is systemd's, so it waits.
    let queued = std::thread::spawn({
        let client = Client::new(&socket);
        move || block_on(client.status()).map(|s| (s.active_faults, killed.elapsed()))
    });
    let reverted = wait_for(Duration::from_secs(10), || {
        (!frozen() && vdso_bytes(skewed_pid) == vdso_before).then(|| killed.elapsed())
    })
    .unwrap_or_else(|| panic!("not reverted 10 s after kill -9\n{}", container.log_text()));
    eprintln!("measured: reverted {reverted:?} after kill -9");
    assert!(
        reverted <= Duration::from_millis(1300),
        "reverted only after {reverted:?}\n{}",
        container.log_text()
    );

    let (active, answered) = queued
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("the queued request failed: {e}\n{}", container.log_text()));
    eprintln!("measured: the queued request was answered {answered:?} after the kill");
    assert_eq!(active, 0, "the new daemon lists faults as active");
    let second = main_pid();
    assert!(
        second.len() == 1 && second != first,
        "systemd did not restart chaosd: {first:?} -> {second:?}\n{}",
        container.log_text()
    );

    let listed = block_on(client.list(true)).unwrap();
    let history = block_on(client.history(1000)).unwrap();
    for id in &ids {
        let f = listed
            .iter()
            .find(|f| &f.id == id)
            .unwrap_or_else(|| panic!("{id} is lost: not in list --all: {listed:?}"));
        assert_ne!(f.state, FaultState::Active, "{f:?}");
        let outcome = f.outcome.as_deref().unwrap_or_default();
        assert!(!outcome.is_empty(), "{id}: no outcome: {f:?}");
        let reverts: Vec<_> = history
            .iter()
            .filter(|h| h.method == "REVERT" && h.path.ends_with(id.as_str()))
            .collect();
        assert_eq!(
            reverts.len(),
            1,
            "{id} reverted {} times: {reverts:?}\n{}",
            reverts.len(),
            container.log_text()
        );
        let injected = history
            .iter()
            .any(|h| h.method == "POST" && h.outcome.contains(id.as_str()));
        assert!(
            injected,
            "{id}: the inject before the kill left the history"
        );
    }
    let pause = listed.iter().find(|f| f.id == ids[0]).unwrap();
    let outcome = pause.outcome.as_deref().unwrap();
    assert!(outcome.contains("thawed"), "{outcome}");

    // The restarted daemon works: a new pause takes hold and a recover ends it.
    let again = inject(FaultSpec::ProcessPause(ProcessPauseParams {}), paused);
    assert!(frozen());
    block_on(client.recover(&again)).unwrap();
    assert!(!frozen(), "recover did not thaw");
}
