//! `cargo xtask fuzz`: runs each cargo-fuzz target in `fuzz/` for a bounded time and fails on
//! the first crash (libFuzzer leaves the input under `fuzz/artifacts/<target>/`).
//!
//! The targets run without a sanitizer: the fuzzed code is safe Rust, so what the fuzzer looks
//! for is panics (overflows, slicing, unwraps), and the instrumented build is half as long.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result};

use crate::util::{run_cmd, workspace_root};

/// The request decoder and checks (`POST /v1/faults`, `POST /v1/runs`), and the scenario
/// parser.
const TARGETS: &[&str] = &["api_request", "scenario"];

#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Only this target (repeatable); default: all.
    #[arg(long = "target")]
    pub targets: Vec<String>,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    ensure_cargo_fuzz()?;
    let fuzz_dir = workspace_root().join("fuzz");
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    for target in targets {
        let corpus = fuzz_dir.join("corpus").join(target);
        seed(target, &corpus)?;
        println!("fuzz: {target} for {} s", args.seconds);
        run_cmd(
            Command::new("cargo")
                .current_dir(&fuzz_dir)
                .args(["fuzz", "run", target, "--sanitizer", "none", "--"])
                .arg(format!("-max_total_time={}", args.seconds))
                .arg("-rss_limit_mb=4096"),
        )
        .with_context(|| {
            format!("fuzz target {target} crashed: the input is under fuzz/artifacts/{target}/")
        })?;
    }
    Ok(())
}

/// Puts the seeds of `target` into its corpus dir (libFuzzer adds what it finds beside them).
fn seed(target: &str, corpus: &Path) -> Result<()> {
    fs::create_dir_all(corpus).with_context(|| format!("creating {}", corpus.display()))?;
    match target {
        // One valid request per fault kind (a test in chaosd's kinds.rs keeps the set whole).
        "api_request" => {
            let seeds = workspace_root().join("fuzz/seeds/api_request");
            for e in fs::read_dir(&seeds)
                .context("reading fuzz/seeds/api_request/")?
                .flatten()
            {
                fs::copy(e.path(), corpus.join(e.file_name()))?;
            }
        }
        "scenario" => {
            let examples = workspace_root().join("examples");
            for e in fs::read_dir(&examples)
                .context("reading examples/")?
                .flatten()
            {
                if e.path().extension().is_some_and(|x| x == "toml") {
                    fs::copy(e.path(), corpus.join(e.file_name()))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Installs cargo-fuzz when `cargo fuzz` is not there yet.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    println!("fuzz: installing cargo-fuzz (about a minute)");
    run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}
