//! `cargo xtask vm-test`: the integration tests inside Debian distro kernels under qemu.
//!
//! The host kernel (6.18 in a Firecracker VM) cannot load LSM or trampoline programs and has no
//! sch_fq/netem, so the tests that need those run in stock Debian kernels (6.12, 6.1 and
//! Debian 11's 5.10) booted by qemu (TCG: KVM does not work for these kernels under the nested
//! hypervisor here). One boot per kernel runs every test binary; the flow is:
//!
//! 0. [`shares`]: find the workspace and target dirs the guest must see and refuse, before
//!    anything is built, those it cannot.
//! 1. [`install`]: apt-get what is missing (qemu, static busybox, the kernel images).
//! 2. Build the daemon binaries and the `chaosd-integration` test executables on the host.
//! 3. [`initramfs`]: a small cached initramfs per kernel (busybox + the 9p/virtio modules) whose
//!    `/init` mounts the host `/` read-only over 9p, a per-run work dir read-write and the shared
//!    dirs read-only at their own paths, then `switch_root`s into the host root and runs
//!    `stage2.sh` from the work dir.
//! 4. [`guest`]: `stage2.sh` mounts the kernel filesystems and runs each test binary with
//!    `--test-threads=1`, teeing its output and exit status into the work dir, then reports the
//!    overall status through qemu's `isa-debug-exit` port.
//! 5. [`qemu`] boots it with host-side deadlines, [`DEFAULT_PARALLEL`] kernels at a time;
//!    [`report`] parses the libtest lines, turns the tests listed in
//!    `$CHAOSD_TEST_REPORT_DIR/skips` into skips and prints a table; after a full run
//!    [`kernels_doc`] writes the kind × kernel table `target/vm/kernels.md`.

mod guest;
mod initramfs;
mod install;
pub mod kernels_doc;
mod qemu;
mod report;
mod shares;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::util::{cargo, cargo_bin_dir, record_stage, stage, workspace_root};
use shares::Shares;

/// Boots at a time, vCPUs per guest and TCG threading: measured on the 2-core host with three
/// kernels (docs/testing.md, "Boot scheduling").
pub const DEFAULT_PARALLEL: usize = 2;
/// Boots per kernel (see `--parts`).
pub const DEFAULT_PARTS: usize = 2;
pub const DEFAULT_SMP: u32 = 2;

/// Test binaries that exercise only chaosd's own userspace (the HTTP API, the scenario runner,
/// metrics text, systemd handshakes, the registry and map hygiene under load), which no kernel
/// version changes: they run on the host only, so the emulated kernels spend their time where
/// kernels differ. `--test` still runs them in the VMs.
const HOST_ONLY: &[&str] = &[
    "api",
    "scenario",
    "metrics",
    "systemd",
    "load",
    "responsive",
    "prometheus",
    "schedule",
    "report",
    "deploy",
    "chaostoolkit",
    // The remote listener: TLS, routing and mapping are userspace; the faults it maps onto
    // (loss, freeze, clock, fill) have their own suites in the VMs.
    "chaos_mesh",
];

/// Which distro kernel(s) to boot.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelChoice {
    /// Debian bookworm-backports/security 6.12.
    #[value(name = "6.12")]
    V6_12,
    /// Debian bookworm 6.1.
    #[value(name = "6.1")]
    V6_1,
    /// Debian 11 (bullseye-security) 5.10.
    #[value(name = "5.10")]
    V5_10,
    /// The kernels the suite passes on and CI boots: 6.12, 6.1 and 5.10 (booted with `bpf`
    /// added to its LSM list: [`qemu::lsm_param`]).
    #[default]
    #[value(name = "tested")]
    Tested,
    /// All three: 6.12, 6.1, 5.10 (the same as `tested`).
    All,
}

impl KernelChoice {
    fn series(self) -> &'static [&'static str] {
        match self {
            Self::V6_12 => &["6.12"],
            Self::V6_1 => &["6.1"],
            Self::V5_10 => &["5.10"],
            Self::Tested | Self::All => &["6.12", "6.1", "5.10"],
        }
    }
}

