//! `cargo xtask fuzz`: runs each cargo-fuzz target in `fuzz/` for a bounded time and fails on
//! the first crash (libFuzzer leaves the input under `fuzz/artifacts/<target>/`).
//!
//! The targets run without a sanitizer: the fuzzed code is safe Rust, so what the fuzzer looks
//! for is panics (overflows, slicing, unwraps), and the instrumented build is half as long.

use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Instant,
};

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
                // --dev: debug assertions and overflow checks on (what the fuzzer looks for),
                // and a build well under half as long as the optimised one.
                .args(["fuzz", "run", target, "--dev", "--sanitizer", "none", "--"])
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

/// A `cargo xtask fuzz` running beside the other test stages at SCHED_IDLE: it only gets the
/// CPU time they leave (build phases with one busy core, tests that wait, a boot slot that
/// ended early), so it does not slow them, and its output goes to a log file.
pub struct Background {
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl Background {
    pub fn spawn(seconds: u64) -> Result<Self> {
        let log = workspace_root().join("target/fuzz.log");
        fs::create_dir_all(log.parent().expect("target/")).context("creating target/")?;
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(std::env::current_exe().context("finding xtask's binary")?);
        cmd.args(["fuzz", "--seconds", &seconds.to_string()])
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group, so cargo and rustc stop with it (see Drop).
            .process_group(0);
        // SAFETY: between fork and exec the closure only calls sched_setscheduler(2), on a
        // parameter built in the closure (async-signal-safe).
        unsafe {
            cmd.pre_exec(|| {
                let param = libc::sched_param { sched_priority: 0 };
                if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting the background fuzz run")?;
        println!(
            "fuzz: running in the background at idle priority, log in {}",
            log.display()
        );
        Ok(Self {
            child,
            log,
            started: Instant::now(),
        })
    }

    /// Waits for the run; on failure prints the end of its log. Returns its wall time too.
    pub fn wait(mut self) -> (std::time::Duration, Result<()>) {
        let status = self.child.wait();
        let elapsed = self.started.elapsed();
        let result = match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => {
                print_tail(&self.log, 60);
                Err(anyhow::anyhow!(
                    "the fuzz run failed ({s}); its log: {}",
                    self.log.display()
                ))
            }
            Err(e) => Err(e).context("waiting for the fuzz run"),
        };
        (elapsed, result)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Only when not waited for (an earlier stage failed): stop it, cargo and rustc with it.
        if let Ok(None) = self.child.try_wait() {
            let group = self.child.id() as libc::pid_t;
            // SAFETY: kill(2) on the process group our child leads; it is not reaped yet, so
            // the id is still its.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

fn print_tail(log: &Path, lines: usize) {
    let text = fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    println!(
        "fuzz: last {} lines of {}:",
        all.len() - from,
        log.display()
    );
    for line in &all[from..] {
        println!("  {line}");
    }
}
