//! Boots one kernel under qemu (TCG) with a host-side time-out and classifies how it ended.
//!
//! The serial console is streamed to the terminal and copied to `<work>/console.log`. qemu is
//! owned by a guard that kills it on every path (error, time-out, panic of xtask). The guest's
//! isa-debug-exit write `v` ends qemu with status `(v << 1) | 1`; a kernel panic (`panic=-1`
//! plus `-no-reboot`) or a plain power-off ends it with 0, so only [`SUCCESS`] counts as success.
//!
//! Three deadlines end a boot early: the whole boot ([`Boot::timeout`]), reaching stage 2
//! ([`Boot::stage2_timeout`]: a kernel or stage 1 that hangs fails in minutes, not at the end of
//! the boot's budget) and console silence ([`Boot::stall_timeout`]: a hung test).

use std::{
    fmt, fs,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use std::os::unix::process::ExitStatusExt as _;

use anyhow::{Context, Result};

use super::{
    guest::{STAGE2_BANNER, SUCCESS, TESTS_FAILED},
    initramfs::STAGE1_FAILED,
    shares::Shares,
};

/// One boot's inputs.
pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub work_dir: &'a Path,
    /// Host dirs mounted read-only at their own paths (listed in the work dir's `shares.list`).
    pub shares: &'a Shares,
    pub cpus: Cpus,
    /// The whole boot.
    pub timeout: Duration,
    /// From launch until stage 2 prints its banner.
    pub stage2_timeout: Duration,
    /// The longest the console may stay silent once stage 2 runs.
    pub stall_timeout: Duration,
    /// Prefix of this guest's console lines (guests boot side by side).
    pub tag: &'a str,
    /// Kernel parameters after the console ones (e.g. the LSM list: [`lsm_param`]).
    pub extra_cmdline: &'a str,
    /// A raw image attached as a virtio-blk disk with serial [`SCRATCH_SERIAL`] (the
    /// `io.max` tests need a real block device; the guest's root is 9p).
    pub scratch_disk: Option<&'a Path>,
}

/// The scratch disk's serial: the guest finds it by `/sys/block/*/serial`.
pub const SCRATCH_SERIAL: &str = "chaosd-scratch";

/// vCPUs of one guest and how TCG runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpus {
    pub smp: u32,
    /// One host thread per vCPU (`thread=multi`) or all vCPUs on one (`thread=single`).
    pub multi_thread: bool,
}

/// How a boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stage 2 ran every binary and each exited 0.
    Success,
    /// Stage 2 ran every binary; at least one exited non-zero.
    TestsFailed,
    /// qemu itself died of a signal we did not send (TCG has crashed so, e.g. SIGABRT in
    /// `iotlb_to_section` at boot): the emulator's failure, not the guest's; worth one retry.
    QemuCrashed(String),
    /// Anything else: panic, stage 1 failure, qemu error, time-out.
    Abnormal(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success => write!(f, "all test binaries exited 0"),
            Self::TestsFailed => write!(f, "a test binary exited non-zero"),
            Self::QemuCrashed(why) => write!(f, "qemu crashed: {why}"),
            Self::Abnormal(why) => write!(f, "abnormal end: {why}"),
        }
    }
}

