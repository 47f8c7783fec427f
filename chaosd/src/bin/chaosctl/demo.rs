//! `chaosctl demo`: per-cgroup packet loss, measured from outside.
//!
//! Makes two sibling cgroups under a demo parent, injects 30 % egress loss into one, sends
//! 2,000 numbered UDP datagrams from a process in each to a receiver outside both, and prints
//! what arrived; then recovers and sends again. Everything it made is removed at the end.
//! The senders are `chaosctl __udp-send` processes started inside the cgroups.

use std::{
    collections::HashSet,
    io,
    net::{SocketAddr, UdpSocket},
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use chaosd::{
    api::{Direction, FaultSpec, InjectRequest, NetLossParams, TargetSelector},
    client::Client,
    host::cgroup::{ChildCgroup, cgroup2_mount, spawn_in_cgroup},
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
    let to = sink.addr()?.to_string();
    let exe = std::env::current_exe()?;
    let mut senders = Vec::new();
    for (tag, cg) in [(1u8, a), (2u8, b)] {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "__udp-send",
            "--to",
            &to,
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

/// `chaosctl __udp-send`: `count` datagrams `[tag, seq_le32]` to a loopback `to`, pausing
/// briefly every 16 so the receiver's buffer never overflows (that would look like loss).
pub fn send_datagrams(to: SocketAddr, tag: u8, count: u32) -> io::Result<()> {
    let from: SocketAddr = if to.is_ipv4() {
        "127.0.0.1:0".parse().expect("literal address")
    } else {
        "[::1]:0".parse().expect("literal address")
    };
    let sock = UdpSocket::bind(from)?;
    for seq in 0..count {
        let mut msg = [0u8; 5];
        msg[0] = tag;
        msg[1..].copy_from_slice(&seq.to_le_bytes());
        sock.send_to(&msg, to)?;
        if seq % 16 == 15 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}

/// A loopback UDP socket that counts distinct datagrams per tag.
struct UdpSink {
    sock: UdpSocket,
}

impl UdpSink {
    fn bind_loopback() -> io::Result<UdpSink> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        // A big buffer (root may exceed rmem_max) so nothing is dropped for lack of room.
        let _ = nix::sys::socket::setsockopt(
            &sock,
            nix::sys::socket::sockopt::RcvBufForce,
            &(16 << 20),
        );
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(UdpSink { sock })
    }

    fn addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Receives until every sender has exited and the socket has been quiet for `quiet`, or
    /// `limit` passed; returns the number of distinct datagrams per tag (index).
    fn count(
        &self,
        senders: &mut [Child],
        quiet: Duration,
        limit: Duration,
    ) -> io::Result<[u32; 256]> {
        let start = Instant::now();
        let mut seen = HashSet::new();
        let mut last = Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match self.sock.recv(&mut buf) {
                Ok(5) => {
                    seen.insert((buf[0], u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]])));
                    last = Instant::now();
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
            let all_done = senders
                .iter_mut()
                .all(|c| matches!(c.try_wait(), Ok(Some(_))));
            if (all_done && last.elapsed() >= quiet) || start.elapsed() > limit {
                break;
            }
        }
        let mut counts = [0u32; 256];
        for (tag, _) in seen {
            counts[tag as usize] += 1;
        }
        Ok(counts)
    }
}
