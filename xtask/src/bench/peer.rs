//! The peer approach next to chaosd's (VM part: it needs sch_netem): what chaosblade (and
//! chaosd-go) set up for a network fault on some traffic only — see [`super::netem::PeerSetup`].
//!
//! Per-cgroup targeting in those tools takes iptables marks (net_cls or cgroup v2 match) plus
//! an `fw` filter; iptables is out of reach here (no shelling out), so the filter matches the
//! target's destination address and port with u32, chaosblade's `--destination-ip`/`--remote-
//! port` form. For what is measured the difference is small: every packet on the device goes
//! through the prio qdisc and one filter lookup either way.
//!
//! 1. Overhead for untargeted traffic: the datapath bench's TCP throughput and request/response
//!    latency over the veth with nothing, with the peer setup on A's veth end (netem delaying
//!    a destination port nobody uses), and with chaosd's programs attached (a loss fault on
//!    another cgroup), taking turns round by round.
//! 2. Set-up latency, seen from the datapath as the control bench does: chaosd's inject of
//!    100 % loss on the sender's cgroup, and the peer's qdiscs + filter (netem dropping all)
//!    for the sender's destination, each removed again, over the same veth.

use std::net::{SocketAddr, SocketAddrV4};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::{
    cgroup::BenchCgroups,
    control::{Watch, full_loss, on_off_cycles},
    daemon::Daemon,
    datapath::{self, Samples},
    delay::Probe,
    merge,
    netem::{Effect, PeerSetup},
    netns::{ADDR_B, NetNs, VETH_A},
};

/// A destination port nothing in the bench uses: the peer setup's filter target for the
/// overhead figure.
const UNUSED_PORT: u16 = 9;

pub fn overhead(
    daemon: &Daemon,
    cgroups: &mut BenchCgroups,
    (a, b): (&NetNs, &NetNs),
    plan: &datapath::Plan,
) -> Result<Value> {
    let other = cgroups.child("peer-other")?;
    let half_loss = json!({"kind": "net.loss", "params": {"percent": 50, "direction": "both"}});
    let unused = SocketAddrV4::new(ADDR_B, UNUSED_PORT);
    let (mut nothing, mut peer, mut ours) = <(Samples, Samples, Samples)>::default();
    for _ in 0..plan.rounds {
        nothing.add_round(a, b, plan)?;
        let tc = PeerSetup::install(a, VETH_A, unused, Effect::Delay(ms(100)))?;
        let r = peer.add_round(a, b, plan);
        tc.remove()?;
        r?;
        daemon.inject(half_loss.clone(), std::slice::from_ref(&other), "1h")?;
        let r = ours.add_round(a, b, plan);
        daemon.delete("/v1/faults")?;
        r?;
    }
    let (nothing, peer, ours) = (nothing.figures(), peer.figures(), ours.figures());
    Ok(json!({
        "traffic": "TCP over the veth from the bench's own cgroup, targeted by neither",
        "rounds": plan.rounds,
        "nothing": nothing.json(),
        "peer_prio_netem_u32": merge(peer.json(), peer.ratios(&nothing)),
        "chaosd_programs_attached": merge(ours.json(), ours.ratios(&nothing)),
        "peer_setup": format!("prio bands 4 root on the veth, netem delay 100ms on 1:4, u32 \
            filter on dst {unused} to 1:4"),
    }))
}

pub fn setup_latency(
    daemon: &Daemon,
    cgroups: &mut BenchCgroups,
    (a, b): (&NetNs, &NetNs),
    cycles: usize,
    watch: Watch,
) -> Result<Value> {
    let target = cgroups.child("peer-setup")?;
    let probe = Probe::start_with(cgroups, &target, a, b, watch.send_interval_us)?;
    let rx = probe.receiver();
    let to = match probe.addr() {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => bail!("the probe listens on IPv4"),
    };
    let chaosd = on_off_cycles(
        rx,
        cycles,
        watch,
        || daemon.inject(full_loss(), std::slice::from_ref(&target), "60s"),
        |id| daemon.recover(&id).map(drop),
    )?;
    let peer = on_off_cycles(
        rx,
        cycles,
        watch,
        || PeerSetup::install(a, VETH_A, to, Effect::DropAll),
        |tc| tc.remove(),
    )?;
    Ok(json!({
        "observed": "a sender in the target cgroup (namespace A) to a receiver in namespace B; \
            'inject' is chaosd's POST /v1/faults (100 % egress loss on the cgroup) or the peer's \
            netlink requests (prio + netem loss 100% + u32 on the receiver's address), \
            'recover' the DELETE or deleting the root qdisc",
        "chaosd": chaosd,
        "peer_prio_netem_u32": peer,
    }))
}

fn ms(n: u64) -> std::time::Duration {
    std::time::Duration::from_millis(n)
}
