//! `io.throttle`: caps the targets' block I/O to one disk with `io.max` (blk-throttle):
//! `MAJ:MIN rbps= wbps= riops= wiops=`, a limit left out being `max`. The kernel delays the
//! cgroup's bios to that disk beyond the rates; page-cache hits never reach it and are not
//! slowed. `affected` counts the I/Os the targets did on the disk since the fault began
//! (`io.stat` `rios` + `wios`).
//!
//! `io.max` takes whole disks only (a partition is refused with ENODEV), so a path or
//! device on a partition stands for its disk. A path on a filesystem without a block device
//! of its own (tmpfs, overlayfs, btrfs, NFS, 9p, FUSE: an anonymous device, major 0) is
//! refused: name the disk with `device`. A device-mapper or md device is a disk here: its
//! limit applies where the cgroup's bios enter it, not on the disks below.
//!
//! The `io` controller must be enabled in every ancestor's `cgroup.subtree_control` for the
//! target to have an `io.max`: the ancestors that lack it get `+io`, root first, journaled
//! like a knob and turned off again at the end (deepest first, after `io.max`), unless a
//! cgroup below has an `io.max` of someone else's by then.

use std::{
    fs,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::Path,
};

use super::{
    EventCounter, KnobFault, KnobWrite, SUBTREE_CONTROL, apply_plan, is_held, open_targets,
};
use crate::{
    api::IoThrottleParams,
    error::{FaultError, RequestError},
    faults::{ActiveFault, ApplyContext},
    host::cgroup::{Cgroup, cgroup2_mount},
};

const KIND: &str = "io.throttle";

/// A whole disk, as `/sys/dev/block` knows it.
#[derive(Debug, PartialEq, Eq)]
pub struct Disk {
    pub major: u32,
    pub minor: u32,
    /// Its kernel name, e.g. "vda", "dm-0".
    pub name: String,
}

impl Disk {
    pub fn dev(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }
}

fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

pub fn validate(p: &IoThrottleParams) -> Result<(), RequestError> {
    match (&p.path, &p.device) {
        (Some(path), None) if !Path::new(path).is_absolute() => {
            return Err(RequestError::BadParam {
                field: "path",
                input: path.clone(),
                reason:
                    "give an absolute path (a file or directory on the disk, or its device node)"
                        .into(),
            });
        }
        (None, Some(dev)) if parse_dev(dev).is_none() => {
            return Err(RequestError::BadParam {
                field: "device",
                input: dev.clone(),
                reason: "give MAJ:MIN, e.g. 8:0 (lsblk's MAJ:MIN column)".into(),
            });
        }
        (Some(_), None) | (None, Some(_)) => {}
        _ => {
            return Err(RequestError::ExactlyOneOf {
                kind: KIND,
                a: "path",
                b: "device",
            });
        }
    }
    if p.rbps.is_none() && p.wbps.is_none() && p.riops.is_none() && p.wiops.is_none() {
        return Err(RequestError::NoLimits { kind: KIND });
    }
    for (field, v) in [("riops", p.riops), ("wiops", p.wiops)] {
        if let Some(n) = v
            && !(1..=u64::from(u32::MAX)).contains(&n)
        {
            return Err(RequestError::BadParam {
                field,
                input: n.to_string(),
                reason: format!(
                    "give 1 to {} operations per second (to stop I/O altogether, use process.pause or io.errno)",
                    u32::MAX
                ),
            });
        }
    }
    Ok(())
}

/// The `io.max` line of `p` for `disk`.
fn limit_line(p: &IoThrottleParams, disk: &Disk) -> String {
    let or_max = |v: Option<u64>| v.map_or_else(|| "max".to_string(), |n| n.to_string());
    format!(
        "{} rbps={} wbps={} riops={} wiops={}",
        disk.dev(),
        or_max(p.rbps.as_ref().map(|r| r.value().0)),
        or_max(p.wbps.as_ref().map(|r| r.value().0)),
        or_max(p.riops),
        or_max(p.wiops),
    )
}

/// The whole disk `p` names, looked up in `sys` (`/sys`).
pub fn resolve(sys: &Path, p: &IoThrottleParams) -> Result<Disk, RequestError> {
    let (input, (major, minor)) = match (&p.path, &p.device) {
        (Some(path), _) => (format!("path {path}"), device_of_path(path)?),
        (None, Some(dev)) => (
            format!("device {dev}"),
            parse_dev(dev).ok_or_else(|| RequestError::BadDisk {
                input: format!("device {dev}"),
                reason: "give MAJ:MIN, e.g. 8:0".into(),
            })?,
        ),
        (None, None) => {
            return Err(RequestError::ExactlyOneOf {
                kind: KIND,
                a: "path",
                b: "device",
            });
        }
    };
    whole_disk(sys, major, minor).map_err(|reason| RequestError::BadDisk { input, reason })
}

