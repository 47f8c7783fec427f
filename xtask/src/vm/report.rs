//! Results of the VM boots: libtest lines parsed from each binary's `output` file, skips from its
//! `skips` file (`SKIP\t<test name>\t<reason>` lines the tests append), and the final table.

use std::{collections::BTreeMap, fmt, fs, path::Path};

use anyhow::{Context, Result, bail};

use super::{
    TestBinary,
    qemu::{BootResult, Outcome},
};

/// A test's result in one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    Pass,
    Fail,
    Skip(String),
    Ignored,
    /// Started but never finished (the binary died or the boot ended).
    NoResult,
}

impl fmt::Display for TestOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pass => write!(f, "pass"),
            Self::Fail => write!(f, "FAIL"),
            Self::Skip(reason) => write!(f, "skip ({reason})"),
            Self::Ignored => write!(f, "ignored"),
            Self::NoResult => write!(f, "FAIL (no result)"),
        }
    }
}

/// One test binary's results in one boot.
#[derive(Debug, Clone)]
pub struct BinaryResult {
    pub name: String,
    /// Exit code from `<work>/<binary>/exit`; `None` if it never finished.
    pub exit: Option<i32>,
    pub tests: Vec<(String, TestOutcome)>,
}

/// One kernel's boot and results.
#[derive(Debug)]
pub struct KernelRun {
    /// `6.12`, `6.1`, `5.10`.
    pub series: String,
    /// The release, `uname -r`.
    pub kernel: String,
    /// How many boots ran its binaries (`--parts`); `boot` sums their times.
    pub boots: usize,
    pub boot: BootResult,
    pub binaries: Vec<BinaryResult>,
}

impl KernelRun {
    /// One kernel's boots as one run: binaries in `order`'s order, boot times summed, the first
    /// outcome that is not a success (a part that failed fails the kernel).
    pub fn merge(parts: Vec<KernelRun>, order: &[TestBinary]) -> KernelRun {
        let mut parts = parts.into_iter();
        let mut run = parts.next().expect("every kernel has at least one boot");
        for part in parts {
            run.boots += part.boots;
            run.boot.elapsed += part.boot.elapsed;
            if run.boot.outcome == Outcome::Success {
                run.boot.outcome = part.boot.outcome;
            }
            run.binaries.extend(part.binaries);
        }
        let position = |name: &str| order.iter().position(|b| b.name == name);
        run.binaries.sort_by_key(|b| position(&b.name));
        run
    }
}

