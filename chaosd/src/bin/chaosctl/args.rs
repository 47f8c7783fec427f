//! chaosctl's command line: all clap types in one place; doc comments are the help.

use std::{net::SocketAddr, path::PathBuf};

use std::time::Duration;

use chaosd::api::Choice;
use chaosd::api::{
    ByteCount, Cidr, Direction, Errno, LinkRate, NetFilter, PortRange, Proto, TargetSelector,
    Written,
};
use clap::{
    Args, Parser, Subcommand,
    builder::{PossibleValuesParser, TypedValueParser},
};

/// A parser for one of the API's wire enums: clap offers its wire names.
/// A direction's wire name, for output.
pub fn stream_name(s: chaosd::api::Stream) -> &'static str {
    chaosd::api::Choice::name(s)
}

pub fn choice<T: Choice + Send + Sync>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::ALL.iter().map(|v| v.name()))
        .try_map(|name| T::named(&name).ok_or("not one of the possible values"))
}

/// Drive chaosd: inject faults into cgroups, watch them, and recover.
#[derive(Parser)]
#[command(name = "chaosctl", version, propagate_version = true)]
pub struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, env = "CHAOSD_SOCKET", default_value = chaosd::host::directories::SOCKET)]
    pub socket: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Inject a fault (it reverts itself after --duration).
    Inject {
        // Boxed: the fault arguments dwarf every other command's.
        #[command(subcommand)]
        kind: Box<InjectKind>,
    },
    /// List active faults.
    List {
        /// Also list faults that ended recently.
        #[arg(long)]
        all: bool,
    },
    /// Show one fault, with its counters.
    Show { id: String },
    /// Revert a fault now, or every fault with --all.
    Recover {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Show the daemon's status.
    Status,
    /// Show who changed what (inject, recover, runs) and how it ended, newest first.
    History {
        /// How many records to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show which fault kinds this host supports, and for the others why not and the fix.
    Doctor,
    /// Check a scenario file (syntax, fields, fault parameters, blast radius) without the daemon.
    Validate { file: PathBuf },
    /// Run a scenario file in the daemon and follow it; Ctrl-C aborts and rolls back.
    Run {
        file: PathBuf,
        /// Print the run's id and leave; the daemon runs it to the end.
        #[arg(long)]
        detach: bool,
    },
    /// List scenario runs, running and finished.
    Runs,
    /// Show the report of a finished run, or write it as one HTML page (--html).
    Report {
        id: String,
        #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
        format: ReportFormat,
        /// Write a self-contained HTML page with an SVG timeline (fault windows, probes,
        /// abort and recovery) to chaosd-report-ID.html, or to --output.
        #[arg(long)]
        html: bool,
        #[arg(long, short, requires = "html")]
        output: Option<PathBuf>,
    },
    /// Start scenarios or single faults on a cron schedule (kept by the daemon across restarts).
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Print a shell completion script, e.g. `source <(chaosctl completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Internal: write the man pages (chaosctl.1, chaosctl-SUBCOMMAND.1) into a directory.
    #[command(name = "__man", hide = true)]
    Man {
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Show packet loss working: inject 30 % loss into a demo cgroup and measure it against a sibling.
    Demo,
    /// Internal: send numbered UDP datagrams (`chaosctl demo` runs this inside its cgroups).
    #[command(name = "__udp-send", hide = true)]
    UdpSend {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        count: u32,
        #[arg(long, default_value_t = 0)]
        tag: u8,
    },
}

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule: FILE is a scenario (TOML) or one fault as `POST /v1/faults` takes it (.json).
    Add {
        /// When, in UTC: five fields (`0 2 * * *`: 02:00 daily) or six with seconds first.
        #[arg(long)]
        cron: String,
        file: PathBuf,
    },
    /// List schedules with their next due time and last outcome.
    List,
    /// Show one schedule and what became of each due time (started, missed, refused).
    Show { id: String },
    /// Stop firing until resumed (due times meanwhile are skipped, not missed).
    Pause { id: String },
    /// Fire again from the next due time on.
    Resume { id: String },
    /// Delete a schedule and its record of fires (runs it started keep their reports).
    Remove { id: String },
}

/// How `chaosctl report` prints a report.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Md,
    Json,
}

#[derive(Subcommand)]
pub enum InjectKind {
    /// CPU and memory stress.
    Stress {
        #[command(subcommand)]
        fault: crate::stress::StressFault,
    },
    /// Disk fill and disk I/O load.
    Disk {
        #[command(subcommand)]
        fault: crate::stress::DiskFault,
    },
    /// Cap a cgroup's CPU time.
    Cpu {
        #[command(subcommand)]
        fault: crate::resource::CpuFault,
    },
    /// Put a cgroup under memory pressure.
    Mem {
        #[command(subcommand)]
        fault: crate::resource::MemFault,
    },
    /// Cap the open files of processes.
    Fd {
        #[command(subcommand)]
        fault: crate::resource::FdFault,
    },
    /// Kill, pause or cap the processes of a cgroup.
    Process {
        #[command(subcommand)]
        fault: crate::stress::ProcessFault,
    },
    /// Network faults.
    Net {
        #[command(subcommand)]
        fault: NetFault,
    },
    /// File I/O errors (BPF LSM) and disk throttles (io.max).
    Io {
        #[command(subcommand)]
        fault: crate::io::IoFault,
    },
    /// Clock faults (x86_64).
    Clock {
        #[command(subcommand)]
        fault: crate::clock::ClockFault,
    },
    /// TCP connection faults through chaosd's transparent proxy (no client change).
    Tcp {
        #[command(subcommand)]
        fault: crate::tcp::TcpFault,
    },
    /// HTTP/1.1 faults on plaintext requests through the transparent proxy (no client
    /// change); TLS passes through with only the TCP toxics.
    Http {
        #[command(subcommand)]
        fault: crate::http::HttpFault,
    },
    /// DNS faults through chaosd's resolver, per name (no file on the host changed).
    Dns {
        #[command(subcommand)]
        fault: crate::dns::DnsFault,
    },
}

#[derive(Subcommand)]
pub enum NetFault {
    /// Drop a share of the target cgroups' packets.
    Loss {
        /// Share of packets to drop, above 0 and at most 100.
        #[arg(long)]
        percent: f64,
        /// Which packets: sent by the target, delivered to it, or both.
        #[arg(long, value_parser = choice::<Direction>(), default_value = "egress")]
        direction: Direction,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Cut the target off from a peer prefix: drop every packet to and from it.
    Partition {
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Hold back what the target sends by a delay (± jitter); needs sch_fq.
    Delay {
        /// Added to every matching packet, e.g. 100ms.
        #[arg(long)]
        delay: Written<Duration>,
        /// Uniform spread around the delay, at most the delay; flows keep their order.
        #[arg(long)]
        jitter: Option<Written<Duration>>,
        #[command(flatten)]
        netns: NetnsArg,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Pace what the target sends to a rate (egress only); needs sch_fq. For what the target
    /// receives (a download cap), use `tcp bandwidth --direction downstream`.
    Bandwidth {
        /// tc-style rate: 1mbit, 500kbit (bits/s) or 10mbps (bytes/s).
        #[arg(long)]
        rate: Written<LinkRate>,
        /// Bytes that may leave back to back after an idle spell, e.g. 32KiB.
        #[arg(long)]
        burst: Option<Written<ByteCount>>,
        #[command(flatten)]
        netns: NetnsArg,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Corrupt a share of what the target sends: the receiver drops it, or with --payload it
    /// arrives with altered bytes (checksum fixed up).
    Corrupt {
        /// Share of packets to corrupt, above 0 and at most 100.
        #[arg(long)]
        percent: f64,
        /// Flip payload bits instead of damaging the header: silent corruption.
        #[arg(long)]
        payload: bool,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Send a share of what the target sends twice.
    Duplicate {
        /// Share of packets to duplicate, above 0 and at most 100.
        #[arg(long)]
        percent: f64,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Make connect() (and unconnected UDP sendmsg) from the target fail with an errno.
    ConnectError {
        /// errno name or number, e.g. ECONNREFUSED, ETIMEDOUT, 113.
        #[arg(long, default_value = "ECONNREFUSED")]
        errno: Written<Errno>,
        /// Share of matching connects that fail.
        #[arg(long, default_value_t = 100.0)]
        percent: f64,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        common: Common,
    },
}

/// Where delay and bandwidth put sch_fq.
#[derive(Args)]
pub struct NetnsArg {
    /// The network namespace to act in: a path (/run/netns/NAME, /proc/PID/ns/net) or a pid.
    /// Default: the target's processes' namespace, or chaosd's own while the target has no
    /// process (so the fault can go in before its client starts).
    #[arg(long, value_name = "PATH|PID")]
    pub netns: Option<String>,
}

/// Which traffic a network fault applies to; all optional.
#[derive(Args)]
pub struct FilterArgs {
    /// Peer prefix (the remote end), IPv4 or IPv6 CIDR or address. Required for partition.
    #[arg(long)]
    pub dst: Option<Written<Cidr>>,
    /// Local prefix (the target's own address).
    #[arg(long)]
    pub src: Option<Written<Cidr>>,
    /// Peer port or range, e.g. 5432 or 8000-8080.
    #[arg(long)]
    pub port: Option<Written<PortRange>>,
    #[arg(long, value_parser = choice::<Proto>(), default_value = "any")]
    pub proto: Proto,
}

impl FilterArgs {
    pub fn to_filter(&self) -> NetFilter {
        NetFilter {
            dst: self.dst.clone(),
            src: self.src.clone(),
            port: self.port.clone(),
            proto: self.proto,
        }
    }
}

/// Targets and duration, common to every fault.
#[derive(Args)]
pub struct Common {
    /// Target cgroup: a cgroup2 path, absolute or relative to the cgroup2 mount (repeatable).
    #[arg(long)]
    pub cgroup: Vec<String>,
    /// Target the cgroup of this process (repeatable).
    #[arg(long)]
    pub pid: Vec<u32>,
    /// Target the cgroup of this systemd unit, e.g. nginx.service (repeatable).
    #[arg(long)]
    pub unit: Vec<String>,
    /// Target the cgroup of this container (containerd, CRI-O, Docker): its id or a unique
    /// prefix of 12+ hex digits (repeatable).
    #[arg(long)]
    pub container: Vec<String>,
    /// Target the cgroup of this Kubernetes pod, by metadata.uid (repeatable).
    #[arg(long)]
    pub pod: Vec<String>,
    /// Target the whole host: every cgroup but the protected ones (policy.protected_cgroups,
    /// policy.host_exclude, init's and chaosd's own). Net, tcp, http, dns, clock and stress kinds.
    #[arg(long, conflicts_with_all = ["cgroup", "pid", "unit", "container", "pod"])]
    pub host: bool,
    /// Show the cgroups and processes the fault would act on; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long the fault lasts, e.g. 30s, 5m (required unless the daemon has a default).
    #[arg(long)]
    pub duration: Option<String>,
}

impl Common {
    pub fn targets(&self) -> Vec<TargetSelector> {
        let cgroups = self.cgroup.iter().cloned().map(TargetSelector::Cgroup);
        let pids = self.pid.iter().copied().map(TargetSelector::Pid);
        let units = self.unit.iter().cloned().map(TargetSelector::Unit);
        let containers = self
            .container
            .iter()
            .cloned()
            .map(TargetSelector::Container);
        let pods = self.pod.iter().cloned().map(TargetSelector::Pod);
        let host = self.host.then_some(TargetSelector::Host);
        cgroups
            .chain(pids)
            .chain(units)
            .chain(containers)
            .chain(pods)
            .chain(host)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    /// `net.connect_error` → `inject net connect-error`.
    fn subcommand_path(kind: &str) -> Vec<String> {
        let (family, name) = kind.split_once('.').unwrap_or((kind, ""));
        vec![
            "inject".to_string(),
            family.to_string(),
            name.replace('_', "-"),
        ]
    }

    #[test]
    fn every_fault_kind_has_an_inject_subcommand() {
        let cli = Cli::command();
        for kind in chaosd::faults::kinds::KINDS {
            let path = subcommand_path(kind.name);
            let mut cmd = &cli;
            for part in &path {
                cmd = cmd.find_subcommand(part).unwrap_or_else(|| {
                    panic!(
                        "kind {} has no `chaosctl {}` subcommand",
                        kind.name,
                        path.join(" ")
                    )
                });
            }
        }
    }
}
