//! What `net.delay` and `net.bandwidth` share: a rule that makes the egress program set each
//! packet's departure time, and sch_fq on the devices of the target's network namespace(s) to
//! hold packets until then ([`super::qdisc`]). The namespaces are the request's `netns`, else
//! those of the target's processes, else chaosd's own ([`netns::for_departure`]); the fault
//! reports which ([`ActiveFault::netns`]).

use std::sync::{Arc, Mutex};

use chaosd_common::net::NetRule;

use super::{apply_rule, netns, qdisc};
use crate::{
    api::{Counters, NetnsUsed},
    error::FaultError,
    faults::kernel::Kernel,
    faults::{ActiveFault, ApplyContext},
};

/// Largest delay (and delay + jitter) accepted: fq holds packets in memory meanwhile.
pub const MAX_DELAY_NS: u64 = 10_000_000_000;

/// Leases fq on the devices of the namespaces (the request's `netns`, else the targets',
/// else chaosd's), then writes `rule`; all or nothing. `max_ahead_ns` is the furthest a
/// departure time may lie ahead (sets fq's horizon).
pub(crate) fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    rule: NetRule,
    max_ahead_ns: u64,
    asked_netns: Option<&str>,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let (leases, used) = {
        let mut k = kernel.lock().unwrap_or_else(|e| e.into_inner());
        let dirs = ctx
            .targets
            .iter()
            .map(|t| k.net.cgroup_dir(&t.cgroup))
            .collect::<Vec<_>>();
        let chosen = netns::for_departure(&dirs, asked_netns).map_err(FaultError::Refused)?;
        let used: Vec<NetnsUsed> = chosen.iter().map(|(ns, from)| ns.used(*from)).collect();
        for u in &used {
            tracing::info!(netns = u.inode, from = ?u.from, path = %u.path, "sch_fq goes in this network namespace");
        }
        let namespaces = chosen.into_iter().map(|(ns, _)| ns).collect();
        let leases = k
            .net
            .fq
            .acquire(namespaces, qdisc::horizon_us(max_ahead_ns))?;
        (leases, used)
    };
    match apply_rule(kernel, rule, ctx) {
        Ok(rule) => Ok(Box::new(DepartureFault {
            kernel: Arc::clone(kernel),
            rule,
            leases,
            used,
            released: false,
        })),
        Err(e) => {
            let mut k = kernel.lock().unwrap_or_else(|e| e.into_inner());
            k.net.fq.release(&leases);
            Err(e)
        }
    }
}

/// The rule plus the fq leases it needs; the rule goes first, then the qdiscs.
struct DepartureFault {
    kernel: Arc<Mutex<Kernel>>,
    rule: Box<dyn ActiveFault>,
    leases: Vec<qdisc::Leased>,
    used: Vec<NetnsUsed>,
    released: bool,
}

impl DepartureFault {
    fn release_leases(&mut self) {
        if !self.released {
            self.released = true;
            let mut k = self.kernel.lock().unwrap_or_else(|e| e.into_inner());
            k.net.fq.release(&self.leases);
        }
    }
}

impl ActiveFault for DepartureFault {
    fn counters(&self) -> Counters {
        self.rule.counters()
    }

    fn netns(&self) -> Vec<NetnsUsed> {
        self.used.clone()
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        let result = self.rule.revert();
        self.release_leases();
        result
    }
}

impl Drop for DepartureFault {
    fn drop(&mut self) {
        // Rule first, so no packet is given a departure time once the fq is gone.
        if let Err(e) = self.rule.revert() {
            tracing::error!("reverting a departure-time rule on drop: {e}");
        }
        self.release_leases();
    }
}