/// How TCG runs a guest's vCPUs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TcgThread {
    /// One host thread per vCPU (MTTCG).
    #[default]
    Multi,
    /// Every vCPU of a guest on one host thread.
    Single,
}

#[derive(clap::Args, Debug)]
pub struct VmTestArgs {
    /// Kernel series to boot.
    #[arg(long, value_enum, default_value = "tested")]
    pub kernel: KernelChoice,
    /// Only run tests whose name contains this substring (passed to each test binary).
    #[arg(long)]
    pub filter: Option<String>,
    /// Only run these test binaries (tests/tests/<name>.rs), e.g. `--test net_delay`.
    #[arg(long = "test")]
    pub tests: Vec<String>,
    /// Keep each boot's work dir (test output, exit codes, console log) under target/vm/.
    #[arg(long)]
    pub keep_workdir: bool,
    /// Seconds one boot may take before qemu is killed and the run counts as failed.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Seconds from launch until stage 2 must have started (a hung kernel or initramfs).
    #[arg(long, default_value_t = 300)]
    pub stage2_timeout: u64,
    /// Seconds the guest console may stay silent once stage 2 runs (a hung test).
    #[arg(long, default_value_t = 600)]
    pub stall_timeout: u64,
    /// Kernels booted at the same time.
    #[arg(long, default_value_t = DEFAULT_PARALLEL)]
    pub parallel: usize,
    /// Boots per kernel, each running a share of the test binaries: more, shorter boots keep
    /// both slots busy to the end (three kernels on two slots leave one idle for a third of
    /// the run otherwise).
    #[arg(long, default_value_t = DEFAULT_PARTS)]
    pub parts: usize,
    /// vCPUs of each guest.
    #[arg(long, default_value_t = DEFAULT_SMP)]
    pub smp: u32,
    /// TCG threading of each guest.
    #[arg(long, value_enum, default_value = "multi")]
    pub tcg_thread: TcgThread,
    /// Harness self-test: build the tests of this Cargo.toml instead of chaosd-integration (and
    /// skip building the workspace binaries).
    #[arg(long, hide = true)]
    pub test_manifest: Option<PathBuf>,
    /// Harness self-test: crash the guest kernel (sysrq `c`) before running the tests.
    #[arg(long, hide = true)]
    pub self_test_panic: bool,
}

impl Default for VmTestArgs {
    fn default() -> Self {
        Self {
            kernel: KernelChoice::Tested,
            filter: None,
            tests: Vec::new(),
            keep_workdir: false,
            timeout: 1800,
            stage2_timeout: 300,
            stall_timeout: 600,
            parallel: DEFAULT_PARALLEL,
            parts: DEFAULT_PARTS,
            smp: DEFAULT_SMP,
            tcg_thread: TcgThread::Multi,
            test_manifest: None,
            self_test_panic: false,
        }
    }
}

impl VmTestArgs {
    /// Every kernel, every default test binary, no filter: what docs/kernels.md describes.
    fn is_full_run(&self) -> bool {
        matches!(self.kernel, KernelChoice::Tested | KernelChoice::All)
            && self.filter.is_none()
            && self.tests.is_empty()
            && self.test_manifest.is_none()
            && !self.self_test_panic
    }

    fn deadlines(&self) -> Deadlines {
        Deadlines {
            timeout: Duration::from_secs(self.timeout),
            stage2: Duration::from_secs(self.stage2_timeout),
            stall: Duration::from_secs(self.stall_timeout),
            cpus: qemu::Cpus {
                smp: self.smp.max(1),
                multi_thread: self.tcg_thread == TcgThread::Multi,
            },
        }
    }
}

/// One boot's limits and vCPUs.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    timeout: Duration,
    stage2: Duration,
    stall: Duration,
    cpus: qemu::Cpus,
}

impl Deadlines {
    /// One guest with [`DEFAULT_SMP`] multi-threaded vCPUs and `timeout` for the whole boot.
    fn single(timeout: Duration) -> Self {
        Self {
            timeout,
            stage2: Duration::from_secs(300),
            stall: timeout,
            cpus: qemu::Cpus {
                smp: DEFAULT_SMP,
                multi_thread: true,
            },
        }
    }
}

