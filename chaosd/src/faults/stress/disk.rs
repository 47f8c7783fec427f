//! Disk faults in a directory.
//!
//! `disk.fill`: the daemon fallocates a file in `path`, `size` bytes or enough to make the
//! filesystem `percent` % used (as `df` counts it). The file is invisible (O_TMPFILE, or a
//! named file unlinked at once where the filesystem lacks O_TMPFILE) and held open by the
//! daemon, so its space comes back at revert *and* if chaosd dies. A request that would leave
//! less free than the safety floor (`[stress]` in the config: the larger of 5 % and 1 GiB by
//! default) is refused unless it says `allow_below_floor` and the config allows that.
//! Counters: `seen` is the bytes asked, `affected` the bytes the filesystem allocated.
//!
//! `disk.io`: a worker (in each target cgroup, or a cgroup of chaosd's own) reads and/or writes
//! a temporary file of up to 64 MiB in `path` in 1 MiB blocks, with O_DIRECT where the
//! filesystem supports it (else buffered, with fdatasync and cache drops), at `rate` if given.
//! The file is invisible too and gone when the worker ends. Counters: `seen` is the bytes the
//! workers read and wrote through syscalls (`rchar + wchar` of /proc/PID/io), `affected` the
//! bytes that reached the block layer (`read_bytes + write_bytes`; 0 on tmpfs).

use std::{ffi::OsString, fs::File, os::unix::fs::MetadataExt as _, path::Path, sync::Mutex};

use super::{Placement, StressConfig, Workers, deadline_ns, human_bytes, refused, worker_name};
use crate::{
    api::{Counters, DiskFillParams, DiskIoParams},
    error::{FaultError, RequestError},
    faults::{ActiveFault, ApplyContext},
};

/// Largest temporary file of a `disk.io` worker.
const IO_FILE_MAX: u64 = 64 << 20;

/// `path` must be an existing directory.
fn check_dir(path: &str) -> Result<&Path, RequestError> {
    let p = Path::new(path);
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Ok(p),
        Ok(_) => Err(RequestError::NotADirectory { path: path.into() }),
        Err(_) => Err(RequestError::PathNotFound { path: path.into() }),
    }
}

/// Space on the filesystem holding a directory, in bytes.
struct Space {
    /// Size of the filesystem.
    total: u64,
    /// Used, as df counts it.
    used: u64,
    /// Available to unprivileged writers.
    avail: u64,
}

fn space(dir: &Path) -> Result<Space, FaultError> {
    let s = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| FaultError::kernel("statvfs of the fill directory", e))?;
    let frsize = s.fragment_size();
    Ok(Space {
        total: s.blocks() * frsize,
        used: (s.blocks() - s.blocks_free()) * frsize,
        avail: s.blocks_available() * frsize,
    })
}

pub fn validate_fill(p: &DiskFillParams) -> Result<(), RequestError> {
    check_dir(&p.path)?;
    match (&p.size, p.percent) {
        (Some(_), None) => Ok(()),
        (None, Some(pct)) if pct > 0.0 && pct <= 100.0 => Ok(()),
        (None, Some(pct)) => Err(RequestError::PercentOutOfRange { value: pct }),
        _ => Err(RequestError::ExactlyOneOf {
            kind: "disk.fill",
            a: "size",
            b: "percent",
        }),
    }
}

/// Bytes to allocate for `p` on a filesystem with `sp`, refused if it crosses the floor.
fn fill_bytes(cfg: &StressConfig, p: &DiskFillParams, sp: &Space) -> Result<u64, RequestError> {
    let bytes = match (&p.size, p.percent) {
        (Some(s), None) => s.get().0,
        (None, Some(pct)) => {
            let capacity = sp.used + sp.avail;
            let want = (capacity as f64 * pct / 100.0) as u64;
            if want <= sp.used {
                return Err(RequestError::AlreadyFull {
                    path: p.path.clone(),
                    used_percent: 100.0 * sp.used as f64 / capacity.max(1) as f64,
                    asked: pct,
                });
            }
            want - sp.used
        }
        _ => {
            return Err(RequestError::ExactlyOneOf {
                kind: "disk.fill",
                a: "size",
                b: "percent",
            });
        }
    };
    let floor = cfg.floor_bytes(sp.total);
    let left = sp.avail.saturating_sub(bytes);
    let allowed = p.allow_below_floor && cfg.allow_below_floor;
    if (left < floor || bytes > sp.avail) && !allowed {
        return Err(RequestError::BelowFloor {
            path: p.path.clone(),
            asked: human_bytes(bytes),
            free: human_bytes(sp.avail),
            floor: human_bytes(floor),
            request_allows: p.allow_below_floor,
        });
    }
    Ok(bytes)
}

pub fn apply_fill(
    cfg: &StressConfig,
    p: &DiskFillParams,
    _ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    validate_fill(p).map_err(refused)?;
    let dir = Path::new(&p.path);
    let bytes = fill_bytes(cfg, p, &space(dir)?).map_err(refused)?;
    let file = super::worker::open_temp(dir)
        .map_err(|e| FaultError::kernel("creating the fill file", e))?;
    nix::fcntl::fallocate(
        &file,
        nix::fcntl::FallocateFlags::empty(),
        0,
        i64::try_from(bytes).unwrap_or(i64::MAX),
    )
    .map_err(|e| FaultError::kernel("fallocate of the fill file", e))?;
    tracing::info!(path = p.path, bytes, "disk.fill allocated");
    Ok(Box::new(DiskFill {
        file: Mutex::new(Some(file)),
        asked: bytes,
        allocated: Mutex::new(0),
    }))
}

