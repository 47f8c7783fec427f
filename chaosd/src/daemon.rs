//! The daemon's life: load the programs, clean up after a crashed predecessor, serve, and
//! revert every fault on the way out.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use tokio::io::{Interest, unix::AsyncFd};
use tracing::{info, warn};

use crate::{
    api::FaultState,
    cgroup,
    config::Config,
    fault::FaultKinds,
    journal::Journal,
    kernel::{Kernel, KernelLogger},
    registry::Registry,
    server,
};

pub async fn run(config: Config) -> anyhow::Result<()> {
    let mount = cgroup::cgroup2_mount()?;
    let journal = Journal::open(&config.daemon.state_dir).with_context(|| {
        format!(
            "opening the state dir {}",
            config.daemon.state_dir.display()
        )
    })?;
    clean_leftovers(&journal);

    let (kernel, logger) = tokio::task::spawn_blocking(Kernel::load).await??;
    if let Some(logger) = logger {
        tokio::spawn(forward_kernel_logs(logger));
    }
    let kinds = FaultKinds {
        kernel: Arc::new(std::sync::Mutex::new(kernel)),
        stress: config.stress.clone(),
    };
    let registry = Registry::new(kinds, journal, config.faults.clone(), mount);

    let (listener, access) = server::bind(&config.daemon.socket, &config.daemon.group)?;
    let _socket = server::SocketFile(config.daemon.socket.clone());
    info!(pid = std::process::id(), "chaosd ready");
    let served = server::serve(listener, access, Arc::clone(&registry), shutdown_signal()).await;
    let reverted = registry.recover_all(FaultState::Stopped).await;
    info!(
        reverted = reverted.len(),
        "chaosd stopped; every fault reverted"
    );
    served
}

/// Faults journaled by an instance that died. Their eBPF rules died with its links; the
/// entries are reported and removed.
fn clean_leftovers(journal: &Journal) {
    for f in journal.leftovers() {
        let cgroups: Vec<&str> = f.targets.iter().map(|t| t.cgroup.as_str()).collect();
        warn!(fault_id = %f.id, kind = f.kind, ?cgroups, "a previous chaosd left this fault; its kernel state ended with that process");
        // A frozen cgroup does not thaw when its freezer dies: thaw it here.
        crate::process::pause::thaw_leftover(&f);
        journal.remove(&f.id);
    }
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
        None => (PathBuf::from(crate::directories::CONFIG), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Config::from_toml(&text).with_context(|| format!("in {}", path.display())),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