/// One test executable produced by `cargo test --no-run`.
#[derive(Debug, Clone)]
pub struct TestBinary {
    /// Unique short name (the cargo target name); also the report dir name.
    pub name: String,
    pub executable: PathBuf,
    /// The package directory: libtest binaries run from there under cargo too.
    pub cwd: PathBuf,
}

pub fn run(args: &VmTestArgs) -> Result<()> {
    let started = Instant::now();
    // Before installing or building anything: the dirs the guest must see, or why it cannot.
    let shares = Shares::detect(&workspace_root(), args.test_manifest.as_deref())?;
    let kernels = stage("vm-install", || {
        install::ensure_packages(args.kernel.series())?;
        args.kernel
            .series()
            .iter()
            .map(|s| install::find_kernel(s))
            .collect::<Result<Vec<_>>>()
    })?;
    let mut binaries = stage("vm-build", || build_tests(args))?;
    if args.tests.is_empty() {
        binaries.retain(|b| !HOST_ONLY.contains(&b.name.as_str()));
    } else {
        binaries.retain(|b| args.tests.contains(&b.name));
    }
    if binaries.is_empty() {
        bail!("cargo test --no-run produced no test executables");
    }
    for b in &binaries {
        shares.check_visible(&b.executable)?;
        shares.check_visible(&b.cwd)?;
    }
    let vm_dir = workspace_root().join("target/vm");
    // Before any boot: two parts of one kernel may boot at once and must not both build it.
    for kernel in &kernels {
        initramfs::ensure(&vm_dir, kernel)?;
    }
    let runs = stage("vm-boots", || {
        boot_all(args, &vm_dir, &kernels, &binaries, &shares)
    })?;
    let summary = report::print(&runs);
    if args.is_full_run() {
        let path = vm_dir.join(kernels_doc::GENERATED);
        kernels_doc::write(&path, &runs)?;
        println!(
            "vm-test: wrote {} (`cargo xtask kernels-doc` copies it to docs/)",
            path.display()
        );
    }
    println!("vm-test: total {:.1?}", started.elapsed());
    summary.into_result()
}

/// One boot: a kernel and its share of the test binaries.
struct Job {
    kernel: usize,
    part: Part,
    binaries: Vec<TestBinary>,
}

/// Which share of a kernel's binaries a boot runs (1-based, for names).
#[derive(Clone, Copy)]
struct Part {
    index: usize,
    of: usize,
}

impl Part {
    /// `""` for a whole kernel, `-part1of2` otherwise: work dir and stage names.
    fn suffix(self) -> String {
        if self.of == 1 {
            String::new()
        } else {
            format!("-part{}of{}", self.index, self.of)
        }
    }
}

/// Every kernel's binaries dealt into `parts` shares, kernels in the given order.
fn jobs(kernels: usize, parts: usize, binaries: &[TestBinary]) -> Vec<Job> {
    let of = parts.clamp(1, binaries.len().max(1));
    (0..kernels)
        .flat_map(|kernel| {
            (0..of).map(move |p| Job {
                kernel,
                part: Part { index: p + 1, of },
                binaries: binaries.iter().skip(p).step_by(of).cloned().collect(),
            })
        })
        .collect()
}

/// Boots every job, `args.parallel` at a time in order; one merged run per kernel, in order.
fn boot_all(
    args: &VmTestArgs,
    vm_dir: &Path,
    kernels: &[install::Kernel],
    binaries: &[TestBinary],
    shares: &Shares,
) -> Result<Vec<report::KernelRun>> {
    let jobs = jobs(kernels.len(), args.parts, binaries);
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<report::KernelRun>>>> =
        jobs.iter().map(|_| Mutex::new(None)).collect();
    let workers = args.parallel.clamp(1, jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = jobs.get(i) else {
                        break;
                    };
                    let run = boot_one(args, vm_dir, &kernels[job.kernel], job, shares);
                    *results[i].lock().expect("no boot thread panics holding it") = Some(run);
                }
            });
        }
    });
    let mut parts: Vec<Vec<report::KernelRun>> = kernels.iter().map(|_| Vec::new()).collect();
    for (job, result) in jobs.iter().zip(results) {
        let run = result
            .into_inner()
            .expect("no boot thread panics holding it")
            .expect("every job was booted")?;
        parts[job.kernel].push(run);
    }
    Ok(parts
        .into_iter()
        .map(|p| report::KernelRun::merge(p, binaries))
        .collect())
}

