//! Traffic probes: a UDP sender that runs inside a target cgroup (a hidden xtask subcommand,
//! so it is a separate process the cgroup can hold), and a receiver that reads the kernel's
//! arrival timestamps (SO_TIMESTAMPNS) so control latency is measured from the datapath.

use std::{
    collections::HashSet,
    io::IoSliceMut,
    net::{SocketAddr, UdpSocket},
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

/// The sender: joins its cgroup, then sends `[seq_le32]` datagrams, ignoring send errors
/// (a dropped egress packet may fail `send`).
pub fn run_sender(args: &SenderArgs) -> Result<()> {
    std::fs::write(args.cgroup.join("cgroup.procs"), "0")
        .with_context(|| format!("joining {}", args.cgroup.display()))?;
    // Fine-grained sleeps: without this, timer slack rounds each pause up to ~50 µs more.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64) };
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let pause = Duration::from_micros(args.interval_us);
    for seq in 0..args.count.unwrap_or(u32::MAX) {
        let _ = sock.send_to(&seq.to_le_bytes(), args.to);
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

/// A loopback UDP socket that reports each datagram's sequence number and kernel arrival time.
pub struct Receiver {
    sock: UdpSocket,
}

impl Receiver {
    pub fn bind() -> Result<Receiver> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
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
        let len = msg.bytes;
        let seq = (len >= 4).then(|| u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]));
        Ok(seq.map(|s| (s, stamp)))
    }

    /// Discards everything queued.
    pub fn drain(&self) -> Result<()> {
        while self.try_recv()?.is_some() {}
        Ok(())
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