struct DiskFill {
    file: Mutex<Option<File>>,
    asked: u64,
    allocated: Mutex<u64>,
}

impl ActiveFault for DiskFill {
    fn counters(&self) -> Counters {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let mut allocated = self.allocated.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = file.as_ref()
            && let Ok(m) = f.metadata()
        {
            *allocated = m.blocks() * 512;
        }
        Counters {
            seen: self.asked,
            affected: *allocated,
        }
    }

    /// Closing the only descriptor of the unlinked file frees its space.
    fn revert(&mut self) -> Result<(), FaultError> {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(())
    }
}

impl Drop for DiskFill {
    fn drop(&mut self) {
        let _ = self.revert();
    }
}

pub fn validate_io(p: &DiskIoParams) -> Result<(), RequestError> {
    check_dir(&p.path).map(drop)
}

pub fn apply_io(
    cfg: &StressConfig,
    p: &DiskIoParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    validate_io(p).map_err(refused)?;
    let rate = p.rate.as_ref().map(|r| r.get().0);
    let sp = space(Path::new(&p.path))?;
    let floor = cfg.floor_bytes(sp.total);
    let room = sp.avail.saturating_sub(floor);
    let file_size = room.min(IO_FILE_MAX) & !((1 << 20) - 1);
    if file_size == 0 {
        return Err(refused(RequestError::BelowFloor {
            path: p.path.clone(),
            asked: human_bytes(1 << 20),
            free: human_bytes(sp.avail),
            floor: human_bytes(floor),
            request_allows: false,
        }));
    }
    let placement = Placement::for_targets(ctx.targets, "io")?;
    let mut args: Vec<OsString> = vec![
        "--until-monotonic-ns".into(),
        deadline_ns(ctx.duration).to_string().into(),
        "io".into(),
        "--dir".into(),
        p.path.clone().into(),
        "--mode".into(),
        p.mode.as_str().into(),
        "--file-size".into(),
        file_size.to_string().into(),
    ];
    if let Some(r) = rate {
        args.push("--rate".into());
        args.push(r.to_string().into());
    }
    let name = worker_name("disk io", ctx.fault_id);
    let workers = Workers::start(placement, 1, &name, &args)?;
    Ok(Box::new(DiskIo {
        pids: workers.pids(),
        workers,
        last: Mutex::new(Counters::default()),
    }))
}

/// (rchar + wchar, read_bytes + write_bytes) of a process.
fn proc_io(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Some((
        field("rchar:") + field("wchar:"),
        field("read_bytes:") + field("write_bytes:"),
    ))
}

struct DiskIo {
    workers: Workers,
    pids: Vec<u32>,
    last: Mutex<Counters>,
}

impl ActiveFault for DiskIo {
    fn counters(&self) -> Counters {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now: Option<Vec<(u64, u64)>> = self.pids.iter().map(|p| proc_io(*p)).collect();
        if let Some(now) = now {
            *last = Counters {
                seen: now.iter().map(|x| x.0).sum(),
                affected: now.iter().map(|x| x.1).sum(),
            };
        }
        *last
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        self.workers.stop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(size: Option<&str>, percent: Option<f64>) -> DiskFillParams {
        DiskFillParams {
            path: "/tmp".into(),
            size: size.map(|s| s.parse().unwrap()),
            percent,
            allow_below_floor: false,
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn fill_respects_the_floor_and_percent_means_used_share() {
        let cfg = StressConfig {
            disk_floor_percent: 5.0,
            disk_floor: MIB,
            allow_below_floor: false,
        };
        let sp = Space {
            total: 100 * MIB,
            used: 10 * MIB,
            avail: 90 * MIB,
        };
        assert_eq!(
            fill_bytes(&cfg, &fill(Some("20MiB"), None), &sp).unwrap(),
            20 * MIB
        );
        assert_eq!(
            fill_bytes(&cfg, &fill(None, Some(50.0)), &sp).unwrap(),
            40 * MIB
        );
        assert!(matches!(
            fill_bytes(&cfg, &fill(Some("86MiB"), None), &sp),
            Err(RequestError::BelowFloor { .. })
        ));
        assert!(matches!(
            fill_bytes(&cfg, &fill(None, Some(5.0)), &sp),
            Err(RequestError::AlreadyFull { .. })
        ));
        // The request alone cannot cross the floor; with the config's consent it can.
        let mut below = fill(Some("88MiB"), None);
        below.allow_below_floor = true;
        assert!(fill_bytes(&cfg, &below, &sp).is_err());
        let lax = StressConfig {
            allow_below_floor: true,
            ..cfg
        };
        assert_eq!(fill_bytes(&lax, &below, &sp).unwrap(), 88 * MIB);
    }

    #[test]
    fn fill_needs_an_existing_directory_and_one_amount() {
        let mut p = fill(Some("1MiB"), None);
        p.path = "/nonexistent-chaosd-dir".into();
        assert!(matches!(
            validate_fill(&p),
            Err(RequestError::PathNotFound { .. })
        ));
        p.path = "/proc/self/status".into();
        assert!(matches!(
            validate_fill(&p),
            Err(RequestError::NotADirectory { .. })
        ));
        assert!(matches!(
            validate_fill(&fill(None, None)),
            Err(RequestError::ExactlyOneOf { .. })
        ));
        assert!(validate_fill(&fill(None, Some(95.0))).is_ok());
    }
}
