//! Per-cgroup file I/O errors (BPF LSM), checked from processes inside and outside the target.
//!
//! These need a kernel that loads BPF LSM programs: the Debian 6.1/6.12 kernels of the VM
//! harness (`cargo xtask vm-test --filter io`). Where the kernel refuses them (the 6.18 dev
//! host), every test asks the daemon's capability table and skips with its reason.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use chaosd::api::{FaultSpec, FaultState, IoErrnoParams, IoOp};
use chaosd_integration::{
    Daemon, HeldFileOps, TestCgroup, block_on, file_ops_in, inject, unsupported_reason, wait_for,
};

/// A directory under /tmp (tmpfs in the VM; its root fs is read-only 9p) with `in/file` under
/// the fault's path and `out/file` beside it.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::Builder::new()
            .prefix("chaosd-io-")
            .tempdir_in("/tmp")
            .unwrap();
        for sub in ["in", "out"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join("file"), b"hello").unwrap();
        }
        Files { dir }
    }
    fn scope(&self) -> PathBuf {
        self.dir.path().join("in")
    }
    fn inside(&self) -> PathBuf {
        self.scope().join("file")
    }
    fn outside(&self) -> PathBuf {
        self.dir.path().join("out").join("file")
    }
}

fn errno_fault(errno: &str, path: &Path, ops: &[IoOp], percent: f64) -> FaultSpec {
    FaultSpec::IoErrno(IoErrnoParams {
        errno: errno.parse().unwrap(),
        path: Some(path.display().to_string()),
        ops: ops.to_vec(),
        percent,
    })
}

/// A daemon, or None (the test was reported skipped) where BPF LSM programs cannot run.
fn daemon_with_io() -> Option<Daemon> {
    let daemon = Daemon::start();
    if let Some(reason) = unsupported_reason(&daemon, "io.errno") {
        chaosd_integration::record_skip(&reason);
        return None;
    }
    Some(daemon)
}

#[test]
fn io_errno_reads_under_the_path_fail_with_eio_even_on_files_opened_before() {
    let Some(daemon) = daemon_with_io() else {
        return;
    };
    let files = Files::new();
    let target = TestCgroup::new("io-target");
    let sibling = TestCgroup::new("io-sibling");

    let held = HeldFileOps::start(&target, IoOp::Read, &files.inside(), 10);
    let fault = inject(
        &daemon,
        &target,
        errno_fault("EIO", &files.scope(), &[IoOp::Read], 100.0),
        "60s",
    );

    let r = held.go();
    assert_eq!(
        (r.ok, r.only_error()),
        (0, Some("EIO")),
        "file opened before the fault: {r:?}"
    );
    let r = file_ops_in(&target, IoOp::Read, &files.inside(), 10);
    assert_eq!(
        (r.ok, r.only_error()),
        (0, Some("EIO")),
        "file under the path: {r:?}"
    );
    let r = file_ops_in(&target, IoOp::Read, &files.outside(), 10);
    assert_eq!(r.ok, 10, "a file outside the path failed: {r:?}");
    let r = file_ops_in(&sibling, IoOp::Read, &files.inside(), 10);
    assert_eq!(r.ok, 10, "the sibling cgroup's reads failed: {r:?}");
    let r = file_ops_in(&target, IoOp::Open, &files.inside(), 10);
    assert_eq!(r.ok, 10, "a read-only fault failed opens: {r:?}");

    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert_eq!(info.counters.affected, 20, "{info:?}");
    assert_eq!(info.counters.seen, 20, "{info:?}");
    let read = info.op_counters.iter().find(|c| c.op == "read").unwrap();
    assert_eq!((read.checked, read.failed), (20, 20));

    block_on(daemon.client().recover(&fault.id)).unwrap();
    let r = file_ops_in(&target, IoOp::Read, &files.inside(), 10);
    assert_eq!(r.ok, 10, "reads still failed after recover: {r:?}");
}

