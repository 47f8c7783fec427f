//! Traffic probes that measure a fault from outside: senders run inside a cgroup (through the
//! `chaosd-test-helper` binary) and receivers that count what arrived.

use std::{
    collections::HashSet,
    io,
    net::{SocketAddr, UdpSocket},
    process::Child,
    time::{Duration, Instant},
};

pub use chaosd::host::cgroup::spawn_in_cgroup;

/// Sends `count` datagrams `[tag, seq_le32]` to `to`, pausing briefly every 16 so the
/// receiver's buffer never overflows (an overflow would look like loss).
pub fn send_datagrams(to: SocketAddr, tag: u8, count: u32) -> io::Result<()> {
    // Loopback peers get a loopback source; others (another namespace) any local address.
    let bind: SocketAddr = match (to.is_ipv4(), to.ip().is_loopback()) {
        (true, true) => "127.0.0.1:0".parse().unwrap(),
        (false, true) => "[::1]:0".parse().unwrap(),
        (true, false) => "0.0.0.0:0".parse().unwrap(),
        (false, false) => "[::]:0".parse().unwrap(),
    };
    send_datagrams_from(bind, to, tag, count)
}

/// [`send_datagrams`] from a chosen local address (e.g. another loopback address).
pub fn send_datagrams_from(
    from: SocketAddr,
    to: SocketAddr,
    tag: u8,
    count: u32,
) -> io::Result<()> {
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

/// Pings an echo server at `to` with `[seq_le32]` datagrams, one at a time, `gap` apart;
/// returns each round trip in ns, `None` for a ping with no answer within a second.
pub fn udp_ping(to: SocketAddr, count: u32, gap: Duration) -> io::Result<Vec<Option<u64>>> {
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(to)?;
    let mut rtts = Vec::with_capacity(count as usize);
    let mut buf = [0u8; 64];
    for seq in 0..count {
        let sent = Instant::now();
        sock.send(&seq.to_le_bytes())?;
        let deadline = sent + Duration::from_secs(1);
        let mut rtt = None;
        // Late answers to earlier pings are skipped by their sequence number.
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            match sock.recv(&mut buf) {
                Ok(n) if n >= 4 && buf[..4] == seq.to_le_bytes() => {
                    rtt = Some(sent.elapsed().as_nanos() as u64);
                    break;
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        rtts.push(rtt);
        std::thread::sleep(gap);
    }
    Ok(rtts)
}

/// Sends `count` datagrams of `size` bytes (at least 12) to `to`, `gap` apart (none: as fast
/// as the socket takes them): `[seq_le32, CLOCK_MONOTONIC ns at send as le64, padding]`, so a
/// receiver on the same host reads one-way delays and the order of the flow.
pub fn send_stamped(to: SocketAddr, count: u32, size: usize, gap: Duration) -> io::Result<()> {
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = UdpSocket::bind(bind)?;
    let mut msg = vec![0u8; size.max(12)];
    for seq in 0..count {
        msg[..4].copy_from_slice(&seq.to_le_bytes());
        msg[4..12].copy_from_slice(&chaosd::faults::kernel::monotonic_ns().to_le_bytes());
        sock.send_to(&msg, to)?;
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    Ok(())
}

/// Tries a TCP connect to `to` and reports "ok" or the OS error number.
pub fn tcp_connect(to: SocketAddr) -> Result<(), i32> {
    std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .map(drop)
        .map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// What a TCP client saw of one connection (`chaosd-test-helper tcp-talk`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TcpTalk {
    /// The connect's errno, if it failed.
    pub connect_errno: Option<i32>,
    /// What getpeername() answered.
    pub peer: Option<String>,
    /// Bytes read before the end.
    pub received: usize,
    /// Reads that returned data.
    pub reads: usize,
    /// "eof", "timeout", or "errno N" (104 is ECONNRESET).
    pub end: String,
    /// From the connect to the end.
    pub elapsed_ms: u64,
}

/// Connects to `to`, sends `send` bytes, reads until EOF, an error or `read_timeout` of
/// silence.
pub fn tcp_talk(to: SocketAddr, send: usize, read_timeout: Duration) -> TcpTalk {
    let mut talk = TcpTalk {
        connect_errno: None,
        peer: None,
        received: 0,
        reads: 0,
        end: String::new(),
        elapsed_ms: 0,
    };
    let mut stream = match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            talk.connect_errno = Some(e.raw_os_error().unwrap_or(-1));
            talk.end = "no connection".into();
            return talk;
        }
    };
    let started = std::time::Instant::now();
    talk.peer = stream.peer_addr().ok().map(|a| a.to_string());
    let _ = stream.set_read_timeout(Some(read_timeout));
    if send > 0
        && let Err(e) = std::io::Write::write_all(&mut stream, &vec![b'x'; send])
    {
        talk.end = format!("errno {}", e.raw_os_error().unwrap_or(-1));
        return talk;
    }
    let mut buf = [0u8; 4096];
    talk.end = loop {
        match std::io::Read::read(&mut stream, &mut buf) {
            Ok(0) => break "eof".to_string(),
            Ok(n) => {
                talk.received += n;
                talk.reads += 1;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break "timeout".to_string();
            }
            Err(e) => break format!("errno {}", e.raw_os_error().unwrap_or(-1)),
        }
    };
    talk.elapsed_ms = started.elapsed().as_millis() as u64;
    talk
}

/// A UDP socket on loopback that counts distinct datagrams per tag.
pub struct UdpSink {
    sock: UdpSocket,
}

impl UdpSink {
    pub fn bind_loopback() -> io::Result<UdpSink> {
        Self::bind("127.0.0.1:0".parse().expect("literal address"))
    }

    pub fn bind(addr: SocketAddr) -> io::Result<UdpSink> {
        let sock = UdpSocket::bind(addr)?;
        // A big buffer (root may exceed rmem_max) so nothing is dropped for lack of room.
        let _ = nix::sys::socket::setsockopt(
            &sock,
            nix::sys::socket::sockopt::RcvBufForce,
            &(16 << 20),
        );
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(UdpSink { sock })
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("bound socket has an address")
    }

    /// Receives until every sender in `senders` has exited and the socket has been quiet for
    /// `quiet`, or `limit` passed. Returns the number of distinct datagrams per tag (index).
    pub fn count(
        &self,
        senders: &mut [Child],
        quiet: Duration,
        limit: Duration,
    ) -> io::Result<[u32; 256]> {
        let start = Instant::now();
        let mut seen = HashSet::new();
        let mut last = Instant::now();
        loop {
            if self.recv_into(&mut seen)? {
                last = Instant::now();
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

    /// Receives until `quiet` has passed since the last datagram (waiting up to 10 s for the
    /// first one) or `limit` passed; returns the number of distinct datagrams.
    pub fn count_until_quiet(&self, quiet: Duration, limit: Duration) -> io::Result<u32> {
        let start = Instant::now();
        let mut seen = HashSet::new();
        let mut last: Option<Instant> = None;
        loop {
            if self.recv_into(&mut seen)? {
                last = Some(Instant::now());
            }
            let idle = last.map_or(start.elapsed() > Duration::from_secs(10), |l| {
                l.elapsed() >= quiet
            });
            if idle || start.elapsed() > limit {
                return Ok(seen.len() as u32);
            }
        }
    }

    /// Waits up to the read timeout for one datagram; true if a probe datagram arrived.
    fn recv_into(&self, seen: &mut HashSet<(u8, u32)>) -> io::Result<bool> {
        let mut buf = [0u8; 64];
        match self.sock.recv(&mut buf) {
            Ok(5) => {
                seen.insert((buf[0], u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]])));
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}
