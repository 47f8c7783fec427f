//! Boots one kernel under qemu (TCG) with a host-side time-out and classifies how it ended.
//!
//! The serial console is streamed to the terminal and copied to `<work>/console.log`. qemu is
//! owned by a guard that kills it on every path (error, time-out, panic of xtask). The guest's
//! isa-debug-exit write `v` ends qemu with status `(v << 1) | 1`; a kernel panic (`panic=-1`
//! plus `-no-reboot`) or a plain power-off ends it with 0, so only [`SUCCESS`] counts as success.

use std::{
    fmt, fs,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    guest::{SUCCESS, TESTS_FAILED},
    initramfs::STAGE1_FAILED,
};

/// One boot's inputs.
pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub work_dir: &'a Path,
    pub timeout: Duration,
    /// Prefix of this guest's console lines (guests boot side by side).
    pub tag: &'a str,
}

/// How a boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stage 2 ran every binary and each exited 0.
    Success,
    /// Stage 2 ran every binary; at least one exited non-zero.
    TestsFailed,
    /// Anything else: panic, stage 1 failure, qemu error, time-out.
    Abnormal(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success => write!(f, "all test binaries exited 0"),
            Self::TestsFailed => write!(f, "a test binary exited non-zero"),
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
    let pump = thread::spawn(move || stream_console(stdout, log, &tag));
    let status = wait_until(&mut qemu.0, started + b.timeout)?;
    drop(qemu);
    let _ = pump.join();
    let outcome = match status {
        Some(status) => classify(
            status,
            &fs::read_to_string(&console_log).unwrap_or_default(),
        ),
        None => Outcome::Abnormal(format!("timed out after {:?}, qemu killed", b.timeout)),
    };
    Ok(BootResult {
        outcome,
        elapsed: started.elapsed(),
    })
}

fn command(b: &Boot<'_>) -> Command {
    let root = "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap";
    let work = format!(
        "local,id=work,path={},security_model=none,multidevs=remap",
        b.work_dir.display()
    );
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "1G",
    ])
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
    .args(["-append", "console=ttyS0 quiet panic=-1"])
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
    ])
    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    cmd
}

/// Copies the serial console to the terminal and the log, line by line.
fn stream_console(stdout: impl std::io::Read, mut log: fs::File, tag: &str) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    let term = std::io::stdout();
    while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let _ = writeln!(term.lock(), "  {tag} | {text}");
        let _ = writeln!(log, "{text}");
        line.clear();
    }
}

/// Waits for qemu to exit; `None` on time-out (the caller's guard then kills it).
fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for qemu")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
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
        _ => Outcome::Abnormal(format!("qemu ended with {status}")),
    }
}
