//! What this host can inject, and why not: `GET /v1/capabilities` and `chaosctl doctor`.
//!
//! Facts about the host (BTF, active LSMs, lockdown, cgroup2, qdisc modules) are read once at
//! daemon start. Program loads are probes: a kind's programs load the first time it is
//! injected or `doctor` asks ([`crate::faults::kernel::Kernel::ensure`]), and the outcome is recorded
//! here ([`record_probe`]: e.g. why the kernel refused the BPF LSM programs). The table has one
//! row per fault kind (from [`crate::faults::kinds::KINDS`]): its check turns the facts into "supported" or a [`Problem`] with the
//! exact reason and the fix, and its program group's probe must have passed. An inject of an
//! unsupported kind is refused with that same reason ([`require`]), before anything is applied.
//!
//! The kinds, their host checks and program groups are listed once, in [`crate::faults::kinds::KINDS`].

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Mutex, OnceLock},
};

use serde::{Deserialize, Serialize};

pub use crate::api::capabilities::{CapabilitiesInfo, HostCheck, KindCapability, KindLimit};
use crate::{error::RequestError, faults::kernel::ProgramGroup};

/// Why something cannot work here, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub reason: String,
    pub fix: String,
}

impl Problem {
    pub fn new(reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Problem {
            reason: reason.into(),
            fix: fix.into(),
        }
    }
}

/// Probe names: one per [`ProgramGroup`] (see [`record_probe`]).
pub const PROBE_BPF_LSM: &str = "bpf_lsm";
/// Loading the cgroup_skb packet programs of loss, partition, delay and bandwidth.
pub const PROBE_PACKET: &str = "packet";
/// Loading the cgroup sock_addr programs (with `bpf_set_retval`, 5.19+, else EPERM only).
pub const PROBE_CONNECT_ERROR: &str = "connect_error";
/// Loading the TC egress classifier of corrupt and duplicate.
pub const PROBE_TC_CLASSIFIER: &str = "tc_classifier";
/// Loading the proxy's connect4, getpeername4 and sock_ops programs (`tcp.*`).
pub const PROBE_PROXY: &str = "proxy";
/// Loading the DNS faults' sendmsg4/6 and recvmsg4/6 programs (on top of the proxy's).
pub const PROBE_DNS: &str = "dns";
/// Loading clock.skew's `tp_btf/sched_process_exec` program.
pub const PROBE_CLOCK_EXEC: &str = "clock_exec";

/// What was found about the host at daemon start.
#[derive(Clone, Debug)]
pub struct Facts {
    pub kernel: String,
    pub cgroup2: Result<String, Problem>,
    pub btf: Result<(), Problem>,
    /// Contents of /sys/kernel/security/lsm (None: securityfs not readable).
    pub lsm: Option<String>,
    /// The selected lockdown mode (None: no lockdown LSM or securityfs not readable).
    pub lockdown: Option<String>,
    pub sch_fq: Result<(), Problem>,
    /// The cgroup v2 freezer (cgroup.freeze), for process.pause.
    pub freezer: Result<(), Problem>,
    /// The controllers of the cgroup2 hierarchy (its root's `cgroup.controllers`): the
    /// resource kinds need theirs there (on a hybrid host they may be on cgroup v1 instead).
    pub controllers: Vec<String>,
    /// Results of load-time probes recorded by the kinds.
    pub probes: BTreeMap<String, Result<(), Problem>>,
    /// Limits found by probes that passed (by probe name): see [`record_limit`].
    pub limits: BTreeMap<String, Problem>,
}

static PROBES: Mutex<BTreeMap<String, Result<(), Problem>>> = Mutex::new(BTreeMap::new());
static LIMITS: Mutex<BTreeMap<String, Problem>> = Mutex::new(BTreeMap::new());

fn limits() -> std::sync::MutexGuard<'static, BTreeMap<String, Problem>> {
    LIMITS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records that probe `name` loaded programs that do less than the kind's full range (the
/// kind's row stays supported and shows the limit; requests beyond it are refused).
pub fn record_limit(name: &str, limit: Problem) {
    limits().insert(name.to_string(), limit);
}

/// The limit probe `name` recorded, if any.
pub fn limit(name: &str) -> Option<Problem> {
    limits().get(name).cloned()
}
static HOST_FACTS: OnceLock<Facts> = OnceLock::new();

fn probes() -> std::sync::MutexGuard<'static, BTreeMap<String, Result<(), Problem>>> {
    PROBES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records the result of a probe (loading a program group) for the kinds' checks.
pub fn record_probe(name: &str, result: Result<(), Problem>) {
    probes().insert(name.to_string(), result);
}