/// The device a path's I/O goes to: a block device node's own device, otherwise the device
/// of the filesystem holding it.
fn device_of_path(path: &str) -> Result<(u32, u32), RequestError> {
    let bad = |reason: String| RequestError::BadDisk {
        input: format!("path {path}"),
        reason,
    };
    let meta = fs::metadata(path).map_err(|e| bad(format!("{e}")))?;
    if meta.file_type().is_block_device() {
        let rdev = meta.rdev();
        return Ok((libc::major(rdev), libc::minor(rdev)));
    }
    if meta.file_type().is_char_device() {
        return Err(bad(
            "it is a character device, not a block device; name a file on the disk or the disk's block device node".into(),
        ));
    }
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    if major == 0 {
        let fs = mount_of(major, minor).map_or_else(
            || "a filesystem".to_string(),
            |(fstype, source)| format!("{fstype} (source {source})"),
        );
        return Err(bad(format!(
            "it is on {fs}, which has no block device of its own (an anonymous device {major}:{minor}: tmpfs, overlayfs, btrfs, NFS, 9p, FUSE); give the disk below it with device MAJ:MIN (--device; lsblk shows them)"
        )));
    }
    Ok((major, minor))
}

/// The filesystem type and source of the mount whose device is `major:minor`.
fn mount_of(major: u32, minor: u32) -> Option<(String, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let dev = format!("{major}:{minor}");
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if left.split_whitespace().nth(2)? != dev {
            return None;
        }
        let mut r = right.split_whitespace();
        Some((r.next()?.to_string(), r.next()?.to_string()))
    })
}

/// The whole disk of block device `major:minor` (itself, or a partition's parent).
fn whole_disk(sys: &Path, major: u32, minor: u32) -> Result<Disk, String> {
    let link = sys.join(format!("dev/block/{major}:{minor}"));
    let dir = fs::canonicalize(&link).map_err(|_| {
        format!(
            "there is no block device {major}:{minor} ({} is missing: a character device, a device that is gone, or a typo; lsblk lists the disks)",
            link.display()
        )
    })?;
    let disk = if dir.join("partition").exists() {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    };
    let dev = fs::read_to_string(disk.join("dev")).map_err(|e| {
        format!(
            "reading {}: {e} (not a block device's sysfs entry)",
            disk.join("dev").display()
        )
    })?;
    let (major, minor) =
        parse_dev(&dev).ok_or_else(|| format!("{} reads {dev:?}", disk.join("dev").display()))?;
    let name = disk
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Disk { major, minor, name })
}

/// Every strict ancestor of `cg`, the root first.
fn ancestors(mount: &Path, cg: &Cgroup) -> Result<Vec<Cgroup>, FaultError> {
    let parts: Vec<&str> = cg.rel.split('/').filter(|s| !s.is_empty()).collect();
    (0..parts.len())
        .map(|n| {
            let rel = format!("/{}", parts[..n].join("/"));
            Cgroup::open(mount, &rel).map_err(|e| FaultError::Refused(RequestError::Target(e)))
        })
        .collect()
}

