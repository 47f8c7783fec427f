//! The hidden worker mode of the chaosd binary: `chaosd __stress-worker --until-monotonic-ns N
//! cpu|mem|io ...`. The daemon starts these as supervised children (see [`super`]); each one
//! also exits by itself at its deadline. They are single-threaded and use no async runtime.

use std::{
    alloc::{Layout, alloc_zeroed, dealloc},
    fs::File,
    io,
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    api::{Choice as _, IoMode},
    faults::kernel::monotonic_ns,
};

/// Arguments of `chaosd __stress-worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// CLOCK_MONOTONIC time (ns) at which the worker exits, whatever happens.
    #[arg(long)]
    pub until_monotonic_ns: u64,
    #[command(subcommand)]
    pub kind: WorkerKind,
}

#[derive(Debug, clap::Subcommand)]
pub enum WorkerKind {
    /// Burn `load` % of one core.
    Cpu {
        #[arg(long)]
        load: f64,
    },
    /// Allocate and touch `bytes`, at `rate` bytes/s if given, then hold them.
    Mem {
        #[arg(long)]
        bytes: u64,
        #[arg(long)]
        rate: Option<u64>,
    },
    /// Sustained I/O on a temporary file of `file_size` bytes in `dir`.
    Io {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, value_parser = IoMode::from_name)]
        mode: IoMode,
        #[arg(long)]
        rate: Option<u64>,
        #[arg(long)]
        file_size: u64,
    },
}

/// Runs the worker; returns the process exit code.
pub fn run(args: WorkerArgs) -> i32 {
    set_comm(super::WORKER_COMM);
    let until = args.until_monotonic_ns;
    let result = match args.kind {
        WorkerKind::Cpu { load } => {
            cpu(load, until);
            Ok(())
        }
        WorkerKind::Mem { bytes, rate } => mem(bytes, rate, until),
        WorkerKind::Io {
            dir,
            mode,
            rate,
            file_size,
        } => disk_io(&dir, mode, rate, file_size, until),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("chaosd stress worker: {e}");
            1
        }
    }
}

/// Names this process in `/proc/PID/comm` (what `top` and `ps -o comm` show): exec set it
/// to `exe`, from `/proc/self/exe`. Best effort.
fn set_comm(name: &str) {
    let Ok(name) = std::ffi::CString::new(name) else {
        return;
    };
    // SAFETY: PR_SET_NAME reads a NUL-terminated string (the kernel truncates it to 15 bytes).
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

fn process_cpu_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .expect("CLOCK_PROCESS_CPUTIME_ID is always readable");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

fn sleep_ns(ns: u64) {
    std::thread::sleep(Duration::from_nanos(ns));
}

/// Keeps this process's CPU time at `load` % of the wall time since it started: spin while
/// behind, sleep while ahead. Measuring CPU time (not wall time spent spinning) keeps the load
/// right when the core is shared; the debt is capped so contention never turns into a burst.
fn cpu(load: f64, until: u64) {
    let share = (load / 100.0).clamp(0.0, 1.0);
    const QUANTUM_NS: u64 = 10_000_000;
    const MAX_DEBT_NS: f64 = 100_000_000.0;
    let mut start = monotonic_ns();
    let cpu0 = process_cpu_ns();
    loop {
        let now = monotonic_ns();
        if now >= until {
            return;
        }
        let used = (process_cpu_ns() - cpu0) as f64;
        let mut target = share * (now - start) as f64;
        if target - used > MAX_DEBT_NS {
            // Could not keep up (contention): forgive the excess debt.
            start += ((target - used - MAX_DEBT_NS) / share) as u64;
            target = share * now.saturating_sub(start) as f64;
        }
        if used < target {
            // Spin until a quantum ahead of the target.
            let goal = (target - used) as u64 + (QUANTUM_NS as f64 * share) as u64;
            let c0 = process_cpu_ns();
            let mut x: u64 = 0;
            while process_cpu_ns() - c0 < goal && monotonic_ns() < until {
                for i in 0..1000u64 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
                }
            }
        } else {
            // Sleep until the target catches up with what was used.
            let wall_at = start as f64 + used / share;
            let ns = (wall_at - now as f64).max(100_000.0) as u64;
            sleep_ns(ns.min(until - now));
        }
    }
}

fn sleep_until(until: u64) {
    loop {
        let now = monotonic_ns();
        if now >= until {
            return;
        }
        sleep_ns((until - now).min(1_000_000_000));
    }
}