/// What probe `name` found, if it ran.
pub fn probe_result(name: &str) -> Option<Result<(), Problem>> {
    probes().get(name).cloned()
}

/// Reads the host facts once (at daemon start); probes come in as the kinds load.
pub fn init() -> &'static Facts {
    HOST_FACTS.get_or_init(Facts::gather)
}

/// The table from the host facts and the probes run so far.
pub fn current() -> CapabilitiesInfo {
    let mut facts = init().clone();
    facts.probes = probes().clone();
    facts.limits = limits().clone();
    evaluate(&facts)
}

/// Refuses a kind this host cannot run, with the reason and the fix. Its programs must have
/// been probed first ([`crate::faults::kernel::Kernel::ensure`]).
pub fn require(kind: &str) -> Result<(), RequestError> {
    match current().kind(kind) {
        Some(k) if !k.supported => Err(RequestError::Unsupported {
            kind: kind.to_string(),
            reason: k.reason.clone().unwrap_or_default(),
            fix: k.fix.clone().unwrap_or_default(),
        }),
        _ => Ok(()),
    }
}

pub fn evaluate(facts: &Facts) -> CapabilitiesInfo {
    let kinds = crate::faults::kinds::KINDS
        .iter()
        .map(|row| {
            let result = (row.host_check)(facts).and_then(|()| match row.programs {
                Some(group) => recorded_probe(facts, group),
                None => Ok(()),
            });
            let limit = match (&result, row.programs) {
                (Ok(()), Some(group)) => facts.limits.get(group.probe_name()).map(|p| KindLimit {
                    reason: p.reason.clone(),
                    fix: p.fix.clone(),
                }),
                _ => None,
            };
            KindCapability {
                kind: row.name.to_string(),
                summary: row.summary.to_string(),
                limit,
                supported: result.is_ok(),
                reason: result.as_ref().err().map(|p| p.reason.clone()),
                fix: result.err().map(|p| p.fix),
            }
        })
        .collect();
    CapabilitiesInfo {
        kernel: facts.kernel.clone(),
        kinds,
        host: facts.host_checks(),
    }
}

