//! Micro-benchmark of the detour: a patched `clock_gettime(CLOCK_REALTIME)` against the native
//! vDSO call, measured in this very process (it patches its own vDSO through /proc/self/mem,
//! with the same code the daemon puts in targets, and restores it after).
//! `chaosd-test-helper clock-bench` prints the report as JSON (for the clock test and
//! `cargo xtask bench`); the goal is a ratio of at most 3.

use std::{hint::black_box, time::Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use chaosd::faults::clock::{
    ClockName,
    detour::{self, SkewValues},
    params::clock_mask,
    patch,
    vdso::{self, ProcMem, Vdso, parse_maps},
};

/// Nanoseconds per call, best of the rounds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClockBenchReport {
    pub native_ns: f64,
    pub patched_ns: f64,
    pub ratio: f64,
    pub iterations: u64,
}

const ROUNDS: usize = 5;
/// What the benchmark skews by (and checks it sees).
const OFFSET_NS: i64 = 3_600_000_000_000;

/// Runs `iterations` calls per round, [`ROUNDS`] rounds of each kind, interleaved.
/// Must run while this process has a single thread.
pub fn run(iterations: u64) -> anyhow::Result<ClockBenchReport> {
    let maps = parse_maps(&std::fs::read_to_string("/proc/self/maps")?);
    let mem = ProcMem::open("self").context("opening /proc/self/mem")?;
    let vdso = Vdso::read(&mem, &maps)?;
    let prologues = patch::prologues(&vdso)?;
    let page = vdso::free_page_near_vdso(&maps).context("no free page near the vDSO")?;
    let mapped = OwnPage::map(page)?;
    let deadline = chaosd::faults::kernel::monotonic_ns() + 600_000_000_000;
    let values = SkewValues::new(OFFSET_NS, deadline, clock_mask(&[ClockName::Realtime]));
    let image = detour::assemble(page, values, &prologues)?;
    let mut native = f64::MAX;
    let mut patched = f64::MAX;
    for _ in 0..ROUNDS {
        native = native.min(ns_per_call(iterations));
        let installed = patch::install(&mem, mapped.0, &image)
            .map_err(anyhow::Error::from)
            .and_then(|()| check_skew());
        if installed.is_ok() {
            patched = patched.min(ns_per_call(iterations));
        }
        // Restore before anything else: the page is unmapped when `mapped` drops.
        patch::restore_entries(&mem, mapped.0)?;
        installed?;
    }
    Ok(ClockBenchReport {
        native_ns: native,
        patched_ns: patched,
        ratio: patched / native,
        iterations,
    })
}

fn realtime_vdso() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

fn realtime_syscall() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the raw system call with a valid timespec pointer (bypasses the vDSO).
    unsafe { libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// The patched vDSO must really read one offset ahead of the kernel's clock.
fn check_skew() -> anyhow::Result<()> {
    let seen = realtime_vdso() - realtime_syscall();
    if (seen - OFFSET_NS as i128).abs() > 50_000_000 {
        bail!("the patched clock is {seen} ns off, expected {OFFSET_NS}");
    }
    Ok(())
}

fn ns_per_call(iterations: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(realtime_vdso());
    }
    start.elapsed().as_nanos() as f64 / iterations as f64
}

/// The detour page mapped in this process, unmapped on drop.
struct OwnPage(u64);

impl OwnPage {
    fn map(at: u64) -> anyhow::Result<OwnPage> {
        // SAFETY: a new anonymous mapping at a free address (MAP_FIXED_NOREPLACE never replaces).
        let got = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                vdso::PAGE as usize,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if got == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping the detour page");
        }
        let page = OwnPage(got as u64);
        if page.0 != at {
            bail!("the kernel placed the detour page elsewhere");
        }
        Ok(page)
    }
}

impl Drop for OwnPage {
    fn drop(&mut self) {
        // SAFETY: our own mapping; the entries were restored, nothing runs in it any more.
        unsafe { libc::munmap(self.0 as *mut libc::c_void, vdso::PAGE as usize) };
    }
}