/// A finished boot.
#[derive(Debug, Clone)]
pub struct BootResult {
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// Kills and reaps qemu when dropped.
struct QemuGuard(Child);

impl Drop for QemuGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

pub fn boot(b: &Boot<'_>) -> Result<BootResult> {
    let started = Instant::now();
    let console_log = b.work_dir.join("console.log");
    let mut cmd = command(b);
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let mut qemu = QemuGuard(child);
    let stdout = qemu.0.stdout.take().context("qemu stdout")?;
    let log = fs::File::create(&console_log)
        .with_context(|| format!("creating {}", console_log.display()))?;
    let tag = b.tag.to_owned();
    let progress = Arc::new(Progress::default());
    let pump = {
        let progress = Arc::clone(&progress);
        thread::spawn(move || stream_console(stdout, log, &tag, &progress, started))
    };
    let waited = wait_for(&mut qemu.0, b, &progress, started)?;
    drop(qemu);
    let _ = pump.join();
    let outcome = match waited {
        Ok(status) => classify(
            status,
            &fs::read_to_string(&console_log).unwrap_or_default(),
        ),
        Err(why) => Outcome::Abnormal(format!("{why}, qemu killed")),
    };
    Ok(BootResult {
        outcome,
        elapsed: started.elapsed(),
    })
}

/// What the console pump has seen, for the deadlines.
#[derive(Default)]
struct Progress {
    stage2: AtomicBool,
    /// Milliseconds after launch of the last console line.
    last_line_ms: AtomicU64,
}

fn command(b: &Boot<'_>) -> Command {
    let root = "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap";
    let work = format!(
        "local,id=work,path={},security_model=none,multidevs=remap",
        qemu_escape(&b.work_dir.display().to_string())
    );
    let thread = if b.cpus.multi_thread {
        "multi"
    } else {
        "single"
    };
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", &format!("tcg,thread={thread}"), "-cpu", "max"])
        .args(["-smp", &b.cpus.smp.to_string(), "-m", "1G"])
        .args([
            "-M",
            "pc",
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            "stdio",
        ])
        .args(["-no-reboot", "-kernel"])
        .arg(b.kernel)
        .arg("-initrd")
        .arg(b.initrd)
        .args([
            "-append",
            format!("console=ttyS0 quiet panic=-1 {}", b.extra_cmdline).trim_end(),
        ])
        .args([
            "-fsdev",
            root,
            "-device",
            "virtio-9p-pci,fsdev=root,mount_tag=hostroot",
        ])
        .args([
            "-fsdev",
            &work,
            "-device",
            "virtio-9p-pci,fsdev=work,mount_tag=work",
        ]);
    for share in b.shares.iter() {
        let fsdev = format!(
            "local,id={tag},path={path},security_model=none,readonly=on,multidevs=remap",
            tag = share.tag,
            path = qemu_escape(&share.path.display().to_string())
        );
        let device = format!("virtio-9p-pci,fsdev={tag},mount_tag={tag}", tag = share.tag);
        cmd.args(["-fsdev", &fsdev, "-device", &device]);
    }
    if let Some(image) = b.scratch_disk {
        let drive = format!(
            "file={},if=none,id=scratch,format=raw",
            qemu_escape(&image.display().to_string())
        );
        let device = format!("virtio-blk-pci,drive=scratch,serial={SCRATCH_SERIAL}");
        cmd.args(["-drive", &drive, "-device", &device]);
    }
    cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// The `lsm=` parameter that activates BPF LSM on a kernel built with it but without `bpf` in
/// its default LSM list (`CONFIG_LSM` in `config`, the text of `/boot/config-<release>`): what
/// `chaosctl doctor` tells a user of such a kernel to do. Debian 11's 5.10 is one; 6.1 and 6.12
/// list `bpf` already and get nothing.
pub fn lsm_param(config: &str) -> Option<String> {
    if !config.lines().any(|l| l == "CONFIG_BPF_LSM=y") {
        return None;
    }
    let list = config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_LSM="))?
        .trim_matches('"');
    if list.split(',').any(|m| m == "bpf") {
        return None;
    }
    Some(format!("lsm={list},bpf"))
}

/// qemu's option syntax: a comma inside a value is written twice.
fn qemu_escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// Copies the serial console to the terminal and the log, line by line, noting progress.
fn stream_console(
    stdout: impl std::io::Read,
    mut log: fs::File,
    tag: &str,
    progress: &Progress,
    started: Instant,
) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    let term = std::io::stdout();
    while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let _ = writeln!(term.lock(), "  {tag} | {text}");
        let _ = writeln!(log, "{text}");
        if text.contains(STAGE2_BANNER) {
            progress.stage2.store(true, Ordering::Relaxed);
        }
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        progress.last_line_ms.store(ms, Ordering::Relaxed);
        line.clear();
    }
}