/// Boots one kernel, runs the job's test binaries in it and collects the results.
fn boot_one(
    args: &VmTestArgs,
    vm_dir: &Path,
    kernel: &install::Kernel,
    job: &Job,
    shares: &Shares,
) -> Result<report::KernelRun> {
    let mut libtest_args = vec!["--test-threads=1".to_owned()];
    libtest_args.extend(args.filter.clone());
    let binaries = &job.binaries;
    let stage2 = guest::Stage2 {
        kernel: &kernel.release,
        binaries,
        args: &libtest_args,
        panic_first: args.self_test_panic,
    };
    let name = format!("{}{}", kernel.release, job.part.suffix());
    let boot_once = || {
        boot_stage2(
            vm_dir,
            kernel,
            &name,
            &stage2,
            shares,
            &args.deadlines(),
            args.keep_workdir,
        )
    };
    let (mut work, mut boot) = boot_once()?;
    if let qemu::Outcome::QemuCrashed(why) = &boot.outcome {
        println!("vm: qemu crashed running {name} ({why}); booting it once more");
        (work, boot) = boot_once()?;
    }
    record_stage(
        &format!("vm-boot-{}{}", kernel.series, job.part.suffix()),
        boot.elapsed,
        boot.outcome == qemu::Outcome::Success,
    );
    let results = binaries
        .iter()
        .map(|b| report::read_binary(&work.path, &b.name))
        .collect::<Result<Vec<_>>>()?;
    if args.keep_workdir {
        println!("vm-test: work dir kept at {}", work.path.display());
    }
    Ok(report::KernelRun {
        series: kernel.series.clone(),
        kernel: kernel.release.clone(),
        boots: 1,
        boot,
        binaries: results,
    })
}

/// Boots `kernel` with a fresh work dir holding `stage2`'s script and the share list; returns
/// the work dir (with each binary's `output` and `exit`, removed on drop unless `keep`) and how
/// the boot ended.
fn boot_stage2(
    vm_dir: &Path,
    kernel: &install::Kernel,
    name: &str,
    stage2: &guest::Stage2<'_>,
    shares: &Shares,
    limits: &Deadlines,
    keep: bool,
) -> Result<(WorkDir, qemu::BootResult)> {
    let initrd = initramfs::ensure(vm_dir, kernel)?;
    let config = fs::read_to_string(format!("/boot/config-{}", kernel.release)).unwrap_or_default();
    let lsm = qemu::lsm_param(&config).unwrap_or_default();
    if !lsm.is_empty() {
        println!(
            "vm: {} boots with {lsm} (bpf is not in its default LSM list)",
            kernel.release
        );
    }
    let work = WorkDir::create(
        vm_dir.join(format!("work-{name}-{}", std::process::id())),
        keep,
    )?;
    fs::write(work.path.join(guest::STAGE2), guest::stage2_script(stage2))
        .context("writing stage2.sh")?;
    fs::write(work.path.join(shares::SHARES_FILE), shares.list_file())
        .context("writing the share list")?;
    let scratch = work.path.join(SCRATCH_IMAGE);
    create_scratch_disk(&scratch)?;
    println!(
        "vm: booting {name} (timeout {} s, {} vCPU{}, tcg thread={})",
        limits.timeout.as_secs(),
        limits.cpus.smp,
        if limits.cpus.smp == 1 { "" } else { "s" },
        if limits.cpus.multi_thread {
            "multi"
        } else {
            "single"
        }
    );
    // `6.12.117`, or `6.12.117-part1of2` when the kernel's binaries are split over boots.
    let tag = format!(
        "{}{}",
        short_tag(&kernel.release),
        name.strip_prefix(kernel.release.as_str()).unwrap_or("")
    );
    let boot = qemu::boot(&qemu::Boot {
        kernel: &kernel.image,
        initrd: &initrd,
        work_dir: &work.path,
        shares,
        cpus: limits.cpus,
        timeout: limits.timeout,
        stage2_timeout: limits.stage2,
        stall_timeout: limits.stall,
        tag: &tag,
        extra_cmdline: &lsm,
        scratch_disk: Some(&scratch),
    })?;
    println!(
        "vm: {name} exited after {:.1?}: {}",
        boot.elapsed, boot.outcome
    );
    Ok((work, boot))
}

