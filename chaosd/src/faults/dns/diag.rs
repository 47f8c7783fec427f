//! The socket cookie of a local peer, from NETLINK_SOCK_DIAG: how the resolver finds the
//! kernel's record of a redirected query (filed by socket cookie at connect/sendmsg time, when
//! a UDP socket's local port is often not bound yet).

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
/// `INET_DIAG_NOCOOKIE`: look the socket up by address only.
const NO_COOKIE: u32 = !0;

/// `struct inet_diag_sockid` (linux/inet_diag.h): ports and addresses in network order.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    ifindex: u32,
    cookie: [u32; 2],
}

/// `struct nlmsghdr` + `struct inet_diag_req_v2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Request {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

const _: () = assert!(std::mem::size_of::<SockId>() == 48);
const _: () = assert!(std::mem::size_of::<Request>() == 16 + 8 + 48);

/// One NETLINK_SOCK_DIAG socket; a lookup is one request and one reply.
pub struct SockDiag {
    fd: OwnedFd,
    seq: u32,
}

impl SockDiag {
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: setsockopt reads a timeval of the given size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(SockDiag { fd, seq: 0 })
    }

    /// The cookie of the socket of this host whose local address is `local` and which talks
    /// to `remote` (UDP or TCP, `protocol` an IPPROTO_*). The kernel's UDP and TCP lookups
    /// read the request's two ends the opposite way round, so both orders are asked and the
    /// answer whose local port is `local`'s is taken.
    pub fn cookie(
        &mut self,
        protocol: u8,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> io::Result<Option<u64>> {
        for (a, b) in [(remote, local), (local, remote)] {
            if let Some((sport, cookie)) = self.ask(protocol, a, b)?
                && sport == local.port()
            {
                return Ok(Some(cookie));
            }
        }
        Ok(None)
    }

    /// One request with `src` and `dst` as given; the found socket's local port and cookie.
    fn ask(
        &mut self,
        protocol: u8,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> io::Result<Option<(u16, u64)>> {
        self.seq = self.seq.wrapping_add(1);
        let family = if src.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let req = Request {
            len: std::mem::size_of::<Request>() as u32,
            kind: SOCK_DIAG_BY_FAMILY,
            flags: NLM_F_REQUEST,
            seq: self.seq,
            pid: 0,
            family: family as u8,
            protocol,
            ext: 0,
            pad: 0,
            states: !0,
            id: SockId {
                sport: src.port().to_be(),
                dport: dst.port().to_be(),
                src: words(src.ip()),
                dst: words(dst.ip()),
                ifindex: 0,
                cookie: [NO_COOKIE, NO_COOKIE],
            },
        };
        // SAFETY: sends the bytes of a repr(C) value of plain integers.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                (&raw const req).cast(),
                std::mem::size_of::<Request>(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 512];
        loop {
            // SAFETY: recv writes at most buf.len() bytes into buf.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            if n < 16 {
                return Err(io::Error::other("short sock_diag reply"));
            }
            let u32_at =
                |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
            let kind = u16::from_ne_bytes([buf[4], buf[5]]);
            if u32_at(8) != self.seq {
                continue; // a late answer to an earlier (timed-out) request
            }
            if kind == NLMSG_ERROR {
                // ENOENT: no such socket (closed, or the other order of the two ends).
                return Ok(None);
            }
            if kind != SOCK_DIAG_BY_FAMILY || n < 16 + 4 + 48 {
                return Err(io::Error::other("unexpected sock_diag reply"));
            }
            // inet_diag_msg: family, state, timer, retrans, then the sockid.
            let id = 16 + 4;
            let sport = u16::from_be_bytes([buf[id], buf[id + 1]]);
            let cookie = u64::from(u32_at(id + 40)) | (u64::from(u32_at(id + 44)) << 32);
            return Ok(Some((sport, cookie)));
        }
    }
}

/// An address as the four network-order words the kernel keeps (IPv4 in the first).
fn words(ip: IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(v4) => [u32::from_ne_bytes(v4.octets()), 0, 0, 0],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut w = [0u32; 4];
            for (i, c) in o.chunks(4).enumerate() {
                w[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            }
            w
        }
    }
}
