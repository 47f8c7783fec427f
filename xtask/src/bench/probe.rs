//! Traffic probes: a UDP sender that runs inside a target cgroup (a hidden xtask subcommand,
//! so it is a separate process the cgroup can hold), and a receiver that reads the kernel's
//! arrival timestamps (SO_TIMESTAMPNS) so control latency is measured from the datapath.

use std::{
    collections::HashSet,
    io::IoSliceMut,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};

/// Arguments of `cargo xtask __bench-udp-send`.
#[derive(clap::Args, Debug)]
pub struct SenderArgs {
    /// Where to send.
    #[arg(long)]
    to: SocketAddr,
    /// cgroup2 directory to join before creating the socket.
    #[arg(long)]
    cgroup: PathBuf,
    /// Datagrams to send; without it, send until killed.
    #[arg(long)]
    count: Option<u32>,
    /// Pause between datagrams, in microseconds.
    #[arg(long, default_value_t = 20)]
    interval_us: u64,
}

/// The sender: joins its cgroup, then sends `[seq_le32][sent_ns_le64]` datagrams (the send
/// time on CLOCK_REALTIME, which the receiver's arrival stamps use too), ignoring send errors
/// (a dropped egress packet may fail `send`).
pub fn run_sender(args: &SenderArgs) -> Result<()> {
    std::fs::write(args.cgroup.join("cgroup.procs"), "0")
        .with_context(|| format!("joining {}", args.cgroup.display()))?;
    // Fine-grained sleeps: without this, timer slack rounds each pause up to ~50 µs more.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64) };
    // Any local address: the receiver may be on loopback or across a veth.
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    let pause = Duration::from_micros(args.interval_us);
    let mut payload = [0u8; 12];
    for seq in 0..args.count.unwrap_or(u32::MAX) {
        payload[..4].copy_from_slice(&seq.to_le_bytes());
        payload[4..].copy_from_slice(&now_ns().to_le_bytes());
        let _ = sock.send_to(&payload, args.to);
        std::thread::sleep(pause);
    }
    Ok(())
}

/// A sender process, killed and reaped on drop.
pub struct Sender(Child);

impl Sender {
    pub fn start(
        cgroup: &Path,
        to: SocketAddr,
        count: Option<u32>,
        interval_us: u64,
    ) -> Result<Sender> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["__bench-udp-send", "--to", &to.to_string()])
            .arg("--cgroup")
            .arg(cgroup)
            .args(["--interval-us", &interval_us.to_string()])
            .stdout(Stdio::null());
        if let Some(n) = count {
            cmd.args(["--count", &n.to_string()]);
        }
        Ok(Sender(cmd.spawn().context("starting the UDP sender")?))
    }

    pub fn finished(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One datagram from a [`Sender`]: its sequence number, when it was sent and when the kernel
/// queued it on the receiving socket (ns since the epoch, CLOCK_REALTIME both).
#[derive(Clone, Copy, Debug)]
pub struct Datagram {
    pub seq: u32,
    pub sent_ns: u64,
    pub arrived_ns: u64,
}

/// A UDP socket that reports each datagram's sequence number and kernel arrival time.
pub struct Receiver {
    sock: UdpSocket,
}

impl Receiver {
    /// On loopback, in the caller's network namespace.
    pub fn bind() -> Result<Receiver> {
        Self::bind_to(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }

    /// On `addr` (port 0: any), in the calling thread's network namespace.
    pub fn bind_to(addr: SocketAddr) -> Result<Receiver> {
        let sock = UdpSocket::bind(addr)?;
        setsockopt(&sock, sockopt::ReceiveTimestampns, &true)?;
        // Root may exceed rmem_max: room enough that a burst is never dropped for lack of it.
        let _ = setsockopt(&sock, sockopt::RcvBufForce, &(16 << 20));
        sock.set_nonblocking(true)?;
        Ok(Receiver { sock })
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("bound")
    }

    /// One datagram if one is queued: (sequence number, arrival time in ns since the epoch).
    pub fn try_recv(&self) -> Result<Option<(u32, u64)>> {
        Ok(self.try_recv_datagram()?.map(|d| (d.seq, d.arrived_ns)))
    }

    /// One datagram if one is queued, with its send time.
    pub fn try_recv_datagram(&self) -> Result<Option<Datagram>> {
        let mut buf = [0u8; 16];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let msg = match recvmsg::<()>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let stamp = msg
            .cmsgs()?
            .find_map(|c| match c {
                ControlMessageOwned::ScmTimestampns(ts) => {
                    Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
                }
                _ => None,
            })
            .unwrap_or_else(now_ns);
        if msg.bytes < 12 {
            return Ok(None);
        }
        let sent = u64::from_le_bytes(buf[4..12].try_into().expect("8 bytes"));
        Ok(Some(Datagram {
            seq: u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")),
            sent_ns: sent,
            arrived_ns: stamp,
        }))
    }

    /// Everything queued now.
    pub fn drain_datagrams(&self) -> Result<Vec<Datagram>> {
        let mut out = Vec::new();
        while let Some(d) = self.try_recv_datagram()? {
            out.push(d);
        }
        Ok(out)
    }

    /// Discards everything queued.
    pub fn drain(&self) -> Result<()> {
        self.drain_datagrams().map(drop)
    }

    /// Counts distinct datagrams until `sender` has exited and nothing came for `quiet`.
    pub fn count_until_done(&self, sender: &mut Sender, quiet: Duration) -> Result<u32> {
        let mut seen = HashSet::new();
        let mut last = Instant::now();
        loop {
            match self.try_recv()? {
                Some((seq, _)) => {
                    seen.insert(seq);
                    last = Instant::now();
                }
                None if sender.finished() && last.elapsed() >= quiet => break,
                None => std::thread::sleep(Duration::from_micros(200)),
            }
        }
        Ok(seen.len() as u32)
    }
}

/// CLOCK_REALTIME in ns, the clock SO_TIMESTAMPNS stamps with.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
