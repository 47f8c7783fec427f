//! Probes for the syscall-level faults, each a hidden xtask subcommand so it is a separate
//! process a target cgroup can hold: reads of one file (io.errno), and clock reads through the
//! vDSO (clock.skew: cost per call and the offset seen).

use std::{
    io::{BufRead as _, Write as _},
    os::unix::fs::FileExt as _,
    path::PathBuf,
    time::Instant,
};

use anyhow::{Context as _, Result};
use serde_json::json;

use super::stats::median;

/// Arguments of `cargo xtask __bench-file-reads`.
#[derive(clap::Args, Debug)]
pub struct FileReadsArgs {
    /// cgroup2 directory to join first.
    #[arg(long)]
    cgroup: PathBuf,
    /// File to read (opened once, then read from offset 0 `count` times).
    #[arg(long)]
    file: PathBuf,
    #[arg(long)]
    count: u32,
}

/// Prints `{"ok": N, "eio": N, "other": N}` for `count` reads.
pub fn file_reads(args: &FileReadsArgs) -> Result<()> {
    join_cgroup(&args.cgroup)?;
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let (mut ok, mut eio, mut other) = (0u32, 0u32, 0u32);
    let mut buf = [0u8; 64];
    for _ in 0..args.count {
        match file.read_at(&mut buf, 0) {
            Ok(_) => ok += 1,
            Err(e) if e.raw_os_error() == Some(libc::EIO) => eio += 1,
            Err(_) => other += 1,
        }
    }
    println!("{}", json!({"ok": ok, "eio": eio, "other": other}));
    Ok(())
}

/// Arguments of `cargo xtask __bench-clock-probe`.
#[derive(clap::Args, Debug)]
pub struct ClockProbeArgs {
    /// cgroup2 directory to join first.
    #[arg(long)]
    cgroup: PathBuf,
}

/// Joins the cgroup, prints `ready`, then for each line `<iterations>` on stdin prints
/// `{"ns_per_call": median over 9 runs, "offset_ns": median of 99 reads}` until stdin closes.
/// The process stays single-threaded and waits in `read`, so a clock fault can patch it
/// between two measurements.
pub fn clock_probe(args: &ClockProbeArgs) -> Result<()> {
    join_cgroup(&args.cgroup)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let iterations: u64 = line?.trim().parse().context("iterations")?;
        let runs: Vec<f64> = (0..9).map(|_| ns_per_call(iterations)).collect();
        let offsets: Vec<f64> = (0..99).map(|_| offset_ns()).collect();
        writeln!(
            out,
            "{}",
            json!({"ns_per_call": median(&runs), "offset_ns": median(&offsets)})
        )?;
        out.flush()?;
    }
    Ok(())
}

fn join_cgroup(dir: &std::path::Path) -> Result<()> {
    std::fs::write(dir.join("cgroup.procs"), "0")
        .with_context(|| format!("joining {}", dir.display()))
}

/// CLOCK_REALTIME through libc, which calls the vDSO (what a fault patches).
fn realtime_vdso() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_REALTIME from the kernel itself (a system call, which no fault changes).
fn realtime_kernel() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the raw system call with a valid timespec pointer.
    unsafe { libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_REALTIME, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

fn ns_per_call(iterations: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(realtime_vdso());
    }
    start.elapsed().as_nanos() as f64 / iterations as f64
}

/// vDSO time minus kernel time, the kernel read centred between two vDSO reads.
fn offset_ns() -> f64 {
    let before = realtime_vdso();
    let kernel = realtime_kernel();
    let after = realtime_vdso();
    ((before + after) / 2 - kernel) as f64
}
