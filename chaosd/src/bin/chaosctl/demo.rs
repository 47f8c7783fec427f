//! `chaosctl demo`: per-cgroup packet loss, measured from outside.
//!
//! Makes two sibling cgroups under a demo parent, injects 30 % egress loss into one, sends
//! 2,000 numbered UDP datagrams from a process in each to a receiver outside both, and prints
//! what arrived; then recovers and sends again. Everything it made is removed at the end.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};
use chaosd::{
    api::{Direction, FaultSpec, InjectRequest, NetLossParams, TargetSelector},
    cgroup::{ChildCgroup, cgroup2_mount},
    client::Client,
    probe::{UdpSink, spawn_in_cgroup},
};

const DATAGRAMS: u32 = 2_000;
const LOSS_PERCENT: f64 = 30.0;

pub async fn run(client: &Client) -> Result<()> {
    client.status().await?;
    let mount = cgroup2_mount()?;
    let parent = ChildCgroup::create(&mount, &format!("chaosd-demo-{}", std::process::id()))
        .with_context(|| format!("creating a demo cgroup under {}", mount.display()))?;
    let lossy = ChildCgroup::create(parent.dir(), "lossy")?;
    let steady = ChildCgroup::create(parent.dir(), "steady")?;
    println!(
        "demo cgroups: {} (target) and {} (sibling)",
        lossy.rel(),
        steady.rel()
    );

    let req = InjectRequest {
        fault: FaultSpec::NetLoss(NetLossParams {
            percent: LOSS_PERCENT,
            direction: Direction::Egress,
            filter: Default::default(),
        }),
        targets: vec![TargetSelector::Cgroup(lossy.rel().to_string())],
        duration: Some("2m".into()),
    };
    let fault = client.inject(&req).await?;
    println!(
        "injected {} {} % egress loss into {} for 2m (fault {})",
        fault.kind,
        LOSS_PERCENT,
        lossy.rel(),
        fault.id
    );

    let [lost, kept] = measure(&lossy, &steady)?;
    let shown = client.get(&fault.id).await?;
    println!(
        "while active:   target received {lost}/{DATAGRAMS} ({:.1} % lost, asked {LOSS_PERCENT} %), sibling {kept}/{DATAGRAMS}",
        loss_pct(lost)
    );
    println!(
        "                kernel counters: seen {} packets, dropped {}",
        shown.counters.seen, shown.counters.affected
    );

    client.recover(&fault.id).await?;
    let [after, _] = measure(&lossy, &steady)?;
    println!(
        "after recover:  target received {after}/{DATAGRAMS} ({:.1} % lost)",
        loss_pct(after)
    );

    let measured = loss_pct(lost);
    if (measured - LOSS_PERCENT).abs() > 5.0 || kept != DATAGRAMS || after != DATAGRAMS {
        bail!("the demo measured something unexpected (see above)");
    }
    println!(
        "ok: the target lost {measured:.1} % of its packets, its sibling and the recovered target none"
    );
    Ok(())
}

fn loss_pct(received: u32) -> f64 {
    100.0 * f64::from(DATAGRAMS - received) / f64::from(DATAGRAMS)
}

/// Datagrams received from a sender in `a` and one in `b`, sent at the same time.
fn measure(a: &ChildCgroup, b: &ChildCgroup) -> Result<[u32; 2]> {
    let sink = UdpSink::bind_loopback()?;
    let exe = std::env::current_exe()?;
    let mut senders = Vec::new();
    for (tag, cg) in [(1u8, a), (2u8, b)] {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "__udp-send",
            "--to",
            &sink.addr().to_string(),
            "--count",
            &DATAGRAMS.to_string(),
            "--tag",
            &tag.to_string(),
        ]);
        senders.push(spawn_in_cgroup(&mut cmd, cg.dir())?);
    }
    let counts = sink.count(
        &mut senders,
        Duration::from_millis(300),
        Duration::from_secs(60),
    );
    for mut s in senders {
        let _ = s.kill();
        let _ = s.wait();
    }
    let counts = counts?;
    Ok([counts[1], counts[2]])
}