/// Waits for qemu to exit; `Err(why)` when a deadline passed first (the caller's guard then
/// kills it).
fn wait_for(
    child: &mut Child,
    b: &Boot<'_>,
    progress: &Progress,
    started: Instant,
) -> Result<std::result::Result<ExitStatus, String>> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for qemu")? {
            return Ok(Ok(status));
        }
        let now = started.elapsed();
        if now >= b.timeout {
            return Ok(Err(format!("timed out after {:?}", b.timeout)));
        }
        if !progress.stage2.load(Ordering::Relaxed) {
            if now >= b.stage2_timeout {
                return Ok(Err(format!(
                    "the guest did not reach stage 2 within {:?} (kernel or initramfs hang, \
                     see the console above)",
                    b.stage2_timeout
                )));
            }
        } else {
            let last = Duration::from_millis(progress.last_line_ms.load(Ordering::Relaxed));
            if now.saturating_sub(last) >= b.stall_timeout {
                return Ok(Err(format!(
                    "no console output for {:?} (a hung test?)",
                    b.stall_timeout
                )));
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn classify(status: ExitStatus, console: &str) -> Outcome {
    let exit_code = |v: u8| i32::from(v) << 1 | 1;
    match status.code() {
        Some(c) if c == exit_code(SUCCESS) => Outcome::Success,
        Some(c) if c == exit_code(TESTS_FAILED) => Outcome::TestsFailed,
        Some(c) if c == exit_code(STAGE1_FAILED) => {
            Outcome::Abnormal("stage 1 (initramfs) failed, see the console above".into())
        }
        _ if console.contains("Kernel panic") => Outcome::Abnormal(format!(
            "guest kernel panicked ({})",
            console
                .lines()
                .find(|l| l.contains("Kernel panic"))
                .unwrap_or_default()
                .trim()
        )),
        Some(0) => Outcome::Abnormal("guest rebooted or powered off without reporting".into()),
        None if status.signal().is_some() => Outcome::QemuCrashed(format!("{status}")),
        _ => Outcome::Abnormal(format!("qemu ended with {status}")),
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::process::ExitStatusExt as _, process::ExitStatus};

    use super::{Outcome, classify, lsm_param};

    #[test]
    fn qemu_dying_of_a_signal_is_a_crash_and_a_guest_panic_is_not() {
        // Raw wait statuses: 6 = killed by SIGABRT; 3 << 8 = exited with 3.
        let abort = ExitStatus::from_raw(6);
        assert!(matches!(classify(abort, ""), Outcome::QemuCrashed(_)));
        let panicked = "[ 1.0] Kernel panic - not syncing: sysrq triggered crash";
        assert!(matches!(classify(abort, panicked), Outcome::Abnormal(_)));
        assert!(matches!(
            classify(ExitStatus::from_raw(3 << 8), ""),
            Outcome::Abnormal(_)
        ));
    }

    #[test]
    fn bpf_joins_the_lsm_list_only_where_it_is_built_in_and_missing() {
        let bullseye = "CONFIG_BPF_LSM=y\nCONFIG_LSM=\"lockdown,yama,apparmor\"\n";
        assert_eq!(
            lsm_param(bullseye).as_deref(),
            Some("lsm=lockdown,yama,apparmor,bpf")
        );
        let bookworm = "CONFIG_BPF_LSM=y\nCONFIG_LSM=\"landlock,lockdown,bpf\"\n";
        assert_eq!(lsm_param(bookworm), None);
        let without = "# CONFIG_BPF_LSM is not set\nCONFIG_LSM=\"lockdown,yama\"\n";
        assert_eq!(lsm_param(without), None);
    }
}