impl Facts {
    pub fn gather() -> Facts {
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let cgroup2 = crate::host::cgroup::cgroup2_mount()
            .map(|p| p.display().to_string())
            .map_err(|_| {
                Problem::new(
                    "no cgroup2 filesystem is mounted (looked in /proc/self/mountinfo)",
                    "mount one: `mount -t cgroup2 none /sys/fs/cgroup` (or boot with systemd.unified_cgroup_hierarchy=1)",
                )
            });
        let btf = if Path::new(crate::faults::io::btf::VMLINUX_BTF).exists() {
            Ok(())
        } else {
            Err(no_btf())
        };
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
        };
        let lsm = read("/sys/kernel/security/lsm");
        let lockdown = read("/sys/kernel/security/lockdown").and_then(|s| selected_lockdown(&s));
        let freezer = match crate::host::cgroup::cgroup2_mount() {
            Ok(mount) => probe_freezer(&mount, &kernel),
            Err(_) => Err(Problem::new(
                "no cgroup2 filesystem is mounted",
                "mount one (see the cgroup2 row)",
            )),
        };
        let controllers = crate::host::cgroup::cgroup2_mount()
            .ok()
            .and_then(|m| std::fs::read_to_string(m.join("cgroup.controllers")).ok())
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        Facts {
            sch_fq: qdisc_module_available(&kernel, "sch_fq"),
            freezer,
            controllers,
            kernel,
            cgroup2,
            btf,
            lsm,
            lockdown,
            probes: BTreeMap::new(),
            limits: BTreeMap::new(),
        }
    }

    /// BPF LSM is in the active LSM list (None: unknown, securityfs not readable).
    pub fn bpf_lsm_active(&self) -> Option<bool> {
        self.lsm
            .as_ref()
            .map(|l| l.split(',').any(|m| m.trim() == "bpf"))
    }

    /// A problem if BPF LSM is known to be inactive, or kernel memory reads are locked down.
    pub fn bpf_lsm_static_problem(&self) -> Option<Problem> {
        if let Err(p) = &self.cgroup2 {
            return Some(p.clone());
        }
        if let Err(p) = &self.btf {
            return Some(p.clone());
        }
        if self.bpf_lsm_active() == Some(false) {
            return Some(Problem::new(
                format!(
                    "BPF LSM is not active: /sys/kernel/security/lsm is \"{}\"",
                    self.lsm.as_deref().unwrap_or_default()
                ),
                format!(
                    "add bpf to the kernel command line's LSM list, e.g. `lsm={},bpf` (needs CONFIG_BPF_LSM=y), and reboot",
                    self.lsm
                        .as_deref()
                        .unwrap_or("landlock,lockdown,yama,integrity,apparmor")
                ),
            ));
        }
        if self.lockdown.as_deref() == Some("confidentiality") {
            return Some(Problem::new(
                "kernel lockdown is in confidentiality mode: BPF programs may not read kernel memory (bpf_probe_read_kernel), which path filters need",
                "boot with `lockdown=integrity` (or none), or disable Secure Boot's lockdown policy",
            ));
        }
        None
    }

    fn host_checks(&self) -> Vec<HostCheck> {
        let mut out = Vec::new();
        let mut push = |name: &str, ok: bool, detail: String| {
            out.push(HostCheck {
                name: name.to_string(),
                ok,
                detail,
            })
        };
        match &self.cgroup2 {
            Ok(m) => push("cgroup2", true, format!("mounted at {m}")),
            Err(p) => push("cgroup2", false, p.reason.clone()),
        }
        match &self.btf {
            Ok(()) => push("btf", true, crate::faults::io::btf::VMLINUX_BTF.to_string()),
            Err(p) => push("btf", false, p.reason.clone()),
        }
        match (self.bpf_lsm_active(), &self.lsm) {
            (Some(active), Some(l)) => push("bpf_lsm_active", active, format!("lsm={l}")),
            _ => push(
                "bpf_lsm_active",
                false,
                "unknown: /sys/kernel/security/lsm is not readable (securityfs not mounted?)"
                    .into(),
            ),
        }
        match (&self.lockdown, &self.lsm) {
            (Some(mode), _) => push("lockdown", mode != "confidentiality", mode.clone()),
            (None, Some(_)) => push("lockdown", true, "no lockdown LSM".into()),
            (None, None) => push(
                "lockdown",
                true,
                "unknown: /sys/kernel/security is not readable".into(),
            ),
        }
        match &self.sch_fq {
            Ok(()) => push("sch_fq", true, "qdisc available".into()),
            Err(p) => push("sch_fq", false, p.reason.clone()),
        }
        for (name, result) in &self.probes {
            match (result, self.limits.get(name)) {
                (Ok(()), Some(limit)) => push(
                    &format!("probe:{name}"),
                    true,
                    format!("loaded, limited: {}", limit.reason),
                ),
                (Ok(()), None) => push(&format!("probe:{name}"), true, "loaded".into()),
                (Err(p), _) => push(&format!("probe:{name}"), false, p.reason.clone()),
            }
        }
        out
    }
}

fn no_btf() -> Problem {
    Problem::new(
        format!(
            "the kernel has no BTF ({} is missing)",
            crate::faults::io::btf::VMLINUX_BTF
        ),
        "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every major distro's generic kernel is)",
    )
}

/// "none [integrity] confidentiality" → "integrity".
fn selected_lockdown(s: &str) -> Option<String> {
    let start = s.find('[')?;
    let end = s[start..].find(']')? + start;
    Some(s[start + 1..end].to_string())
}

/// Whether a qdisc module is loaded, built in, or installed for this kernel. A static check:
/// kinds that need certainty should also record a probe (creating the qdisc).
pub fn qdisc_module_available(kernel: &str, module: &str) -> Result<(), Problem> {
    if Path::new("/sys/module").join(module).exists() {
        return Ok(());
    }
    let dir = Path::new("/lib/modules").join(kernel);
    let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    if builtin
        .lines()
        .any(|l| l.ends_with(&format!("/{module}.ko")))
    {
        return Ok(());
    }
    let sched = dir.join("kernel/net/sched");
    let installed = std::fs::read_dir(&sched)
        .map(|d| {
            d.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{module}.ko"))
            })
        })
        .unwrap_or(false);
    if installed {
        Ok(())
    } else {
        Err(Problem::new(
            format!(
                "the {module} qdisc is neither built in, loaded, nor installed as a module for kernel {kernel}"
            ),
            format!(
                "use a kernel with CONFIG_NET_SCH_{}=y or =m (and its modules installed)",
                module.trim_start_matches("sch_").to_uppercase()
            ),
        ))
    }
}