pub fn apply(
    p: &IoThrottleParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let disk = resolve(Path::new("/sys"), p).map_err(FaultError::Refused)?;
    let mount = cgroup2_mount().map_err(|e| FaultError::kernel("finding cgroup2", e))?;
    let targets = open_targets(ctx)?;
    let mut plan = Vec::new();
    let mut enabling: Vec<u64> = Vec::new();
    for t in &targets {
        if t.level() == 0 {
            return Err(FaultError::Refused(RequestError::BadParam {
                field: "cgroup",
                input: t.rel.clone(),
                reason: "the root cgroup has no io.max; target a cgroup below it".into(),
            }));
        }
        for a in ancestors(&mount, t)? {
            let controls = fs::read_to_string(a.dir.join(SUBTREE_CONTROL))
                .map_err(|e| FaultError::kernel("reading cgroup.subtree_control", e))?;
            if controls.split_whitespace().any(|c| c == "io") {
                // On already; if another fault turned it on, that fault turns it off at its
                // end, under this one's limit.
                if is_held(a.id, SUBTREE_CONTROL) {
                    return Err(FaultError::Refused(RequestError::KnobHeld {
                        cgroup: a.rel,
                        file: SUBTREE_CONTROL.into(),
                    }));
                }
                continue;
            }
            if !enabling.contains(&a.id) {
                enabling.push(a.id);
                plan.push((
                    a,
                    KnobWrite {
                        file: SUBTREE_CONTROL,
                        value: "+io".into(),
                    },
                ));
            }
        }
    }
    for t in &targets {
        plan.push((
            t.clone(),
            KnobWrite {
                file: "io.max",
                value: limit_line(p, &disk),
            },
        ));
    }
    tracing::debug!(fault_id = ctx.fault_id, disk = disk.name, "io.throttle");
    let fault: KnobFault = apply_plan(
        KIND,
        "io",
        ctx,
        &targets,
        plan,
        EventCounter::DeviceIos { device: disk.dev() },
    )?;
    Ok(Box::new(fault))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::api::Written;

    /// Where a disk's sysfs entry lives under a fake `/sys`, for the tests.
    fn fake_disk(sys: &Path, devices: &str, name: &str, dev: &str) -> PathBuf {
        let dir = sys.join(devices).join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("dev"), format!("{dev}\n")).unwrap();
        fs::create_dir_all(sys.join("dev/block")).unwrap();
        std::os::unix::fs::symlink(&dir, sys.join("dev/block").join(dev)).unwrap();
        dir
    }

    fn params(path: Option<&str>, device: Option<&str>) -> IoThrottleParams {
        IoThrottleParams {
            path: path.map(String::from),
            device: device.map(String::from),
            rbps: Some(serde_json::from_value::<Written<_>>("1MiB/s".into()).unwrap()),
            wbps: None,
            riops: None,
            wiops: Some(100),
        }
    }

    #[test]
    fn the_line_sets_what_was_asked_and_max_for_the_rest() {
        let disk = Disk {
            major: 254,
            minor: 16,
            name: "vdb".into(),
        };
        assert_eq!(
            limit_line(&params(None, Some("254:16")), &disk),
            "254:16 rbps=1048576 wbps=max riops=max wiops=100"
        );
    }

    #[test]
    fn one_disk_and_one_limit_at_least_are_required() {
        assert!(validate(&params(None, Some("8:0"))).is_ok());
        assert!(validate(&params(Some("/var"), None)).is_ok());
        let e = validate(&params(None, None)).unwrap_err().to_string();
        assert!(e.contains("exactly one of path and device"), "{e}");
        let e = validate(&params(Some("/var"), Some("8:0")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one"), "{e}");
        let e = validate(&params(None, Some("sda")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("MAJ:MIN"), "{e}");
        let e = validate(&params(Some("var"), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absolute"), "{e}");
        let mut none = params(None, Some("8:0"));
        (none.rbps, none.wiops) = (None, None);
        let e = validate(&none).unwrap_err().to_string();
        assert!(e.contains("at least one limit"), "{e}");
        none.riops = Some(0);
        let e = validate(&none).unwrap_err().to_string();
        assert!(e.contains("riops \"0\""), "{e}");
    }

    #[test]
    fn a_partition_stands_for_its_disk_and_unknown_devices_are_refused() {
        let sys = tempfile::tempdir().unwrap();
        let disk = fake_disk(sys.path(), "devices/pci/virtio1/block", "vda", "254:0");
        let part = disk.join("vda1");
        fs::create_dir_all(&part).unwrap();
        fs::write(part.join("dev"), "254:1\n").unwrap();
        fs::write(part.join("partition"), "1\n").unwrap();
        std::os::unix::fs::symlink(&part, sys.path().join("dev/block/254:1")).unwrap();
        fake_disk(sys.path(), "devices/virtual/block", "dm-0", "253:0");

        let vda = Disk {
            major: 254,
            minor: 0,
            name: "vda".into(),
        };
        assert_eq!(
            resolve(sys.path(), &params(None, Some("254:1"))).unwrap(),
            vda
        );
        let dm = resolve(sys.path(), &params(None, Some("253:0"))).unwrap();
        assert_eq!((dm.dev(), dm.name.as_str()), ("253:0".into(), "dm-0"));
        let e = resolve(sys.path(), &params(None, Some("1:3")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no block device 1:3"), "{e}");
    }

    #[test]
    fn paths_without_a_block_device_say_what_they_are_on() {
        let sys = tempfile::tempdir().unwrap();
        let e = resolve(sys.path(), &params(Some("/proc/self"), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("on proc"), "{e}");
        assert!(e.contains("--device"), "{e}");
        let e = resolve(sys.path(), &params(Some("/no/such/path"), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("No such file"), "{e}");
        let e = resolve(sys.path(), &params(Some("/dev/null"), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("character device"), "{e}");
    }
}