/// The scratch disk's image in a boot's work dir (removed with it).
const SCRATCH_IMAGE: &str = "scratch.img";
/// Its size: room for a few seconds of reads at the tests' rates.
const SCRATCH_BYTES: u64 = 64 << 20;

/// A fresh sparse raw image of [`SCRATCH_BYTES`] (a raw image is the bytes of the disk: no
/// qemu-img needed). Its holes read as zeros, fast, so the guest's throttle is the bottleneck.
fn create_scratch_disk(path: &Path) -> Result<()> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.set_len(SCRATCH_BYTES)
        .with_context(|| format!("sizing {}", path.display()))
}

/// One program run in a distro kernel (for `cargo xtask bench`'s VM part).
pub struct ProgramRun {
    /// The kernel's release.
    pub kernel: String,
    /// The host side of the guest's `$CHAOSD_TEST_REPORT_DIR`: the program's `output` (its
    /// stdout and stderr), `exit` and whatever it wrote there. Removed on drop.
    pub report_dir: PathBuf,
    pub elapsed: Duration,
    /// Empty when the program exited 0; otherwise how the boot ended.
    pub failure: Option<String>,
    _work: WorkDir,
}

/// Boots the newest installed kernel of `series` (installing what is missing) to run
/// `program` with `args` as stage 2's only binary.
pub fn run_program(
    series: &str,
    program: &TestBinary,
    args: &[String],
    timeout: Duration,
) -> Result<ProgramRun> {
    let shares = Shares::detect(&workspace_root(), None)?;
    shares.check_visible(&program.executable)?;
    install::ensure_packages(&[series])?;
    let kernel = install::find_kernel(series)?;
    let stage2 = guest::Stage2 {
        kernel: &kernel.release,
        binaries: std::slice::from_ref(program),
        args,
        panic_first: false,
    };
    let vm_dir = workspace_root().join("target/vm");
    let limits = Deadlines::single(timeout);
    let (work, boot) = boot_stage2(
        &vm_dir,
        &kernel,
        &kernel.release,
        &stage2,
        &shares,
        &limits,
        false,
    )?;
    Ok(ProgramRun {
        kernel: kernel.release,
        report_dir: work.path.join(&program.name),
        elapsed: boot.elapsed,
        failure: (boot.outcome != qemu::Outcome::Success).then(|| boot.outcome.to_string()),
        _work: work,
    })
}

/// The console prefix of one kernel's lines: its version, e.g. `6.12.117`.
fn short_tag(release: &str) -> &str {
    release.split(['-', '+']).next().unwrap_or(release)
}

