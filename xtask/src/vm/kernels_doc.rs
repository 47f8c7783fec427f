//! docs/kernels.md: which fault kinds' tests ran, passed, failed or were skipped (and why) in
//! each distro kernel, generated from a full `vm-test` run.
//!
//! `vm-test` writes [`GENERATED`] (`target/vm/kernels.md`) after a run of every kernel and every
//! default test binary without a filter; `cargo xtask kernels-doc` copies it to
//! docs/kernels.md, `--check` fails when the two differ. The `Run on:` line (exact guest
//! releases, host kernel) is left out of the comparison, so a Debian ABI bump alone does not
//! make the doc stale; a changed result (a test added, a new skip reason, a failure) does.
//!
//! Tests map to kinds by test binary and test-name prefix ([`KINDS`]); a binary not listed gets a
//! row of its own.

use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path};

use anyhow::{Context, Result, bail};

use super::report::{KernelRun, TestOutcome};
use crate::util::workspace_root;

/// Where `vm-test` writes the table, relative to `target/vm`.
pub const GENERATED: &str = "kernels.md";
/// The committed copy, relative to the workspace root.
const COMMITTED: &str = "docs/kernels.md";
/// Lines starting with this name the exact releases and are not compared by `--check`.
const RUN_ON: &str = "Run on:";

/// `(test binary, test-name prefix, row)`: the first entry whose binary matches and whose prefix
/// starts the test's name (its last `::` part) gives the row; `""` matches every test. Rows
/// appear in this order.
const KINDS: &[(&str, &str, &str)] = &[
    ("net_loss", "", "net.loss"),
    ("net_filters", "loss_", "net.loss"),
    ("net_filters", "partition_", "net.partition"),
    ("net_filters", "connect_error_", "net.connect_error"),
    ("net_filters", "", "net (filters, stacking)"),
    ("net_delay", "bandwidth_", "net.bandwidth"),
    ("net_delay", "", "net.delay"),
    ("net_departure", "bandwidth_", "net.bandwidth"),
    ("net_departure", "rules_", "dead-man switch, rule deadlines"),
    ("net_departure", "", "net.delay"),
    ("net_tc", "corrupt_", "net.corrupt"),
    ("net_tc", "duplicate_", "net.duplicate"),
    ("net_tc", "", "net (tc)"),
    ("net_tc_netlink", "", "net (tc)"),
    ("io", "", "io.errno"),
    ("clock", "", "clock.skew"),
    ("process", "kill_", "process.kill"),
    ("process", "pause_", "process.pause"),
    ("process", "a_restarted_daemon_thaws", "process.pause"),
    ("process", "", "process (requests)"),
    ("stress", "cpu_", "stress.cpu"),
    ("stress", "mem_", "stress.mem"),
    ("stress", "disk_fill_", "disk.fill"),
    ("stress", "disk_io_", "disk.io"),
    ("stress", "", "stress (any)"),
    ("resource", "cpu_limit_", "cpu.limit"),
    ("resource", "mem_pressure_", "mem.pressure"),
    ("resource", "process_limit_", "process.limit"),
    ("resource", "io_throttle_", "io.throttle"),
    ("resource", "", "resource (knobs, requests)"),
    ("tcp_proxy", "", "tcp.* (transparent proxy)"),
    ("http_faults", "", "http.* (transparent proxy, HTTP/1.1)"),
    ("dns", "", "dns.* (resolver)"),
    ("targets", "containers_", "--container, --pod"),
    ("targets", "", "--host, --dry-run"),
    ("guardian", "", "guardian (kill -9, SIGSTOP)"),
    ("crash", "", "every kind at once (crash)"),
    ("doctor", "", "doctor (capabilities)"),
    ("hardening", "", "cleanup, history, policy"),
];

/// The row of one test of one binary.
fn row_of(binary: &str, test: &str) -> String {
    let short = test.rsplit("::").next().unwrap_or(test);
    KINDS
        .iter()
        .find(|(b, prefix, _)| *b == binary && short.starts_with(prefix))
        .map_or_else(|| binary.to_owned(), |(_, _, row)| (*row).to_owned())
}

/// Rows in [`KINDS`] order, then unlisted binaries alphabetically.
fn row_rank(row: &str) -> (usize, String) {
    let rank = KINDS
        .iter()
        .position(|(_, _, r)| *r == row)
        .unwrap_or(KINDS.len());
    (rank, row.to_owned())
}

/// Writes the table of `runs` to `path`.
pub fn write(path: &Path, runs: &[KernelRun]) -> Result<()> {
    let host = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    fs::write(path, render(runs, host.trim()))
        .with_context(|| format!("writing {}", path.display()))
}

