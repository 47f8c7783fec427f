//! `net.loss`: drop a share of a cgroup's packets.

use std::sync::{Arc, Mutex};

use chaosd_common::net::{DIR_EGRESS, DIR_INGRESS, NET_KIND_LOSS, NetRule, PPM_ONE};

use crate::{
    api::{Counters, Direction, NetLossParams},
    error::{FaultError, RequestError},
    fault::{ActiveFault, ApplyContext},
    kernel::{Kernel, monotonic_ns},
};

pub fn validate(p: &NetLossParams) -> Result<(), RequestError> {
    if !(p.percent > 0.0 && p.percent <= 100.0) {
        return Err(RequestError::PercentOutOfRange { value: p.percent });
    }
    Ok(())
}

pub(crate) fn direction_bits(d: Direction) -> u32 {
    match d {
        Direction::Egress => DIR_EGRESS,
        Direction::Ingress => DIR_INGRESS,
        Direction::Both => DIR_EGRESS | DIR_INGRESS,
    }
}

/// Parts per million, at least 1 so a tiny percentage still means "some".
fn percent_to_ppm(percent: f64) -> u32 {
    ((percent * 10_000.0).round() as u32).clamp(1, PPM_ONE)
}

/// Writes the fault's rule for its targets and attaches the programs, or nothing at all.
pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &NetLossParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let mut guard = kernel.lock().unwrap_or_else(|e| e.into_inner());
    let k = &mut *guard;
    let slot = k.slots.allocate()?;
    let rule = NetRule {
        deadline_ns: monotonic_ns().saturating_add(ctx.duration.as_nanos() as u64),
        counter_slot: slot,
        kind: NET_KIND_LOSS,
        direction: direction_bits(p.direction),
        probability_ppm: percent_to_ppm(p.percent),
    };
    let targets = ctx
        .targets
        .iter()
        .map(|t| (t.cgroup_id, t.cgroup.clone()))
        .collect();
    if let Err(e) = k.net.add_fault(&mut k.ebpf, rule, targets) {
        k.slots.release(slot);
        return Err(e);
    }
    drop(guard);
    Ok(Box::new(NetLossFault {
        kernel: Arc::clone(kernel),
        slot,
        reverted: false,
    }))
}

struct NetLossFault {
    kernel: Arc<Mutex<Kernel>>,
    slot: u32,
    reverted: bool,
}

impl ActiveFault for NetLossFault {
    fn counters(&self) -> Counters {
        self.kernel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .slots
            .read(self.slot)
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        if self.reverted {
            return Ok(());
        }
        self.reverted = true;
        let mut k = self.kernel.lock().unwrap_or_else(|e| e.into_inner());
        let result = k.net.remove_fault(self.slot);
        k.slots.release(self.slot);
        result
    }
}

impl Drop for NetLossFault {
    fn drop(&mut self) {
        if let Err(e) = self.revert() {
            tracing::error!(slot = self.slot, "reverting a net.loss fault on drop: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_maps_to_parts_per_million() {
        assert_eq!(percent_to_ppm(30.0), 300_000);
        assert_eq!(percent_to_ppm(100.0), PPM_ONE);
        assert_eq!(percent_to_ppm(0.00001), 1);
    }

    #[test]
    fn percent_must_be_in_range() {
        for bad in [0.0, -1.0, 150.0, f64::NAN] {
            assert!(
                validate(&NetLossParams {
                    percent: bad,
                    direction: Direction::Egress
                })
                .is_err(),
                "{bad}"
            );
        }
        assert!(
            validate(&NetLossParams {
                percent: 100.0,
                direction: Direction::Both
            })
            .is_ok()
        );
    }
}