/// Reads `<work>/<name>/{output,exit,skips}`; missing files mean the binary never ran.
pub fn read_binary(work: &Path, name: &str) -> Result<BinaryResult> {
    let dir = work.join(name);
    let output = fs::read_to_string(dir.join("output")).unwrap_or_default();
    let exit = fs::read_to_string(dir.join("exit"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let skips = match fs::read_to_string(dir.join("skips")) {
        Ok(text) => parse_skips(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}/skips", dir.display())),
    };
    let tests = parse_libtest(&output)
        .into_iter()
        .map(|(test, outcome)| match (outcome, skips.get(&test)) {
            (TestOutcome::Pass, Some(reason)) => (test, TestOutcome::Skip(reason.clone())),
            (outcome, _) => (test, outcome),
        })
        .collect();
    Ok(BinaryResult {
        name: name.to_owned(),
        exit,
        tests,
    })
}

fn parse_skips(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("SKIP\t"))
        .map(|l| match l.split_once('\t') {
            Some((test, reason)) => (test.to_owned(), reason.to_owned()),
            None => (l.to_owned(), String::new()),
        })
        .collect()
}

/// `test <name> ... ok|FAILED|ignored[, reason]` lines. Output a test writes straight to fd 1/2
/// (e.g. a daemon it spawned) can land between `... ` and the result, so a started test takes
/// the first later line that ends in a result word.
fn parse_libtest(output: &str) -> Vec<(String, TestOutcome)> {
    let mut results = Vec::new();
    let mut pending: Option<String> = None;
    for line in output.lines() {
        if let Some((name, rest)) = line
            .strip_prefix("test ")
            .and_then(|l| l.split_once(" ... "))
        {
            if let Some(p) = pending.take() {
                results.push((p, TestOutcome::NoResult));
            }
            match result_word(rest) {
                Some(outcome) => results.push((name.trim().to_owned(), outcome)),
                None => pending = Some(name.trim().to_owned()),
            }
        } else if let Some(outcome) = pending.as_ref().and_then(|_| result_word(line)) {
            results.push((pending.take().unwrap_or_default(), outcome));
        }
    }
    if let Some(p) = pending {
        results.push((p, TestOutcome::NoResult));
    }
    results
}

fn result_word(rest: &str) -> Option<TestOutcome> {
    let rest = rest.trim();
    if rest.ends_with("FAILED") {
        Some(TestOutcome::Fail)
    } else if rest == "ok" || rest.ends_with(" ok") {
        Some(TestOutcome::Pass)
    } else if rest.starts_with("ignored") {
        Some(TestOutcome::Ignored)
    } else {
        None
    }
}

/// Per-kernel counts and why the whole run fails, if it does.
pub struct Summary {
    problems: Vec<String>,
}

impl Summary {
    pub fn into_result(self) -> Result<()> {
        if self.problems.is_empty() {
            return Ok(());
        }
        bail!("VM tests failed:\n  {}", self.problems.join("\n  "))
    }
}

#[derive(Default)]
struct Counts {
    ran: usize,
    passed: usize,
    failed: usize,
    skipped: usize,
}

/// Prints the test × kernel table and the per-kernel counts; returns what went wrong.
pub fn print(runs: &[KernelRun]) -> Summary {
    print_table(runs);
    let mut problems = Vec::new();
    for run in runs {
        let c = count(run);
        println!(
            "{}: ran {}, passed {}, failed {}, skipped {}; {} boot{} {:.1?}, {}",
            run.kernel,
            c.ran,
            c.passed,
            c.failed,
            c.skipped,
            run.boots,
            if run.boots == 1 { "" } else { "s" },
            run.boot.elapsed,
            run.boot.outcome
        );
        problems.extend(run_problems(run, &c));
    }
    Summary { problems }
}

/// One row per `binary: test`, one column per kernel; `-` where a test did not run.
fn print_table(runs: &[KernelRun]) {
    let mut table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, run) in runs.iter().enumerate() {
        for b in &run.binaries {
            for (test, outcome) in &b.tests {
                let row = table
                    .entry(format!("{}: {test}", b.name))
                    .or_insert_with(|| vec!["-".to_owned(); runs.len()]);
                row[k] = outcome.to_string();
            }
        }
    }
    let first = table.keys().map(String::len).chain([4]).max().unwrap_or(4);
    let widths: Vec<usize> = (0..runs.len())
        .map(|k| {
            let cells = table.values().map(|r| r[k].len());
            cells.chain([runs[k].kernel.len()]).max().unwrap_or(0)
        })
        .collect();
    print!("\n{:first$}", "test");
    for (run, w) in runs.iter().zip(&widths) {
        print!("  {:w$}", run.kernel);
    }
    println!();
    for (label, cells) in &table {
        print!("{label:first$}");
        for (cell, w) in cells.iter().zip(&widths) {
            print!("  {cell:w$}");
        }
        println!();
    }
    println!();
}

fn count(run: &KernelRun) -> Counts {
    let mut c = Counts::default();
    for (_, outcome) in run.binaries.iter().flat_map(|b| &b.tests) {
        let counter = match outcome {
            TestOutcome::Pass => &mut c.passed,
            TestOutcome::Fail | TestOutcome::NoResult => &mut c.failed,
            TestOutcome::Skip(_) => &mut c.skipped,
            TestOutcome::Ignored => continue,
        };
        *counter += 1;
        c.ran += 1;
    }
    c
}

fn run_problems(run: &KernelRun, c: &Counts) -> Vec<String> {
    let k = &run.kernel;
    let mut problems = Vec::new();
    if run.boot.outcome != Outcome::Success {
        problems.push(format!("{k}: {}", run.boot.outcome));
    }
    if c.failed > 0 {
        problems.push(format!("{k}: {} test(s) failed", c.failed));
    }
    for b in &run.binaries {
        match b.exit {
            Some(0) => {}
            Some(code) => problems.push(format!("{k}: {} exited with {code}", b.name)),
            None => problems.push(format!("{k}: {} did not finish", b.name)),
        }
    }
    if c.ran == 0 {
        problems.push(format!("{k}: no test ran"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_lines_and_interleaved_output() {
        let out = "running 4 tests\n\
                   test a::pass ... ok\n\
                   test a::fail ... FAILED\n\
                   test a::noisy ... daemon says hi\n\
                   ok\n\
                   test a::ign ... ignored, needs root\n\
                   test a::crash ... \n\
                   test result: FAILED. 2 passed; 1 failed\n";
        let r = parse_libtest(out);
        assert_eq!(
            r,
            vec![
                ("a::pass".into(), TestOutcome::Pass),
                ("a::fail".into(), TestOutcome::Fail),
                ("a::noisy".into(), TestOutcome::Pass),
                ("a::ign".into(), TestOutcome::Ignored),
                ("a::crash".into(), TestOutcome::NoResult),
            ]
        );
        let skips = parse_skips("SKIP\ta::pass\tno BPF LSM\n");
        assert_eq!(skips["a::pass"], "no BPF LSM");
    }
}