/// Per-boot work dir shared read-write with the guest; removed on drop unless kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn create(path: PathBuf, keep: bool) -> Result<Self> {
        if path.exists() {
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Builds the daemon binaries and the integration-test executables; returns the latter.
fn build_tests(args: &VmTestArgs) -> Result<Vec<TestBinary>> {
    let mut cmd = Command::new("cargo");
    cmd.args([
        "test",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    let package = match &args.test_manifest {
        Some(manifest) => {
            cmd.arg("--manifest-path").arg(manifest);
            None
        }
        None => {
            cargo(&["build", "--workspace", "--exclude", "chaosd-ebpf", "--bins"])?;
            // The whole workspace, as the host tests build it: `--package` alone resolves
            // features differently and rebuilds chaosd and the tests (minutes in CI).
            cmd.args(["--workspace", "--exclude", "chaosd-ebpf"]);
            Some("chaosd-integration")
        }
    };
    cmd.current_dir(workspace_root())
        .env("PATH", path_with_cargo_bin())
        .stderr(Stdio::inherit());
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    parse_test_artifacts(&String::from_utf8_lossy(&out.stdout), package)
}

/// `PATH` with the cargo bin dir first, as `util::run_cmd` sets it (build.rs needs bpf-linker).
fn path_with_cargo_bin() -> std::ffi::OsString {
    let mut paths = vec![cargo_bin_dir()];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).expect("PATH entries contain no ':'")
}

/// Test executables from cargo's JSON messages: compiler artifacts with `profile.test`.
/// With `package`, only that package's integration tests (not unit tests of other crates).
fn parse_test_artifacts(json_lines: &str, package: Option<&str>) -> Result<Vec<TestBinary>> {
    let mut binaries: Vec<TestBinary> = Vec::new();
    for line in json_lines.lines().filter(|l| l.starts_with('{')) {
        let msg: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("parsing cargo message {line}"))?;
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        if let Some(package) = package {
            let id = msg["package_id"].as_str().unwrap_or_default();
            let is_test_target = msg["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"));
            if !id.contains(package) || !is_test_target {
                continue;
            }
        }
        let Some(executable) = msg["executable"].as_str() else {
            continue;
        };
        let target = msg["target"]["name"].as_str().unwrap_or("test");
        let manifest = PathBuf::from(msg["manifest_path"].as_str().unwrap_or("/"));
        let mut name = target.replace(['/', ' '], "_");
        if binaries.iter().any(|b| b.name == name) {
            name = format!("{name}-{}", binaries.len());
        }
        // Canonical, as the shares are: the guest has no symlinks into a hidden /tmp.
        let executable = canonical(Path::new(executable));
        let cwd = canonical(manifest.parent().unwrap_or(Path::new("/")));
        binaries.push(TestBinary {
            name,
            executable,
            cwd,
        });
    }
    Ok(binaries)
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod parts_tests {
    use super::*;

    fn binary(name: &str) -> TestBinary {
        TestBinary {
            name: name.to_owned(),
            executable: PathBuf::from(format!("/x/{name}")),
            cwd: PathBuf::from("/x"),
        }
    }

    #[test]
    fn each_kernel_gets_every_binary_once_over_its_parts_in_kernel_order() {
        let bins: Vec<TestBinary> = ["a", "b", "c", "d", "e"].map(binary).to_vec();
        let jobs = jobs(2, 2, &bins);
        let names = |j: &Job| {
            j.binaries
                .iter()
                .map(|b| b.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            jobs.iter().map(|j| j.kernel).collect::<Vec<_>>(),
            [0, 0, 1, 1]
        );
        assert_eq!(names(&jobs[0]), ["a", "c", "e"]);
        assert_eq!(names(&jobs[1]), ["b", "d"]);
        assert_eq!(jobs[1].part.suffix(), "-part2of2");
        // More parts than binaries: one binary a boot, no empty boot.
        assert_eq!(super::jobs(1, 9, &bins[..2]).len(), 2);
        assert_eq!(super::jobs(1, 1, &bins)[0].part.suffix(), "");
    }

    #[test]
    fn merged_parts_read_as_one_kernel_run_that_fails_if_a_part_did() {
        let bins: Vec<TestBinary> = ["a", "b", "c"].map(binary).to_vec();
        let part = |names: &[&str], outcome: qemu::Outcome| report::KernelRun {
            series: "6.1".into(),
            kernel: "6.1.0-1-amd64".into(),
            boots: 1,
            boot: qemu::BootResult {
                outcome,
                elapsed: Duration::from_secs(10),
            },
            binaries: names
                .iter()
                .map(|n| report::BinaryResult {
                    name: (*n).to_owned(),
                    exit: Some(0),
                    tests: Vec::new(),
                })
                .collect(),
        };
        let run = report::KernelRun::merge(
            vec![
                part(&["a", "c"], qemu::Outcome::Success),
                part(&["b"], qemu::Outcome::TestsFailed),
            ],
            &bins,
        );
        assert_eq!(run.boots, 2);
        assert_eq!(run.boot.elapsed, Duration::from_secs(20));
        assert_eq!(run.boot.outcome, qemu::Outcome::TestsFailed);
        let order: Vec<&str> = run.binaries.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(order, ["a", "b", "c"]);
    }
}
