//! Two network namespaces joined by a veth pair, for tests that need a real device and a real
//! peer: a sender (in a test cgroup) in namespace `a`, a receiver in namespace `b`.
//!
//! Nothing is created in the host's namespace and nothing is named in the filesystem: each
//! namespace lives as long as its nsfs file descriptor (and any process inside it), so dropping
//! the [`NetnsPair`] destroys the namespaces, and the veth with them. The veth is also deleted
//! explicitly on drop, so a straggling child cannot keep the link alive.
//!
//! ```no_run
//! use chaosd_integration::{TestCgroup, netns::{NetnsPair, spawn_in}};
//! let pair = NetnsPair::new();
//! let sink = pair.b.udp_socket(pair.b.v4.into());
//! let cg = TestCgroup::new("sender");
//! let mut cmd = std::process::Command::new("true");
//! let child = spawn_in(&mut cmd, &pair.a.netns, Some(&cg));
//! ```

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::{
        fd::{AsFd as _, AsRawFd as _},
        unix::process::CommandExt as _,
    },
    process::{Child, Command},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::programs::{SchedClassifier, TcAttachType};
use chaosd::faults::net::netns::Netns;
use futures_util::TryStreamExt as _;
use nix::{
    sched::{CloneFlags, unshare},
    sys::socket::{setsockopt, sockopt},
};
use rtnetlink::packet_route::{
    address::AddressHeaderFlags,
    link::{LinkAttribute, LinkMessage},
    tc::TcMessage,
};
use rtnetlink::{Handle, LinkUnspec, LinkVeth};

use crate::TestCgroup;

/// Name of the veth end in namespace `a` and `b` (both namespaces are private to the pair).
pub const VETH_A: &str = "veth-a";
pub const VETH_B: &str = "veth-b";

static PAIR_SEQ: AtomicU32 = AtomicU32::new(0);

/// One side of a [`NetnsPair`]: a namespace and its veth end with its addresses.
pub struct NetnsEnd {
    pub netns: Netns,
    pub ifname: &'static str,
    /// ifindex of the veth end inside `netns`.
    pub ifindex: u32,
    /// `10.231.x.1` (side a) or `10.231.x.2` (side b), /24.
    pub v4: Ipv4Addr,
    /// `fd00:231:x::1` or `::2`, /64, usable at once (no duplicate address detection).
    pub v6: Ipv6Addr,
}

/// Two fresh network namespaces `a` and `b`, a veth between them, addresses on both ends, and
/// every link (lo too) up. Removed on drop.
pub struct NetnsPair {
    pub a: NetnsEnd,
    pub b: NetnsEnd,
}

impl NetnsPair {
    /// Creates the pair; panics (with the reason) when the kernel refuses.
    pub fn new() -> NetnsPair {
        crate::require_root();
        let x = subnet_byte();
        let a = new_netns();
        let b = new_netns();
        let b_fd = b.as_fd().as_raw_fd();
        let a_index = a
            .netlink(|h| async move { create_veth(&h, b_fd).await })
            .expect("creating the veth pair in namespace a");
        let b_index = b
            .netlink(|h| async move { link_index(&h, VETH_B).await })
            .expect("finding the veth end moved to namespace b");
        let pair = NetnsPair {
            a: NetnsEnd::new(a, VETH_A, a_index, x, 1),
            b: NetnsEnd::new(b, VETH_B, b_index, x, 2),
        };
        pair.a.configure();
        pair.b.configure();
        pair
    }
}

impl NetnsPair {
    /// Sends `count` datagrams `[UDP_TAG, seq_le32]` from a process in `from` inside
    /// namespace a to a socket in namespace b (IPv6 if `v6`), and returns every datagram that
    /// arrived, duplicates and altered ones included (see [`tally`]).
    pub fn udp_exchange(&self, from: &TestCgroup, v6: bool, count: u32) -> Vec<Vec<u8>> {
        let sock = self.b.udp_socket(self.b.addr(v6));
        let to = sock.local_addr().expect("bound socket").to_string();
        let mut cmd = Command::new(crate::helper_bin());
        cmd.args(["udp-send", "--to", &to, "--count", &count.to_string()])
            .args(["--tag", &UDP_TAG.to_string()]);
        let sender = spawn_in(&mut cmd, &self.a.netns, Some(from));
        receive_until_quiet(&sock, sender)
    }
}