pub(crate) fn check_cgroup_bpf(f: &Facts) -> Result<(), Problem> {
    f.cgroup2.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// Departure times are honoured only by sch_fq, which chaosd installs on the devices.
pub(crate) fn check_departure_time(f: &Facts) -> Result<(), Problem> {
    check_cgroup_bpf(f)?;
    f.sch_fq.clone()
}

pub(crate) fn check_nothing(_: &Facts) -> Result<(), Problem> {
    Ok(())
}

/// The cgroup v2 freezer (5.2+): non-root cgroups have a `cgroup.freeze` file.
pub(crate) fn check_freezer(f: &Facts) -> Result<(), Problem> {
    check_cgroup_bpf(f)?;
    f.freezer.clone()
}

/// Whether some non-root cgroup of the mount has `cgroup.freeze`; with no child cgroup to
/// look at, whether the kernel is 5.2 or newer.
fn probe_freezer(mount: &Path, kernel: &str) -> Result<(), Problem> {
    let has_child = std::fs::read_dir(mount)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.path().join("cgroup.freeze").exists())
                .collect::<Vec<bool>>()
        })
        .unwrap_or_default();
    let found = match has_child.as_slice() {
        [] => aya::util::KernelVersion::current()
            .is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 2, 0)),
        children => children.iter().any(|&b| b),
    };
    if found {
        Ok(())
    } else {
        Err(Problem::new(
            format!(
                "the cgroup2 hierarchy at {} has no freezer: no cgroup.freeze in its cgroups (kernel {kernel})",
                mount.display()
            ),
            "process.pause needs the cgroup v2 freezer: run a kernel 5.2 or newer",
        ))
    }
}

/// What loading `group`'s programs found; a problem if they were not loaded yet.
fn recorded_probe(f: &Facts, group: ProgramGroup) -> Result<(), Problem> {
    f.probes
        .get(group.probe_name())
        .cloned()
        .unwrap_or_else(|| {
            Err(Problem::new(
                format!(
                    "its programs ({}) are not loaded yet: they load on first use",
                    group.probe_name()
                ),
                "run `chaosctl doctor`, which loads every program group, or inject the fault",
            ))
        })
}

pub(crate) fn check_clock_skew(f: &Facts) -> Result<(), Problem> {
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").unwrap_or_default();
    if yama.trim() == "3" {
        return Err(Problem::new(
            "Yama forbids every ptrace attach (kernel.yama.ptrace_scope = 3), which clock skew patches processes with",
            "reboot with a lower kernel.yama.ptrace_scope (3 cannot be lowered at run time)",
        ));
    }
    check_clock_skew_on(std::env::consts::ARCH, f)
}

/// x86_64 only (the detour is x86-64 code), plus the exec hook's probe.
fn check_clock_skew_on(arch: &str, f: &Facts) -> Result<(), Problem> {
    if arch != "x86_64" {
        return Err(Problem::new(
            format!("clock skew patches x86-64 vDSO code; this host is {arch}"),
            "run chaosd on an x86_64 host",
        ));
    }
    check_cgroup_bpf(f)
}

/// The cgroup2 hierarchy offers `controller` (the resource kinds write its knobs).
fn check_controller(f: &Facts, controller: &str) -> Result<(), Problem> {
    let mount = f.cgroup2.as_ref().map_err(Clone::clone)?;
    if f.controllers.iter().any(|c| c == controller) {
        return Ok(());
    }
    Err(Problem::new(
        format!(
            "the cgroup2 hierarchy at {mount} has no {controller} controller (its cgroup.controllers: \"{}\"); on a hybrid host it is on cgroup v1",
            f.controllers.join(" ")
        ),
        format!(
            "boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2 only), or free it from v1 with cgroup_no_v1={controller}"
        ),
    ))
}

pub(crate) fn check_cpu_controller(f: &Facts) -> Result<(), Problem> {
    check_controller(f, "cpu")
}

pub(crate) fn check_memory_controller(f: &Facts) -> Result<(), Problem> {
    check_controller(f, "memory")
}

pub(crate) fn check_pids_controller(f: &Facts) -> Result<(), Problem> {
    check_controller(f, "pids")
}

pub(crate) fn check_io_controller(f: &Facts) -> Result<(), Problem> {
    check_controller(f, "io")
}

