//! Project tasks: `cargo xtask setup | demo | test | fuzz | vm-test | kernels-doc | bench |
//! install | deb`.
//!
//! xtask depends on nothing of chaosd's, so it builds on a fresh machine before the eBPF
//! toolchain exists; `setup` then installs that toolchain.

mod bench;
mod fuzz;
mod package;
mod setup;
mod test_tools;
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
    /// Set up, build and run every test: unit, host integration, then the distro-kernel VMs,
    /// with fuzzing (20 s per target) beside them at idle priority.
    Test {
        /// Skip the distro-kernel VM suite (host tests only).
        #[arg(long)]
        host_only: bool,
    },
    /// Build (release) and install chaosd, chaosctl, the systemd units, completions, man pages
    /// and a default /etc/chaosd/chaosd.toml (kept if present); starts and enables nothing.
    Install(package::InstallArgs),
    /// Build the .deb (needs cargo-deb: `cargo install cargo-deb --locked`).
    Deb,
    /// Run each cargo-fuzz target (API request decoder, scenario parser) for a bounded time.
    Fuzz(fuzz::FuzzArgs),
    /// Run the integration tests inside Debian distro kernels under qemu.
    VmTest(vm::VmTestArgs),
    /// Copy the kind × kernel table of the last full `vm-test` run (target/vm/kernels.md) to
    /// docs/kernels.md, or with --check fail when docs/kernels.md differs from it.
    KernelsDoc(vm::kernels_doc::KernelsDocArgs),
    /// Measure datapath overhead, control latency and accuracy on this host and in Debian 6.12
    /// under qemu (root); writes JSON and prints a table.
    Bench(bench::BenchArgs),
    /// Internal: the bench's UDP sender, run inside a target cgroup.
    #[command(name = "__bench-udp-send", hide = true)]
    BenchUdpSend(bench::probe::SenderArgs),
    /// Internal: the bench's bulk TCP sender (net.bandwidth), run inside a target cgroup.
    #[command(name = "__bench-tcp-send", hide = true)]
    BenchTcpSend(bench::shaping::TcpSendArgs),
    /// Internal: the bench's file reader (io.errno), run inside a target cgroup.
    #[command(name = "__bench-file-reads", hide = true)]
    BenchFileReads(bench::syscall_probe::FileReadsArgs),
    /// Internal: the bench's clock reader (clock.skew), run inside a target cgroup.
    #[command(name = "__bench-clock-probe", hide = true)]
    BenchClockProbe(bench::syscall_probe::ClockProbeArgs),
    /// Internal: the bench's DNS client (dns.* resolver latency), run inside a target cgroup.
    #[command(name = "__bench-dns-queries", hide = true)]
    BenchDnsQueries(bench::dns::DnsQueriesArgs),
    /// Internal: the bench's TCP client (the tcp.* proxy figures), run inside a target cgroup.
    #[command(name = "__bench-tcp-client", hide = true)]
    BenchTcpClient(bench::proxy::TcpClientArgs),
    /// Internal: the bench's VM part, run by stage 2 inside the distro kernel.
    #[command(name = "__bench-vm-part", hide = true)]
    BenchVmPart(bench::vm_part::VmPartArgs),
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
            // Each stage prints `stage: <name> <seconds>` (and appends it to
            // $CHAOSD_STAGE_TIMES) for .ci/run's timing table.
            util::stage("setup", setup::run)?;
            util::stage("test-tools", test_tools::ensure)?;
            // Beside everything else, on the CPU time the other stages leave.
            let fuzz = fuzz::Background::spawn(20)?;
            util::host_tests()?;
            if !host_only {
                vm::run(&vm::VmTestArgs::default())?;
            }
            let waited = std::time::Instant::now();
            let (elapsed, result) = fuzz.wait();
            // Its wall time overlaps the stages above; fuzz-wait is what it adds after them.
            util::record_stage("fuzz", elapsed, result.is_ok());
            util::record_stage("fuzz-wait", waited.elapsed(), result.is_ok());
            result
        }
        Command::KernelsDoc(args) => vm::kernels_doc::run(&args),
        Command::Bench(args) => {
            setup::run()?;
            bench::run(&args)
        }
        Command::BenchUdpSend(args) => bench::probe::run_sender(&args),
        Command::Install(args) => {
            setup::run()?;
            package::run_install(&args)
        }
        Command::Deb => {
            setup::run()?;
            package::run_deb()
        }
        Command::BenchTcpSend(args) => bench::shaping::run_tcp_sender(&args),
        Command::BenchFileReads(args) => bench::syscall_probe::file_reads(&args),
        Command::BenchClockProbe(args) => bench::syscall_probe::clock_probe(&args),
        Command::BenchDnsQueries(args) => bench::dns::queries(&args),
        Command::BenchTcpClient(args) => bench::proxy::client(&args),
        Command::BenchVmPart(args) => bench::vm_part::guest_main(&args),
        Command::Fuzz(args) => {
            setup::run()?;
            fuzz::run(&args)
        }
        Command::VmTest(args) => {
            setup::run()?;
            vm::run(&args)
        }
    }
}
