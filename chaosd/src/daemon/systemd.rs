//! systemd integration: socket activation (`LISTEN_FDS`), readiness and status
//! (`NOTIFY_SOCKET`) and watchdog pings (`WATCHDOG_USEC`), as `systemd/chaosd.service` and
//! `systemd/chaosd.socket` use them.
//!
//! Without those variables every function here does nothing, so chaosd runs the same by hand.
//! The notification protocol and the fd passing come from the `sd-notify` crate.

use std::{
    os::{
        fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::net::UnixListener,
    },
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use nix::sys::socket::{AddressFamily, SockType, SockaddrLike as _, UnixAddr, getsockname};
use nix::sys::socket::{getsockopt, sockopt};
use sd_notify::NotifyState;
use tokio::task::JoinHandle;

use crate::engine::registry::Registry;

/// Longest gap between two STATUS= refreshes when no watchdog asks for more.
const STATUS_PERIOD: Duration = Duration::from_secs(1);

/// What systemd handed this process at start.
#[derive(Debug, Default)]
pub struct Activation {
    /// The listening API socket systemd passed as fd 3 (`chaosd.socket`), if any.
    pub listener: Option<UnixListener>,
    /// The watchdog timeout (`WatchdogSec=`); the daemon pings at half of it.
    pub watchdog: Option<Duration>,
}

impl Activation {
    /// Takes the passed socket and the watchdog setting, and removes `LISTEN_*` and
    /// `WATCHDOG_*` from the environment so the daemon's children (stress workers, services of
    /// scenarios) do not inherit them. `NOTIFY_SOCKET` stays: it is read at each notification,
    /// and systemd takes notifications from the main process only (`NotifyAccess=main`).
    ///
    /// # Safety
    ///
    /// Changes the environment: call it before any other thread exists (before the runtime).
    pub unsafe fn take_from_env() -> anyhow::Result<Activation> {
        // SAFETY: the caller guarantees no other thread reads or writes the environment.
        let fds: Vec<RawFd> = unsafe { sd_notify::listen_fds_and_unset_env() }
            .context("reading LISTEN_FDS/LISTEN_PID from systemd")?
            .collect();
        // SAFETY: as above.
        let watchdog = unsafe { sd_notify::watchdog_enabled_and_unset_env() };
        let listener = match fds.as_slice() {
            [] => None,
            [fd] => Some(inherited_listener(*fd)?),
            more => bail!(
                "systemd passed {} sockets (LISTEN_FDS={}); chaosd serves one: give chaosd.socket a single ListenStream=",
                more.len(),
                more.len()
            ),
        };
        Ok(Activation { listener, watchdog })
    }
}

/// Owns the passed fd and checks that it is a listening Unix stream socket.
fn inherited_listener(fd: RawFd) -> anyhow::Result<UnixListener> {
    // SAFETY: systemd passed this fd to this process to own (sd_listen_fds(3)); nothing else
    // in chaosd knows it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let not_ours = || {
        format!(
            "fd {} from systemd (LISTEN_FDS) is not a listening Unix stream socket; chaosd.socket needs ListenStream=/run/chaosd/chaosd.sock",
            fd.as_raw_fd()
        )
    };
    let family = getsockname::<UnixAddr>(fd.as_raw_fd())
        .ok()
        .and_then(|a| a.family());
    ensure!(family == Some(AddressFamily::Unix), not_ours());
    let kind = getsockopt(&fd.as_fd(), sockopt::SockType).with_context(not_ours)?;
    let listening = getsockopt(&fd.as_fd(), sockopt::AcceptConn).with_context(not_ours)?;
    ensure!(kind == SockType::Stream && listening, not_ours());
    let listener = UnixListener::from(fd);
    listener
        .set_nonblocking(true)
        .context("making the systemd socket non-blocking")?;
    Ok(listener)
}

/// Sends `states` to systemd if it asked for notifications; failures are logged, not fatal.
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("notifying systemd (NOTIFY_SOCKET): {e}");
    }
}

fn status_line(active_faults: usize) -> String {
    match active_faults {
        1 => "serving; 1 active fault".to_string(),
        n => format!("serving; {n} active faults"),
    }
}

/// STOPPING=1, as shutdown starts reverting faults.
pub fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping; reverting every fault"),
    ]);
}

/// Sends READY=1 (call it once the API socket listens) with STATUS=, then keeps STATUS=
/// current (the active fault count) and, with a watchdog, pings it at half its timeout. Each
/// ping follows a status read that takes the registry's lock, so a daemon whose registry hangs
/// stops pinging and systemd restarts it. The task is None without `NOTIFY_SOCKET`.
pub async fn ready_then_heartbeat(
    registry: Arc<Registry>,
    watchdog: Option<Duration>,
) -> Option<JoinHandle<()>> {
    let mut last_status = status_line(registry.status().await.active_faults);
    notify(&[NotifyState::Ready, NotifyState::Status(&last_status)]);
    std::env::var_os("NOTIFY_SOCKET")?;
    let period = watchdog.map_or(STATUS_PERIOD, |w| (w / 2).min(STATUS_PERIOD));
    if let Some(w) = watchdog {
        tracing::info!(
            watchdog_ms = w.as_millis() as u64,
            "pinging the systemd watchdog"
        );
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let status = status_line(registry.status().await.active_faults);
            let mut states = Vec::new();
            if watchdog.is_some() {
                states.push(NotifyState::Watchdog);
            }
            if status != last_status {
                states.push(NotifyState::Status(&status));
            }
            if !states.is_empty() {
                notify(&states);
            }
            last_status = status;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_counts_faults() {
        assert_eq!(status_line(0), "serving; 0 active faults");
        assert_eq!(status_line(1), "serving; 1 active fault");
        assert_eq!(status_line(7), "serving; 7 active faults");
    }

    #[test]
    fn a_passed_fd_must_be_a_listening_unix_stream_socket() {
        let dir = tempfile::tempdir().unwrap();
        let listening = UnixListener::bind(dir.path().join("ok.sock")).unwrap();
        let fd = nix::unistd::dup(&listening).unwrap();
        use std::os::fd::IntoRawFd as _;
        assert!(inherited_listener(fd.into_raw_fd()).is_ok());

        let datagram =
            std::os::unix::net::UnixDatagram::bind(dir.path().join("dgram.sock")).unwrap();
        let fd = nix::unistd::dup(&datagram).unwrap();
        let e = inherited_listener(fd.into_raw_fd()).unwrap_err();
        assert!(
            e.to_string().contains("not a listening Unix stream socket"),
            "{e}"
        );
    }
}