/// Tag byte of the datagrams [`NetnsPair::udp_exchange`] sends.
pub const UDP_TAG: u8 = 7;

/// How many times each intact datagram `seq < count` arrived; altered ones count under `None`.
pub fn tally(datagrams: &[Vec<u8>], count: u32) -> BTreeMap<Option<u32>, u32> {
    let mut counts = BTreeMap::new();
    for d in datagrams {
        let key = (d.len() == 5 && d[0] == UDP_TAG)
            .then(|| u32::from_le_bytes([d[1], d[2], d[3], d[4]]))
            .filter(|seq| *seq < count);
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Every datagram `sock` receives until `sender` has exited and 300 ms passed quietly (15 s
/// at most); panics if the sender failed.
fn receive_until_quiet(sock: &UdpSocket, sender: Child) -> Vec<Vec<u8>> {
    let mut sender = KillOnDrop(sender);
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("setting a read timeout");
    let (start, mut last, mut out) = (Instant::now(), Instant::now(), Vec::new());
    let mut buf = [0u8; 2048];
    loop {
        if let Ok(n) = sock.recv(&mut buf) {
            out.push(buf[..n].to_vec());
            last = Instant::now();
        }
        let exited = matches!(sender.0.try_wait(), Ok(Some(_)));
        if (exited && last.elapsed() > Duration::from_millis(300))
            || start.elapsed() > Duration::from_secs(15)
        {
            break;
        }
    }
    let status = sender.0.wait().expect("waiting for the UDP sender");
    assert!(status.success(), "the UDP sender failed: {status}");
    out
}

impl Default for NetnsPair {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        let index = self.a.ifindex;
        // Deleting one end deletes both; the namespaces go when their fds close right after.
        let _ = self
            .a
            .netns
            .netlink(|h| async move { Ok(h.link().del(index).execute().await?) });
    }
}

impl NetnsEnd {
    fn new(netns: Netns, ifname: &'static str, ifindex: u32, x: u8, host: u8) -> NetnsEnd {
        NetnsEnd {
            netns,
            ifname,
            ifindex,
            v4: Ipv4Addr::new(10, 231, x, host),
            v6: Ipv6Addr::new(0xfd00, 0x231, u16::from(x), 0, 0, 0, 0, u16::from(host)),
        }
    }

    /// The end's address of the family of `v6`.
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 { self.v6.into() } else { self.v4.into() }
    }

    /// Runs `f` on a thread inside this namespace (sockets made there stay in it).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> anyhow::Result<T> + Send) -> T {
        self.netns
            .run(f)
            .unwrap_or_else(|e| panic!("in namespace of {}: {e:#}", self.ifname))
    }

    /// Runs `f` with an rtnetlink handle inside this namespace.
    pub fn netlink<T, F, Fut>(&self, f: F) -> T
    where
        T: Send,
        F: FnOnce(Handle) -> Fut + Send,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        self.netns
            .netlink(f)
            .unwrap_or_else(|e| panic!("netlink in namespace of {}: {e:#}", self.ifname))
    }

    /// A UDP socket bound to `ip` (port chosen by the kernel) inside this namespace, with a
    /// receive buffer big enough that a burst is never dropped for lack of room.
    pub fn udp_socket(&self, ip: IpAddr) -> UdpSocket {
        let sock = self.run(|| Ok(UdpSocket::bind(SocketAddr::new(ip, 0))?));
        setsockopt(&sock, sockopt::RcvBufForce, &(16 << 20)).expect("SO_RCVBUFFORCE");
        sock
    }

    /// Every qdisc in this namespace (all devices), as netlink reports them.
    pub fn qdiscs(&self) -> Vec<TcMessage> {
        self.netlink(
            |h| async move { Ok(h.qdisc().get().execute().try_collect::<Vec<_>>().await?) },
        )
    }

    /// Every qdisc in this namespace as (ifindex, kind, handle, parent), sorted: what must
    /// be the same before a fault and after it (statistics left out).
    pub fn qdisc_shapes(&self) -> Vec<(i32, String, u32, u32)> {
        let handle = |t: rtnetlink::packet_route::tc::TcHandle| {
            u32::from(t.major) << 16 | u32::from(t.minor)
        };
        let mut q: Vec<_> = self
            .qdiscs()
            .into_iter()
            .map(|m| {
                let kind = chaosd::faults::net::qdisc::tc_kind(&m);
                (
                    m.header.index,
                    kind,
                    handle(m.header.handle),
                    handle(m.header.parent),
                )
            })
            .collect();
        q.sort();
        q
    }

    /// The TC filters on this end's device, both clsact hooks (empty without clsact).
    pub fn tc_filters(&self) -> Vec<TcMessage> {
        let index = self.ifindex as i32;
        self.netlink(|h| async move {
            let mut all = Vec::new();
            for egress in [true, false] {
                let req = h.traffic_filter(index).get();
                let req = if egress { req.egress() } else { req.ingress() };
                // Without clsact the kernel answers EINVAL: no filters.
                if let Ok(found) = req.execute().try_collect::<Vec<_>>().await {
                    all.extend(found);
                }
            }
            Ok(all)
        })
    }

    /// Names of the TCX programs on this end's egress (empty on kernels without TCX).
    pub fn tcx_egress_programs(&self) -> Vec<String> {
        let ifname = self.ifname;
        self.run(move || {
            let Ok((_, progs)) = SchedClassifier::query_tcx(ifname, TcAttachType::Egress) else {
                return Ok(Vec::new());
            };
            Ok(progs
                .iter()
                .map(|p| p.name_as_str().unwrap_or_default().to_string())
                .collect())
        })
    }

    /// Brings lo and the veth end up and adds both addresses.
    fn configure(&self) {
        let (index, v4, v6) = (self.ifindex, self.v4, self.v6);
        self.netlink(|h| async move {
            let lo = link_index(&h, "lo").await?;
            for i in [lo, index] {
                h.link()
                    .set(LinkUnspec::new_with_index(i).up().build())
                    .execute()
                    .await
                    .context("setting a link up")?;
            }
            h.address()
                .add(index, v4.into(), 24)
                .execute()
                .await
                .context("adding the IPv4 address")?;
            let mut add6 = h.address().add(index, v6.into(), 64);
            add6.message_mut().header.flags |= AddressHeaderFlags::Nodad;
            add6.execute().await.context("adding the IPv6 address")?;
            Ok(())
        });
    }
}

