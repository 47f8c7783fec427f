//! A program's own time per packet, without the accounting's overhead: `BPF_PROG_TEST_RUN`
//! runs a loaded program on one synthetic packet many times and reports the mean per run.
//!
//! Run-time statistics time every run with two clock reads, which on this host weigh more
//! than chaosd's untargeted path itself. So an empty program of the same type is loaded and
//! measured the same way, as the floor: chaosd's figure minus the empty one's is what its
//! code adds. The test-run socket belongs to the calling process's cgroup, so the run is
//! untargeted, or targeted when the bench stands in the target cgroup.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use anyhow::{Context as _, Result, bail};

/// bpf(2) commands and the program type (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;

/// Runs per measurement: enough that the mean's resolution (1 ns) is far below the figure.
pub const REPEAT: u32 = 1_000_000;

/// `union bpf_attr` for BPF_PROG_TEST_RUN, up to `cpu`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: attr is a live bpf_attr prefix of the size passed; the kernel zero-extends it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// A descriptor of the loaded program `id`.
pub fn program_by_id(id: u32) -> Result<OwnedFd> {
    let mut attr = [id, 0, 0];
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)
        .with_context(|| format!("BPF_PROG_GET_FD_BY_ID {id}"))?;
    Ok(owned(fd))
}

/// The empty program's kernel name.
pub const EMPTY_PROGRAM_NAME: &str = "bench_noop";

/// A cgroup_skb program that only returns "pass": the floor of a run.
pub fn empty_cgroup_skb() -> Result<OwnedFd> {
    // r0 = 1; exit
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0x00, 0, 0, 1, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = CString::new("GPL").expect("no NUL");
    let mut name = [0u8; 16];
    name[..EMPTY_PROGRAM_NAME.len()].copy_from_slice(EMPTY_PROGRAM_NAME.as_bytes());
    let mut attr = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_SKB,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr).context("BPF_PROG_LOAD of an empty cgroup_skb")?;
    Ok(owned(fd))
}

/// Attach types (enum bpf_attach_type).
pub const BPF_CGROUP_INET_INGRESS: u32 = 0;
pub const BPF_CGROUP_INET_EGRESS: u32 = 1;

/// `union bpf_attr` for BPF_LINK_CREATE, up to `flags`.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// Links `prog` to the cgroup at `dir` for `attach_type`. The link is the returned fd: the
/// program is detached when it closes, also when the bench dies.
pub fn link_to_cgroup(prog: &OwnedFd, dir: &Path, attach_type: u32) -> Result<OwnedFd> {
    let cgroup = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        flags: 0,
    };
    let fd = bpf(BPF_LINK_CREATE, &mut attr)
        .with_context(|| format!("BPF_LINK_CREATE of the empty program on {}", dir.display()))?;
    Ok(owned(fd))
}

/// An IPv4 TCP segment from 10.200.0.1:40000 to 10.200.0.2:5201 behind an Ethernet header
/// (the test run strips it for cgroup_skb), 64 bytes of payload.
pub fn tcp_packet() -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let total: u16 = 20 + 20 + 64;
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0, 10, 200, 0, 1, 10, 200, 0, 2]);
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&5201u16.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend(std::iter::repeat_n(0xab, 64));
    p
}

/// The mean ns per run of `prog` on `packet` over `repeat` runs, and the program's verdict.
pub fn ns_per_run(prog: &OwnedFd, packet: &[u8], repeat: u32) -> Result<(u32, u32)> {
    let mut out = vec![0u8; packet.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: packet.len() as u32,
        data_size_out: out.len() as u32,
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN")?;
    Ok((attr.duration, attr.retval))
}

/// While alive, this process stands in another cgroup; back where it was on drop.
pub struct InCgroup {
    home: std::path::PathBuf,
}

impl InCgroup {
    /// Moves the whole process (a domain cgroup takes no single threads) into `dir`.
    pub fn enter(dir: &Path) -> Result<InCgroup> {
        let line = std::fs::read_to_string("/proc/self/cgroup").context("/proc/self/cgroup")?;
        let Some(rel) = line.lines().find_map(|l| l.strip_prefix("0::")) else {
            bail!("this process is in no cgroup2 cgroup");
        };
        let mount = super::cgroup::cgroup2_mount()?;
        let home = mount.join(rel.trim_start_matches('/'));
        write_pid(dir)?;
        Ok(InCgroup { home })
    }
}

fn write_pid(dir: &Path) -> Result<()> {
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
        .with_context(|| format!("moving the bench into {}", dir.display()))
}

impl Drop for InCgroup {
    fn drop(&mut self) {
        if let Err(e) = write_pid(&self.home) {
            eprintln!(
                "bench: could not move back to {}: {e:#}",
                self.home.display()
            );
        }
    }
}
