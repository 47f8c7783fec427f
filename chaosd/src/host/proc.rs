//! Process identity without races: pidfds (which name one process, never a later one with the
//! same pid) and start times from `/proc/PID/stat` (which tell a recorded pid from a reuse).

use std::{
    fs, io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    time::Duration,
};

/// The start time of `pid` (field 22 of `/proc/PID/stat`, clock ticks since boot); None when
/// it is gone. Two processes with the same pid never have the same start time.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count fields after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    // After "pid (comm) ", state is field 3 of the whole line; starttime is field 22.
    after.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Whether `pid` is the process that started at `started` and has not exited (a zombie counts
/// as gone: it runs nothing).
pub fn is_alive(pid: u32, started: u64) -> bool {
    start_time(pid) == Some(started) && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()))
        .is_some_and(|c| c == 'Z' || c == 'X')
}

/// A pidfd (Linux 5.3+): readable once its process has exited.
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd for `pid`, checking it is still the process that started at `started`
    /// (checked after the open, so the fd cannot name a later process).
    pub fn open(pid: u32, started: u64) -> io::Result<PidFd> {
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this fd to us; nothing else owns it.
        let fd = PidFd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        if start_time(pid) != Some(started) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(fd)
    }

    /// Waits up to `timeout` for the process to exit; true once it has.
    pub fn wait_exit(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, owned by this stack frame, for the call's duration.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(n > 0)
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_start_time_and_a_pidfd() {
        let me = std::process::id();
        let started = start_time(me).unwrap();
        assert!(is_alive(me, started));
        assert!(!is_alive(me, started + 1));
        let fd = PidFd::open(me, started).unwrap();
        assert!(!fd.wait_exit(Duration::from_millis(1)).unwrap());
        assert!(PidFd::open(me, started + 1).is_err());
    }

    #[test]
    fn a_reaped_child_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let started = start_time(pid);
        child.wait().unwrap();
        assert!(started.is_none_or(|s| !is_alive(pid, s)));
    }
}