/// A child process killed and reaped on drop (a process left in a namespace keeps it alive).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` inside `netns` and, if given, as a member of `cgroup`: the child enters both
/// before `exec`, so every socket it opens lives there.
pub fn spawn_in(cmd: &mut Command, netns: &Netns, cgroup: Option<&TestCgroup>) -> Child {
    let fd = netns.as_fd().as_raw_fd();
    // SAFETY: between fork and exec the closure only calls setns(2), async-signal-safe; `netns`
    // outlives the spawn below, so the fd is open in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = match cgroup {
        Some(cg) => chaosd::host::cgroup::spawn_in_cgroup(cmd, cg.dir()),
        None => cmd.spawn(),
    };
    child.unwrap_or_else(|e| panic!("spawning {cmd:?} in a test namespace: {e}"))
}

/// A fresh, empty network namespace, held by its nsfs fd (no /run/netns file).
fn new_netns() -> Netns {
    std::thread::spawn(|| -> anyhow::Result<Netns> {
        // Only this short-lived thread moves; the test's own namespace is untouched.
        unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        let file = std::fs::File::open("/proc/thread-self/ns/net")?;
        Ok(Netns::from_file(file)?)
    })
    .join()
    .expect("netns thread panicked")
    .expect("creating a network namespace")
}