#[test]
fn io_errno_percent_fails_the_asked_share_of_reads() {
    let Some(daemon) = daemon_with_io() else {
        return;
    };
    let files = Files::new();
    let target = TestCgroup::new("io-percent");
    let fault = inject(
        &daemon,
        &target,
        errno_fault("EIO", &files.scope(), &[IoOp::Read], 50.0),
        "120s",
    );
    let r = file_ops_in(&target, IoOp::Read, &files.inside(), 2_000);
    let failed = 100.0 * f64::from(r.failed()) / 2_000.0;
    assert!(
        (failed - 50.0).abs() <= 5.0,
        "{failed:.1} % failed, expected 50 ± 5: {r:?}"
    );
    assert_eq!(r.only_error(), Some("EIO"));
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert_eq!(info.counters.seen, 2_000);
    assert_eq!(info.counters.affected, u64::from(r.failed()));
}

#[test]
fn io_errno_each_operation_fails_with_its_errno_and_recovers() {
    let Some(daemon) = daemon_with_io() else {
        return;
    };
    let files = Files::new();
    let target = TestCgroup::new("io-ops");
    let cases = [
        (IoOp::Write, "ENOSPC"),
        (IoOp::Open, "EACCES"),
        (IoOp::Create, "EDQUOT"),
        (IoOp::Unlink, "EROFS"),
        (IoOp::Mkdir, "ENOMEM"),
        (IoOp::Rename, "EXDEV"),
        (IoOp::Rmdir, "EBUSY"),
        (IoOp::Truncate, "EINTR"),
    ];
    for (op, errno) in cases {
        // File operations take the file, directory operations its directory.
        let path = match op {
            IoOp::Write | IoOp::Open | IoOp::Truncate | IoOp::Read => files.inside(),
            _ => files.scope(),
        };
        let fault = inject(
            &daemon,
            &target,
            errno_fault(errno, &files.scope(), &[op], 100.0),
            "60s",
        );
        let r = file_ops_in(&target, op, &path, 5);
        assert_eq!(
            (r.ok, r.only_error()),
            (0, Some(errno)),
            "{op:?} during the fault: {r:?}"
        );
        block_on(daemon.client().recover(&fault.id)).unwrap();
        let r = file_ops_in(&target, op, &path, 5);
        assert_eq!(r.ok, 5, "{op:?} after recover: {r:?}");
    }
}

#[test]
fn io_errno_a_fault_without_path_covers_every_file_of_child_cgroups() {
    let Some(daemon) = daemon_with_io() else {
        return;
    };
    let files = Files::new();
    let parent = TestCgroup::new("io-parent");
    let child = parent.child("worker");
    let fault = FaultSpec::IoErrno(IoErrnoParams {
        errno: "5".parse().unwrap(),
        path: None,
        ops: vec![IoOp::Read],
        percent: 100.0,
    });
    // Started before the fault (without a path, exec's own reads would fail after); its report
    // goes out by write(2), which this fault leaves alone.
    let held = HeldFileOps::start(&child, IoOp::Read, &files.outside(), 3);
    let fault = inject(&daemon, &parent, fault, "60s");
    let r = held.go();
    assert_eq!((r.ok, r.only_error()), (0, Some("EIO")), "{r:?}");
    // This test process is outside the target: unaffected.
    std::fs::read(files.outside()).unwrap();
    block_on(daemon.client().recover(&fault.id)).unwrap();
}

#[test]
fn io_errno_errors_end_at_the_deadline() {
    let Some(daemon) = daemon_with_io() else {
        return;
    };
    let files = Files::new();
    let target = TestCgroup::new("io-deadline");
    let fault = inject(
        &daemon,
        &target,
        errno_fault("EIO", &files.scope(), &[IoOp::Read], 100.0),
        "2s",
    );
    let r = file_ops_in(&target, IoOp::Read, &files.inside(), 5);
    assert_eq!(r.ok, 0, "{r:?}");
    let ended = wait_for(Duration::from_secs(20), || {
        let f = block_on(daemon.client().get(&fault.id)).unwrap();
        (f.state == FaultState::Expired).then_some(f)
    });
    assert!(ended.is_some(), "the fault did not expire");
    let r = file_ops_in(&target, IoOp::Read, &files.inside(), 5);
    assert_eq!(r.ok, 5, "reads failed after the deadline: {r:?}");
}
