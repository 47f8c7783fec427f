//! `chaosd`: the fault daemon. Runs as root in the foreground (systemd's Type=notify, with
//! socket activation and a watchdog where the unit asks for them).

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
    /// Log line format on stderr: text for people, json (one object a line, with the span
    /// fields such as fault_id) for log collectors
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Only revert what a previous chaosd left (journaled faults, frozen cgroups, qdiscs, TC
    /// filters), print it and exit; systemd runs this as ExecStopPost=
    #[arg(long)]
    cleanup: bool,
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Subcommand)]
enum Mode {
    /// Internal: a stress worker that the daemon starts and supervises.
    #[command(name = "__stress-worker", hide = true)]
    StressWorker(chaosd::faults::stress::worker::WorkerArgs),
    /// Internal: the demo HTTP service of scenario files (`[services.NAME] http = ..`).
    #[command(name = "__http-responder", hide = true)]
    HttpResponder {
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// Internal: the guardian the daemon starts (reverts what outlives it; see chaosd::daemon::guardian).
    #[command(name = "__guardian", hide = true)]
    Guardian(chaosd::daemon::guardian::GuardianArgs),
    /// Internal: write chaosd.8 into a directory (`cargo xtask install`, `cargo xtask deb`).
    #[command(name = "__man", hide = true)]
    Man {
        #[arg(long)]
        out_dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Single-threaded, no async runtime; it detaches before anything else runs.
    if let Some(Mode::Guardian(g)) = args.mode {
        chaosd::daemon::guardian::detach()?;
        init_logging(args.log_format);
        std::process::exit(chaosd::daemon::guardian::run(g));
    }
    // Workers are single-threaded and run no async runtime.
    if let Some(Mode::StressWorker(w)) = args.mode {
        std::process::exit(chaosd::faults::stress::worker::run(w));
    }
    if let Some(Mode::HttpResponder { listen }) = args.mode {
        return Ok(chaosd::scenario::service::http_responder(listen)?);
    }
    if let Some(Mode::Man { out_dir }) = args.mode {
        let page = clap_mangen::Man::new(<Args as clap::CommandFactory>::command()).section("8");
        std::fs::create_dir_all(&out_dir)?;
        page.generate_to(&out_dir)?;
        return Ok(());
    }
    // Before any thread: cleanup and the daemon resolve cgroups as PID 1 sees them.
    chaosd::host::cgroup::join_init_cgroup_namespace();
    if args.cleanup {
        init_logging(args.log_format);
        return chaosd::daemon::cleanup(&config(args)?);
    }
    chaosd::host::memory::return_large_blocks_on_free();
    // SAFETY: no other thread exists yet (the runtime starts below).
    let systemd = unsafe { chaosd::daemon::systemd::Activation::take_from_env() }?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(daemon(args, systemd))
}

fn init_logging(format: LogFormat) {
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CHAOSD_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    chaosd::daemon::guardian::supervise::inherit_log_format(match format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    });
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// The config file with the command line's overrides.
fn config(args: Args) -> anyhow::Result<chaosd::config::Config> {
    let mut config = chaosd::daemon::load_config(args.config)?;
    if let Some(s) = args.socket {
        config.daemon.socket = s;
    }
    if let Some(d) = args.state_dir {
        config.daemon.state_dir = d;
    }
    Ok(config)
}

async fn daemon(args: Args, systemd: chaosd::daemon::systemd::Activation) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let config = config(args)?;
    if let Err(e) = chaosd::daemon::run(config, systemd).await {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
    Ok(())
}
