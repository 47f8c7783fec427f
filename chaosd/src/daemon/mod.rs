//! The daemon's life: load the programs, clean up after a crashed predecessor, serve, and
//! revert every fault on the way out.

pub mod audit;
pub mod guardian;
pub mod http;
pub mod leftovers;
pub mod remote;
pub mod schedules;
pub mod systemd;

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use tokio::{
    io::{Interest, unix::AsyncFd},
    net::UnixListener,
};
use tracing::{info, warn};

use self::{audit::History, systemd::Activation};

use crate::{
    api::FaultState,
    config::Config,
    engine::registry::Registry,
    faults::FaultKinds,
    faults::kernel::{Kernel, KernelLogger},
    host::cgroup,
    scenario::runs::Runs,
};

/// Serves until SIGTERM/SIGINT, then reverts every fault. `systemd` is what the service manager
/// passed (a listening socket, a watchdog); empty when run by hand.
pub async fn run(config: Config, systemd: Activation) -> anyhow::Result<()> {
    let metrics_listen = config
        .daemon
        .metrics_listen
        .map(crate::engine::metrics::check_listen_addr)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    // Checked before anything is loaded: a bad [remote] section stops the start.
    let remote_listen = config.remote.check(&config.faults)?;
    let mount = cgroup::cgroup2_mount()?;
    let state_dir = &config.daemon.state_dir;
    // The lock is held until the daemon exits (and by the kernel until it dies).
    let (_state_lock, journal, cleaned) = leftovers::clean(state_dir)?;
    if !cleaned.is_empty() {
        info!("cleaned what a previous chaosd left:\n{cleaned}");
    }
    let history = History::open(&config.daemon.history_db())?;
    // Faults this start reverted go to the history; the guardian recorded its own.
    crate::daemon::guardian::record_history(&config.daemon.history_db(), &cleaned.faults);
    let (mut kernel, logger, heartbeat_map) = tokio::task::spawn_blocking(Kernel::load).await??;
    let beat_file = crate::faults::kernel::beat_file::BeatFile::create(state_dir)
        .inspect_err(|e| warn!("creating the guardian's heartbeat file: {e}"))
        .ok();
    let heartbeat = crate::faults::kernel::heartbeat::Heartbeat::new(heartbeat_map, beat_file);
    tokio::spawn(heartbeat.clone().keep_beating());
    kernel.net.fq.set_record(leftovers::fq_record(state_dir));
    kernel.net.tc.set_record(leftovers::tc_record(state_dir));
    if let Some(logger) = logger {
        tokio::spawn(forward_kernel_logs(logger));
    }
    let net_attached = kernel.net.attached_flag();
    let kernel = Arc::new(std::sync::Mutex::new(kernel));
    let kinds = FaultKinds {
        kernel,
        net_attached,
        stress: config.stress.clone(),
    };
    let registry = Registry::new(
        kinds,
        heartbeat,
        journal,
        config.faults.clone(),
        config.policy.clone(),
        mount.clone(),
    );
    let remote_mount = mount.clone();
    registry
        .adopt_ended(
            cleaned
                .by_guardian
                .into_iter()
                .chain(cleaned.faults)
                .map(|e| e.info),
        )
        .await;
    if config.daemon.guardian {
        start_guardian(&config).await?;
    }
    let runs = Runs::new(Arc::clone(&registry), mount, &config.daemon.state_dir);
    // Next to the audit trail: both outlive reboots (state_dir is under /run by default).
    let schedules = schedules::Schedules::open(
        &config.daemon.history_db(),
        Arc::clone(&runs),
        Arc::clone(&registry),
        Arc::clone(&history),
    )
    .context("opening the schedules")?;

    let (listener, access, _socket) = listen(&config, systemd.listener)?;
    let metrics_task = match metrics_listen {
        Some(addr) => Some(http::serve_metrics_tcp(addr, Arc::clone(&registry)).await?),
        None => None,
    };
    let remote_task = match remote_listen {
        Some(listen) => {
            let (addr, task) = remote::serve(
                listen,
                Arc::clone(&registry),
                Arc::clone(&history),
                &config.daemon.state_dir,
                remote_mount,
                http::Access::for_group(&config.daemon.group),
            )
            .await?;
            info!(%addr, "remote listener ready");
            Some(task)
        }
        None => None,
    };
    let ticker = tokio::spawn(Arc::clone(&schedules).tick_forever());
    match crate::host::cgroup::cgroup_namespace() {
        Some(crate::host::cgroup::CgroupNamespace::Joined) => info!(
            "left this container's cgroup namespace for PID 1's: cgroup paths read as the host's"
        ),
        Some(crate::host::cgroup::CgroupNamespace::Private(why)) => warn!(
            "chaosd runs in a cgroup namespace other than PID 1's and cannot enter PID 1's ({why}): --pid targets outside its own namespace do not resolve; run it with the host's cgroup namespace"
        ),
        _ => {}
    }
    info!(pid = std::process::id(), "chaosd ready");
    let heartbeat =
        crate::daemon::systemd::ready_then_heartbeat(Arc::clone(&registry), systemd.watchdog).await;
    let served = http::serve(
        listener,
        access,
        Arc::clone(&registry),
        Arc::clone(&runs),
        history,
        schedules,
        shutdown_signal(),
    )
    .await;
    // No new remote attack once stopping.
    if let Some(task) = remote_task {
        task.abort();
    }
    // No new scheduled run once stopping; due times from here on are missed.
    ticker.abort();
    // systemd stops watching the watchdog once the service stops; STATUS= says why we linger.
    if let Some(task) = heartbeat {
        task.abort();
    }
    crate::daemon::systemd::stopping();
    // Runs roll back their own faults and write their reports first.
    runs.shutdown().await;
    if let Some(task) = metrics_task {
        task.abort();
    }
    let reverted = registry.recover_all(FaultState::Stopped).await;
    info!(
        reverted = reverted.len(),
        "chaosd stopped; every fault reverted"
    );
    served
}