/// Row (rank, name) → test label → its outcome in each kernel.
type Rows<'a> = BTreeMap<(usize, String), BTreeMap<String, Vec<Option<&'a TestOutcome>>>>;

fn render(runs: &[KernelRun], host: &str) -> String {
    let mut rows: Rows<'_> = BTreeMap::new();
    for (k, run) in runs.iter().enumerate() {
        for b in &run.binaries {
            for (test, outcome) in &b.tests {
                let cells = rows
                    .entry(row_rank(&row_of(&b.name, test)))
                    .or_default()
                    .entry(format!("{}: {test}", b.name))
                    .or_insert_with(|| vec![None; runs.len()]);
                cells[k] = Some(outcome);
            }
        }
    }
    let mut reasons = Reasons::default();
    let mut out = String::new();
    out.push_str(
        "# Fault kinds × kernels\n\n\
         Generated by `cargo xtask vm-test` after a full run (every kernel, every test binary the \
         VMs run, no filter)\nand copied here by `cargo xtask kernels-doc`; \
         `cargo xtask kernels-doc --check` fails when this file no\nlonger matches the last run. \
         Do not edit by hand: the mapping of tests to kinds is `KINDS` in\n\
         `xtask/src/vm/kernels_doc.rs`. Tests of chaosd's own userspace (API, scenarios, \
         metrics, systemd,\nload) run on the host only and are not listed; the host kernel's \
         results are `cargo xtask test --host-only`'s.\n\n",
    );
    let _ = writeln!(
        out,
        "{RUN_ON} {}; host {}, qemu TCG.\n",
        runs.iter()
            .map(|r| r.kernel.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if host.is_empty() { "unknown" } else { host }
    );
    out.push_str("| kind |");
    for run in runs {
        let _ = write!(out, " {} |", run.series);
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(runs.len()));
    out.push('\n');
    for ((_, row), tests) in &rows {
        let _ = write!(out, "| {row} |");
        for k in 0..runs.len() {
            let cell = summary_cell(tests.values().filter_map(|c| c[k]), &mut reasons);
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out.push_str(
        "\nA cell counts the kind's tests by outcome; `-` means none ran in that kernel. \
         `[n]` is a skip reason:\n\n",
    );
    let mut detail = String::from("| kind | test |");
    for run in runs {
        let _ = write!(detail, " {} |", run.series);
    }
    detail.push_str("\n|---|---|");
    detail.push_str(&"---|".repeat(runs.len()));
    detail.push('\n');
    for ((_, row), tests) in &rows {
        for (label, cells) in tests {
            let _ = write!(detail, "| {row} | {label} |");
            for cell in cells {
                let text = match cell {
                    None => "-".to_owned(),
                    Some(TestOutcome::Skip(reason)) => format!("skip [{}]", reasons.id(reason)),
                    Some(o) => o.to_string(),
                };
                let _ = write!(detail, " {text} |");
            }
            detail.push('\n');
        }
    }
    for (i, reason) in reasons.0.iter().enumerate() {
        let reason = if reason.is_empty() {
            "(no reason given)"
        } else {
            reason
        };
        let _ = writeln!(
            out,
            "{}. {}",
            i + 1,
            short_reason(reason).replace('|', "\\|")
        );
    }
    out.push_str("\n## Each test\n\n");
    out.push_str(&detail);
    out
}

/// A reason cut to [`REASON_CHARS`] characters: some carry a whole verifier log.
fn short_reason(reason: &str) -> String {
    if reason.chars().count() <= REASON_CHARS {
        return reason.to_owned();
    }
    let cut: String = reason.chars().take(REASON_CHARS).collect();
    format!("{cut}…")
}

const REASON_CHARS: usize = 200;

/// Skip reasons, numbered in order of first use.
#[derive(Default)]
struct Reasons(Vec<String>);

impl Reasons {
    fn id(&mut self, reason: &str) -> usize {
        if let Some(i) = self.0.iter().position(|r| r == reason) {
            return i + 1;
        }
        self.0.push(reason.to_owned());
        self.0.len()
    }
}

/// `pass 3, skip 1 [2]`, `FAIL 1, pass 2`, or `-`.
fn summary_cell<'a>(
    outcomes: impl Iterator<Item = &'a TestOutcome>,
    reasons: &mut Reasons,
) -> String {
    let (mut pass, mut fail, mut ignored) = (0, 0, 0);
    let mut skips: BTreeMap<usize, usize> = BTreeMap::new();
    for o in outcomes {
        match o {
            TestOutcome::Pass => pass += 1,
            TestOutcome::Fail | TestOutcome::NoResult => fail += 1,
            TestOutcome::Ignored => ignored += 1,
            TestOutcome::Skip(reason) => *skips.entry(reasons.id(reason)).or_default() += 1,
        }
    }
    let mut parts = Vec::new();
    if fail > 0 {
        parts.push(format!("**FAIL {fail}**"));
    }
    if pass > 0 {
        parts.push(format!("pass {pass}"));
    }
    for (id, n) in skips {
        parts.push(format!("skip {n} [{id}]"));
    }
    if ignored > 0 {
        parts.push(format!("ignored {ignored}"));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

#[derive(clap::Args, Debug)]
pub struct KernelsDocArgs {
    /// Compare instead of copying: fail when docs/kernels.md differs from the last full run's
    /// table (apart from its `Run on:` line).
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: &KernelsDocArgs) -> Result<()> {
    let root = workspace_root();
    let generated = root.join("target/vm").join(GENERATED);
    let committed = root.join(COMMITTED);
    let fresh = fs::read_to_string(&generated).with_context(|| {
        format!(
            "reading {} (written by a full `cargo xtask vm-test`: every kernel, no --test or \
             --filter)",
            generated.display()
        )
    })?;
    if !args.check {
        fs::write(&committed, &fresh)
            .with_context(|| format!("writing {}", committed.display()))?;
        println!("kernels-doc: {} updated", committed.display());
        return Ok(());
    }
    let old = fs::read_to_string(&committed).unwrap_or_default();
    if comparable(&old) != comparable(&fresh) {
        bail!(
            "{} is stale: it differs from the last full VM run's {}; run `cargo xtask \
             kernels-doc` and commit it",
            committed.display(),
            generated.display()
        );
    }
    println!(
        "kernels-doc: {} matches the last full VM run",
        committed.display()
    );
    Ok(())
}

/// The doc without its `Run on:` line.
fn comparable(doc: &str) -> Vec<&str> {
    doc.lines().filter(|l| !l.starts_with(RUN_ON)).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::vm::{
        qemu::{BootResult, Outcome},
        report::BinaryResult,
    };

    fn run(series: &str, tests: &[(&str, &str, TestOutcome)]) -> KernelRun {
        let mut binaries: Vec<BinaryResult> = Vec::new();
        for (bin, test, outcome) in tests {
            let pos = binaries.iter().position(|b| b.name == *bin);
            let b = match pos {
                Some(i) => &mut binaries[i],
                None => {
                    binaries.push(BinaryResult {
                        name: (*bin).to_owned(),
                        exit: Some(0),
                        tests: Vec::new(),
                    });
                    binaries.last_mut().unwrap()
                }
            };
            b.tests.push(((*test).to_owned(), outcome.clone()));
        }
        KernelRun {
            series: series.to_owned(),
            kernel: format!("{series}.0-1-amd64"),
            boots: 1,
            boot: BootResult {
                outcome: Outcome::Success,
                elapsed: Duration::from_secs(1),
            },
            binaries,
        }
    }

    #[test]
    fn kinds_rows_cells_and_reasons() {
        assert_eq!(
            row_of("net_filters", "partition_cuts_both"),
            "net.partition"
        );
        assert_eq!(
            row_of("net_filters", "faults_on_one_cgroup_stack"),
            "net (filters, stacking)"
        );
        assert_eq!(row_of("net_loss", "a::loss_stops"), "net.loss");
        assert_eq!(row_of("newbin", "x"), "newbin");
        let lsm = TestOutcome::Skip("no BPF LSM".into());
        let runs = [
            run(
                "6.12",
                &[
                    ("net_loss", "loss_a", TestOutcome::Pass),
                    ("io", "io_errno_a", TestOutcome::Pass),
                ],
            ),
            run(
                "5.10",
                &[
                    ("net_loss", "loss_a", TestOutcome::Fail),
                    ("io", "io_errno_a", lsm.clone()),
                ],
            ),
        ];
        let doc = render(&runs, "6.18.0");
        assert!(doc.contains("| kind | 6.12 | 5.10 |"), "{doc}");
        assert!(doc.contains("| net.loss | pass 1 | **FAIL 1** |"), "{doc}");
        assert!(doc.contains("| io.errno | pass 1 | skip 1 [1] |"), "{doc}");
        assert!(doc.contains("1. no BPF LSM"), "{doc}");
        assert!(
            doc.contains("| io.errno | io: io_errno_a | pass | skip [1] |"),
            "{doc}"
        );
        // net.loss comes before io.errno (KINDS order).
        assert!(doc.find("| net.loss |") < doc.find("| io.errno |"));
        assert_eq!(
            short_reason(&"x".repeat(300)).chars().count(),
            REASON_CHARS + 1
        );
        let other_host = render(&runs, "6.19.0");
        assert_ne!(doc, other_host);
        assert_eq!(comparable(&doc), comparable(&other_host));
    }
}
