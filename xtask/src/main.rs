//! Project tasks: `cargo xtask setup | demo | test | vm-test | bench`.
//!
//! xtask depends on nothing of chaosd's, so it builds on a fresh machine before the eBPF
//! toolchain exists; `setup` then installs that toolchain.

mod bench;
mod setup;
mod util;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "chaosd project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building chaosd needs (nightly rust-src, bpf-linker); idempotent.
    Setup,
    /// Set up, build, start chaosd and show per-cgroup packet loss working on this host.
    Demo,
    /// Set up, build and run every test: unit, host integration, then the distro-kernel VMs.
    Test {
        /// Skip the distro-kernel VM suite (host tests only).
        #[arg(long)]
        host_only: bool,
    },
    /// Run the integration tests inside Debian distro kernels under qemu.
    VmTest(vm::VmTestArgs),
    /// Measure datapath overhead, control latency and accuracy on this host (root); writes
    /// JSON and prints a table.
    Bench(bench::BenchArgs),
    /// Internal: the bench's UDP sender, run inside a target cgroup.
    #[command(name = "__bench-udp-send", hide = true)]
    BenchUdpSend(bench::probe::SenderArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Demo => {
            setup::run()?;
            util::cargo(&["build", "--package", "chaosd", "--bins"])?;
            util::run_demo()
        }
        Command::Test { host_only } => {
            setup::run()?;
            util::host_tests()?;
            if host_only {
                return Ok(());
            }
            vm::run(&vm::VmTestArgs::default())
        }
        Command::Bench(args) => {
            setup::run()?;
            bench::run(&args)
        }
        Command::BenchUdpSend(args) => bench::probe::run_sender(&args),
        Command::VmTest(args) => {
            setup::run()?;
            vm::run(&args)
        }
    }
}
