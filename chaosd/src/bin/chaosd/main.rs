//! `chaosd`: the fault daemon. Runs as root in the foreground (systemd's Type=simple).

use std::{io::IsTerminal as _, path::PathBuf};

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Per-cgroup fault injection daemon (eBPF). Serves the chaosctl API on a Unix socket.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Config file [default: /etc/chaosd/chaosd.toml, if present]
    #[arg(long)]
    config: Option<PathBuf>,
    /// API socket path (overrides the config) [default: /run/chaosd/chaosd.sock]
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Where the journal of active faults lives (overrides the config) [default: /run/chaosd]
    #[arg(long)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(clap::Subcommand)]
enum Mode {
    /// Internal: a stress worker that the daemon starts and supervises.
    #[command(name = "__stress-worker", hide = true)]
    StressWorker(chaosd::stress::worker::WorkerArgs),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Workers are single-threaded and run no async runtime.
    if let Some(Mode::StressWorker(w)) = args.mode {
        std::process::exit(chaosd::stress::worker::run(w));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(daemon(args))
}

async fn daemon(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CHAOSD_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut config = chaosd::daemon::load_config(args.config)?;
    if let Some(s) = args.socket {
        config.daemon.socket = s;
    }
    if let Some(d) = args.state_dir {
        config.daemon.state_dir = d;
    }
    if let Err(e) = chaosd::daemon::run(config).await {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
    Ok(())
}