pub(crate) fn check_bpf_lsm(f: &Facts) -> Result<(), Problem> {
    match f.bpf_lsm_static_problem() {
        Some(p) => Err(p),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            kernel: "6.12.0".into(),
            cgroup2: Ok("/sys/fs/cgroup".into()),
            btf: Ok(()),
            lsm: Some("lockdown,capability,landlock,bpf".into()),
            lockdown: Some("none".into()),
            sch_fq: Ok(()),
            freezer: Ok(()),
            controllers: vec!["cpu".into(), "pids".into()],
            probes: BTreeMap::from([
                (PROBE_BPF_LSM.to_string(), Ok(())),
                (PROBE_PACKET.to_string(), Ok(())),
            ]),
            limits: BTreeMap::new(),
        }
    }

    #[test]
    fn io_needs_active_bpf_lsm_and_a_successful_probe() {
        assert!(evaluate(&facts()).kind("io.errno").unwrap().supported);

        let mut f = facts();
        f.lsm = Some("lockdown,capability,apparmor".into());
        let k = evaluate(&f).kind("io.errno").unwrap().clone();
        assert!(!k.supported);
        assert!(
            k.fix
                .unwrap()
                .contains("lsm=lockdown,capability,apparmor,bpf")
        );

        let mut f = facts();
        f.probes.insert(
            PROBE_BPF_LSM.into(),
            Err(Problem::new("refused (EPERM)", "another kernel")),
        );
        let k = evaluate(&f).kind("io.errno").unwrap().clone();
        assert_eq!(k.reason.as_deref(), Some("refused (EPERM)"));
        assert!(evaluate(&f).kind("net.loss").unwrap().supported);

        let mut f = facts();
        f.lockdown = Some("confidentiality".into());
        assert!(!evaluate(&f).kind("io.errno").unwrap().supported);
    }

    #[test]
    fn clock_skew_needs_x86_64_and_its_exec_hook() {
        let mut f = facts();
        f.probes.insert(PROBE_CLOCK_EXEC.into(), Ok(()));
        assert!(check_clock_skew_on("x86_64", &f).is_ok());
        let p = check_clock_skew_on("aarch64", &f).unwrap_err();
        assert!(p.reason.contains("aarch64"), "{p:?}");
        if cfg!(target_arch = "x86_64") && evaluate(&f).kind("clock.skew").unwrap().supported {
            f.probes.remove(PROBE_CLOCK_EXEC);
            let k = evaluate(&f).kind("clock.skew").unwrap().clone();
            assert!(!k.supported);
            assert!(k.reason.unwrap().contains("not loaded yet"));
        }
    }

    #[test]
    fn every_program_group_has_a_kind_and_an_unloaded_group_is_no_support() {
        for group in ProgramGroup::ALL {
            assert!(
                crate::faults::kinds::KINDS
                    .iter()
                    .any(|r| r.programs == Some(group)),
                "{group:?} serves no kind"
            );
        }
        let mut f = facts();
        f.probes.remove(PROBE_PACKET);
        assert!(!evaluate(&f).kind("net.loss").unwrap().supported);
        assert!(evaluate(&f).kind("disk.fill").unwrap().supported);
    }

    #[test]
    fn a_limit_keeps_the_kind_supported_and_shows_why_and_the_fix() {
        let mut f = facts();
        f.probes.insert(PROBE_CONNECT_ERROR.into(), Ok(()));
        assert_eq!(evaluate(&f).kind("net.connect_error").unwrap().limit, None);
        f.limits.insert(
            PROBE_CONNECT_ERROR.into(),
            crate::faults::net::eperm_only_limit("unknown func bpf_set_retval#187"),
        );
        let k = evaluate(&f).kind("net.connect_error").unwrap().clone();
        assert!(k.supported);
        let limit = k.limit.unwrap();
        assert!(limit.reason.contains("bpf_set_retval"), "{limit:?}");
        assert!(limit.fix.contains("EPERM"), "{limit:?}");
        assert_eq!(evaluate(&f).kind("net.loss").unwrap().limit, None);
    }

    #[test]
    fn pause_needs_the_freezer() {
        let mut f = facts();
        assert!(evaluate(&f).kind("process.pause").unwrap().supported);
        f.freezer = Err(Problem::new("no freezer", "a newer kernel"));
        let k = evaluate(&f).kind("process.pause").unwrap().clone();
        assert_eq!(k.reason.as_deref(), Some("no freezer"));
    }

    #[test]
    fn resource_kinds_need_their_controller_in_the_cgroup2_hierarchy() {
        let f = facts();
        assert!(check_cpu_controller(&f).is_ok());
        assert!(check_pids_controller(&f).is_ok());
        let p = check_memory_controller(&f).unwrap_err();
        assert!(p.reason.contains("no memory controller"), "{}", p.reason);
        assert!(p.fix.contains("cgroup_no_v1=memory"), "{}", p.fix);
        let p = check_io_controller(&f).unwrap_err();
        assert!(p.reason.contains("no io controller"), "{}", p.reason);
    }

    #[test]
    fn lockdown_mode_is_the_bracketed_one() {
        assert_eq!(
            selected_lockdown("none [integrity] confidentiality").as_deref(),
            Some("integrity")
        );
        assert_eq!(selected_lockdown("none integrity"), None);
    }
}