/// A third address byte that differs between pairs of one run and, likely, between runs.
fn subnet_byte() -> u8 {
    let n = PAIR_SEQ.fetch_add(1, Ordering::Relaxed);
    ((std::process::id().wrapping_mul(31) + n * 7) % 250) as u8 + 1
}

/// Creates the veth in the current namespace and moves the `b` end into `b_fd`'s namespace;
/// returns the ifindex of the `a` end.
async fn create_veth(h: &Handle, b_fd: i32) -> anyhow::Result<u32> {
    h.link()
        .add(LinkVeth::new(VETH_A, VETH_B).build())
        .execute()
        .await
        .context("adding the veth pair")?;
    let b = link_index(h, VETH_B).await?;
    h.link()
        .set(LinkUnspec::new_with_index(b).setns_by_fd(b_fd).build())
        .execute()
        .await
        .context("moving the veth end to namespace b")?;
    link_index(h, VETH_A).await
}

async fn link_index(h: &Handle, name: &str) -> anyhow::Result<u32> {
    let link: Option<LinkMessage> = h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .with_context(|| format!("looking up link {name}"))?;
    let link = link.with_context(|| format!("no link {name}"))?;
    debug_assert!(
        link.attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::IfName(n) if n == name))
    );
    Ok(link.header.index)
}

/// A fresh network namespace joined to the test's own (the host's) by a veth the test
/// creates, with an address on each end: for servers the host's processes reach over a real
/// device. Nothing else of the host's namespace is touched; the veth (both ends) is deleted
/// on drop, the namespace goes with its fd.
pub struct HostLinked {
    /// The far side: its namespace, veth end and addresses (`10.231.x.2`, `fd00:231:x::2`).
    pub far: NetnsEnd,
    /// The host side's veth end and addresses (`.1`).
    pub host: NetnsEnd,
}

impl HostLinked {
    pub fn new() -> HostLinked {
        crate::require_root();
        let x = subnet_byte();
        let seq = PAIR_SEQ.fetch_add(1, Ordering::Relaxed);
        // Unique in the host's namespace (at most 15 characters).
        let tag = format!("{}{}", std::process::id() % 100_000, seq % 100);
        let host_name: &'static str = Box::leak(format!("cdh{tag}").into_boxed_str());
        let far_name: &'static str = Box::leak(format!("cdf{tag}").into_boxed_str());
        let host_ns = Netns::from_file(
            std::fs::File::open("/proc/thread-self/ns/net").expect("opening our netns"),
        )
        .expect("our network namespace");
        let far_ns = new_netns();
        let far_fd = far_ns.as_fd().as_raw_fd();
        let host_index = host_ns
            .netlink(|h| async move {
                h.link()
                    .add(LinkVeth::new(host_name, far_name).build())
                    .execute()
                    .await
                    .context("adding the veth pair")?;
                let far = link_index(&h, far_name).await?;
                h.link()
                    .set(LinkUnspec::new_with_index(far).setns_by_fd(far_fd).build())
                    .execute()
                    .await
                    .context("moving the veth end to the new namespace")?;
                link_index(&h, host_name).await
            })
            .expect("creating the host-linked veth");
        let far_index = far_ns
            .netlink(|h| async move { link_index(&h, far_name).await })
            .expect("finding the moved veth end");
        let linked = HostLinked {
            far: NetnsEnd::new(far_ns, far_name, far_index, x, 2),
            host: NetnsEnd::new(host_ns, host_name, host_index, x, 1),
        };
        linked.far.configure();
        linked.host.configure();
        linked
    }
}

impl Default for HostLinked {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for HostLinked {
    fn drop(&mut self) {
        let index = self.host.ifindex;
        let _ = self
            .host
            .netns
            .netlink(|h| async move { Ok(h.link().del(index).execute().await?) });
    }
}
