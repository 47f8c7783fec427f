//! `io.errno`: fail file operations of a cgroup with an errno.

use std::{
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::{Arc, Mutex},
};

use chaosd_common::io::{IO_PPM_ONE, IoRule};

use super::{IoErrnoParams, IoOp};
use crate::{
    api::{Counters, OpCounters},
    error::{FaultError, RequestError},
    faults::kernel::{Kernel, SlotRuleFault},
    faults::{ActiveFault, ApplyContext},
};

/// `(kernel dev_t, inode)` of an absolute path: what the programs compare dentries with.
pub fn resolve_path(path: &str) -> Result<(u64, u64), RequestError> {
    let bad = |reason: String| RequestError::BadIoPath {
        path: path.to_string(),
        reason,
    };
    if !Path::new(path).is_absolute() {
        return Err(bad("it must be absolute".into()));
    }
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    let dev = meta.dev();
    // The kernel's dev_t is major << 20 | minor; stat(2) encodes it differently.
    let kdev = (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev));
    Ok((kdev, meta.ino()))
}

pub fn validate(p: &IoErrnoParams) -> Result<(), RequestError> {
    if !(p.percent > 0.0 && p.percent <= 100.0) {
        return Err(RequestError::PercentOutOfRange { value: p.percent });
    }
    if let Some(path) = &p.path {
        resolve_path(path)?;
    }
    Ok(())
}

fn ops_mask(ops: &[IoOp]) -> u32 {
    let ops = if ops.is_empty() { &IoOp::ALL[..] } else { ops };
    ops.iter().fold(0, |m, op| m | 1 << op.index())
}

fn percent_to_ppm(percent: f64) -> u32 {
    ((percent * 10_000.0).round() as u32).clamp(1, IO_PPM_ONE)
}

/// Writes the fault's rule for its targets and attaches the programs, or nothing at all.
pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &IoErrnoParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let errno = p.errno.get().0;
    let (path_dev, path_ino) = match &p.path {
        Some(path) => resolve_path(path).map_err(|e| FaultError::kernel("resolving path", e))?,
        None => (0, 0),
    };
    let mut guard = kernel.lock().unwrap_or_else(|e| e.into_inner());
    let k = &mut *guard;
    // Loaded before the deadline is taken: verifying can take seconds under emulation.
    k.require(crate::faults::kernel::ProgramGroup::Lsm)?;
    let slot = k.slots.allocate()?;
    let rule = IoRule {
        deadline_ns: ctx.deadline_ns(),
        neg_errno: -i64::from(errno),
        path_dev,
        path_ino,
        counter_slot: slot,
        ops: ops_mask(&p.ops),
        probability_ppm: percent_to_ppm(p.percent),
        _pad: 0,
    };
    if let Err(e) = k.io.add_fault(&mut k.ebpf, rule, ctx.cgroup_targets()) {
        k.slots.release(slot);
        return Err(e);
    }
    let slots = Arc::clone(&k.slots);
    let op_counters = k.io.op_counter_reader();
    drop(guard);
    let ops = if p.ops.is_empty() {
        IoOp::ALL.to_vec()
    } else {
        p.ops.clone()
    };
    let rule = SlotRuleFault::new(kernel, &slots, slot, "io.errno", |k, slot| {
        k.io.remove_fault(slot)
    });
    Ok(Box::new(IoErrnoFault {
        rule,
        ops,
        op_counters,
    }))
}

/// An io.errno fault: its rule, plus the operations whose counters it reports.
struct IoErrnoFault {
    rule: SlotRuleFault,
    ops: Vec<IoOp>,
    op_counters: crate::faults::io::OpCounterReader,
}

impl ActiveFault for IoErrnoFault {
    fn counters(&self) -> Counters {
        self.rule.counters()
    }

    fn op_counters(&self) -> Vec<OpCounters> {
        if self.rule.is_reverted() {
            return Vec::new();
        }
        self.op_counters.read(self.rule.slot(), &self.ops)
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        self.rule.revert()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_accept_numbers_and_default_to_every_op_at_100_percent() {
        let p: IoErrnoParams = serde_json::from_str(r#"{"errno":28}"#).unwrap();
        assert_eq!((p.errno.text(), p.errno.get().0), ("28", libc::ENOSPC));
        assert_eq!(p.percent, 100.0);
        assert_eq!(ops_mask(&p.ops), (1 << chaosd_common::io::IO_OPS) - 1);
        assert_eq!(
            ops_mask(&[IoOp::Read]),
            1 << chaosd_common::io::FileOp::Read.code()
        );
        assert!(serde_json::from_str::<IoErrnoParams>(r#"{"errno":"EIO","x":1}"#).is_err());
    }

    #[test]
    fn paths_must_be_absolute_and_exist() {
        assert!(resolve_path("tmp").is_err());
        assert!(resolve_path("/nonexistent/chaosd").is_err());
        let (_, ino) = resolve_path("/").unwrap();
        assert!(ino > 0);
    }
}