/// Allocates `bytes`, writes every page (at `rate` bytes/s if given), and holds them.
fn mem(bytes: u64, rate: Option<u64>, until: u64) -> Result<(), String> {
    let len = usize::try_from(bytes).map_err(|_| "size too large".to_string())?;
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(format!(
            "mmap of {bytes} bytes: {}",
            io::Error::last_os_error()
        ));
    }
    let page = super::page_size() as usize;
    let base = ptr.cast::<u8>();
    let started = monotonic_ns();
    let mut off = 0usize;
    while off < len {
        if monotonic_ns() >= until {
            return Ok(());
        }
        // SAFETY: off < len, inside the mapping.
        unsafe { base.add(off).write_volatile(0xa5) };
        off += page;
        if let Some(rate) = rate
            && (off / page).is_multiple_of(256)
        {
            let due = started + (off as f64 / rate as f64 * 1e9) as u64;
            let now = monotonic_ns();
            if due > now {
                sleep_ns((due - now).min(until.saturating_sub(now)));
            }
        }
    }
    sleep_until(until);
    Ok(())
}

const IO_BLOCK: usize = 1 << 20;

/// A 4 KiB-aligned buffer (O_DIRECT needs aligned memory).
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len, 4096).expect("valid layout");
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocating an I/O buffer");
        AlignedBuf { ptr, layout }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for layout.size() bytes and uniquely owned.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// Opens an invisible temporary file in `dir`: O_TMPFILE if the filesystem has it, else a named
/// file unlinked at once. Either way the file is gone when the process exits, however it exits.
/// O_DIRECT is set afterwards (see [`try_direct`]) so a filesystem that refuses it can never
/// leave a created-but-not-unlinked name behind.
pub(crate) fn open_temp(dir: &Path) -> io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600);
    if let Ok(f) = o.open(dir) {
        return Ok(f);
    }
    let name = dir.join(format!(
        ".chaosd-io-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&name)?;
    std::fs::remove_file(&name)?;
    Ok(f)
}

/// Switches `file` to O_DIRECT (bypassing the page cache) where the filesystem supports it.
fn try_direct(file: &File) -> bool {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let Ok(bits) = fcntl(file, FcntlArg::F_GETFL) else {
        return false;
    };
    let flags = OFlag::from_bits_truncate(bits) | OFlag::O_DIRECT;
    fcntl(file, FcntlArg::F_SETFL(flags)).is_ok()
}

/// Reads and/or writes a temporary file in `dir` in 1 MiB blocks, at `rate` bytes/s if given.
fn disk_io(
    dir: &Path,
    mode: IoMode,
    rate: Option<u64>,
    file_size: u64,
    until: u64,
) -> Result<(), String> {
    let file = open_temp(dir).map_err(|e| format!("creating a file in {}: {e}", dir.display()))?;
    let direct = try_direct(&file);
    let blocks = (file_size / IO_BLOCK as u64).max(1);
    let mut buf = AlignedBuf::new(IO_BLOCK);
    buf.as_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i % 251) as u8);
    let write_block = |buf: &mut AlignedBuf, n: u64| -> io::Result<()> {
        file.write_all_at(buf.as_mut(), n * IO_BLOCK as u64)
    };
    let started = monotonic_ns();
    let mut done: u64 = 0;
    // Sleeps while ahead of `rate`; the prefill below counts too.
    let pace = |done: u64| {
        if let Some(rate) = rate {
            let due = started + (done as f64 / rate as f64 * 1e9) as u64;
            let now = monotonic_ns();
            if due > now {
                sleep_ns((due - now).min(until.saturating_sub(now)));
            }
        }
    };
    // Reads need data on disk: write the file once first.
    if mode != IoMode::Write {
        for n in 0..blocks {
            if monotonic_ns() >= until {
                return Ok(());
            }
            write_block(&mut buf, n).map_err(|e| format!("writing: {e}"))?;
            done += IO_BLOCK as u64;
            pace(done);
        }
        let _ = nix::unistd::fdatasync(&file);
    }
    let mut n: u64 = 0;
    loop {
        if monotonic_ns() >= until {
            return Ok(());
        }
        let write = match mode {
            IoMode::Write => true,
            IoMode::Read => false,
            IoMode::Mixed => n.is_multiple_of(2),
        };
        let block = n % blocks;
        if write {
            write_block(&mut buf, block).map_err(|e| format!("writing: {e}"))?;
        } else {
            file.read_exact_at(buf.as_mut(), block * IO_BLOCK as u64)
                .map_err(|e| format!("reading: {e}"))?;
        }
        n += 1;
        done += IO_BLOCK as u64;
        if !direct && block == blocks - 1 {
            // Without O_DIRECT, push writes out and drop the cache so reads reach the disk.
            let _ = nix::unistd::fdatasync(&file);
            let _ = nix::fcntl::posix_fadvise(
                &file,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
        pace(done);
    }
}