/// Starts the guardian (after the cleanup, so it never sees a predecessor's journal) and the
/// task that replaces it if it dies.
async fn start_guardian(config: &Config) -> anyhow::Result<()> {
    let supervisor = crate::daemon::guardian::supervise::Supervisor {
        state_dir: config.daemon.state_dir.clone(),
        history_db: config.daemon.history_db(),
    };
    let first = supervisor.clone();
    let guardian = tokio::task::spawn_blocking(move || first.start())
        .await?
        .context("starting the guardian")?;
    info!(guardian = guardian.pid, "guardian started");
    tokio::spawn(supervisor.supervise(guardian));
    Ok(())
}

/// `chaosd --cleanup`: only what a start does about a previous instance's leftovers; prints
/// what it reverted. systemd runs it as ExecStopPost=, after a crash as after a clean stop;
/// a guardian at work is waited for, and what it reverted is not reverted again.
pub fn cleanup(config: &Config) -> anyhow::Result<()> {
    let (_, _, cleaned) = leftovers::clean_as(
        &config.daemon.state_dir,
        crate::engine::handoff::EndedBy::Cleanup,
    )?;
    crate::daemon::guardian::record_history(&config.daemon.history_db(), &cleaned.faults);
    print!("{cleaned}");
    Ok(())
}

/// The API socket: the one systemd passed (socket activation), else bound at the configured
/// path. A bound socket comes with the guard that removes its file; a passed one is systemd's.
fn listen(
    config: &Config,
    passed: Option<std::os::unix::net::UnixListener>,
) -> anyhow::Result<(UnixListener, http::Access, Option<http::SocketFile>)> {
    let Some(passed) = passed else {
        let (listener, access) = http::bind(&config.daemon.socket, &config.daemon.group)?;
        let file = http::SocketFile(config.daemon.socket.clone());
        return Ok((listener, access, Some(file)));
    };
    info!("serving on the socket systemd passed (socket activation); daemon.socket is not bound");
    let listener =
        UnixListener::from_std(passed).context("registering the systemd socket with tokio")?;
    Ok((
        listener,
        http::Access::for_group(&config.daemon.group),
        None,
    ))
}

/// Polls the aya-log ring and forwards records to `log` (bridged into tracing).
async fn forward_kernel_logs(logger: KernelLogger) {
    // SAFETY: the logger owns its ring buffer's fd, which stays open and unchanged while the
    // AsyncFd owns the logger.
    let Ok(mut fd) = (unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) })
    else {
        warn!("cannot poll kernel-side logs");
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop chaosd with its API");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: reverting every fault"),
        _ = int.recv() => info!("SIGINT: reverting every fault"),
    }
}

/// Reads the config file: the given one must exist; the default one may be absent.
pub fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let (path, required) = match path {
        Some(p) => (p, true),
        None => (PathBuf::from(crate::host::directories::CONFIG), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Config::from_toml(&text).with_context(|| format!("in {}", path.display())),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
