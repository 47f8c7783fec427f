//! The proxy on the async runtime: accepts redirected connections, finds where each was
//! going (the kernel's record by the client's local port), connects there and passes the
//! data through the connection's toxics.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsFd as _, BorrowedFd},
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::maps::{HashMap, MapData};
use chaosd_common::{
    net::{FAMILY_V4, FAMILY_V6},
    proxy::{NO_SLOT, ProxyOrigin, ProxyPeerKey, netns_words},
};
use rand::Rng as _;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    task::JoinSet,
    time::Instant,
};

use super::{
    served::Place,
    toxic::{ActiveToxic, Toxic, Toxics},
};

/// What the accept loop shares with the connections it starts.
pub struct Shared {
    /// The kernel's records by client address (`PROXY_PEERS`); one short syscall per accept.
    pub peers: Mutex<HashMap<MapData, ProxyPeerKey, ProxyOrigin>>,
    pub toxics: Toxics,
    /// The HTTP faults (`http.*`): a connection one of them hits passes through the HTTP layer.
    pub http: crate::faults::http::HttpFaults,
}

/// How a connection ends when a toxic ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Close both sides (FIN).
    Close,
    /// Reset the client's side (RST), close the server's.
    Reset,
    /// Reset the client's side once what was sent to it before has been written (asked by the
    /// HTTP layer: `http.abort --reset` after the responses to earlier pipelined requests).
    ResetWhenWritten,
}

const CHUNK: usize = 32 * 1024;

/// Accepts the redirected connections of one namespace's listener (`place`, where the
/// upstream connections are made too).
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, place: Place) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                let shared = Arc::clone(&shared);
                let place = place.clone();
                tokio::spawn(async move { serve(client, peer, &shared, &place).await });
            }
            Err(e) => {
                tracing::warn!("proxy accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Where a connection accepted from `peer` was going and what acts on it.
struct Route {
    to: SocketAddr,
    toxics: Vec<Arc<ActiveToxic>>,
    http: Vec<Arc<crate::faults::http::HttpFault>>,
}

/// The route of a connection accepted from `peer` in the namespace whose cookie is `netns`.
fn lookup(shared: &Shared, peer: SocketAddr, netns: u64) -> Option<Route> {
    let netns = netns_words(netns);
    let key = match peer {
        SocketAddr::V4(p) => ProxyPeerKey {
            family: FAMILY_V4,
            port: u32::from(p.port()),
            addr: [u32::from_ne_bytes(p.ip().octets()), 0, 0, 0],
            netns,
        },
        SocketAddr::V6(p) => ProxyPeerKey {
            family: FAMILY_V6,
            port: u32::from(p.port()),
            addr: words(p.ip().octets()),
            netns,
        },
    };
    let origin = {
        let mut peers = shared.peers.lock().unwrap_or_else(|e| e.into_inner());
        let origin = peers.get(&key, 0).ok()?;
        let _ = peers.remove(&key);
        origin
    };
    let to = origin_addr(&origin);
    let slots: Vec<u32> = origin
        .slots
        .iter()
        .copied()
        .filter(|s| *s != NO_SLOT)
        .collect();
    Some(Route {
        to,
        toxics: shared.toxics.of_slots(&slots),
        http: shared.http.of_slots(&slots),
    })
}

/// An IPv6 address as the four network-order words the kernel keeps.
fn words(octets: [u8; 16]) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (i, c) in octets.chunks(4).enumerate() {
        w[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
    }
    w
}

async fn serve(mut client: TcpStream, peer: SocketAddr, shared: &Shared, place: &Place) {
    let Some(Route { to, toxics, http }) = lookup(shared, peer, place.cookie()) else {
        tracing::warn!(%peer, "proxy: a connection nobody redirected (no kernel record); closed");
        return;
    };
    let mut upstream = match place.tcp_connect(to).await {
        Ok(s) => s,
        Err(e) => {
            // The client's connect already succeeded: a reset is the nearest to a refusal.
            tracing::debug!(%to, "proxy: upstream connect failed: {e}");
            reset_on_close(&client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let stop = watch::channel(None::<End>);
    let end = if http.is_empty() {
        let (ur, uw) = upstream.split();
        relay(&mut client, (ur, uw), &toxics, stop, std::future::ready(())).await
    } else {
        // The HTTP layer sits between the toxics and the server: the toxics act on what the
        // client sees, http.status answers included.
        let (near, far) = tokio::io::duplex(2 * CHUNK);
        let reset = stop.0.clone();
        let layer = crate::faults::http::serve(far, upstream, http, move || {
            reset.send_replace(Some(End::ResetWhenWritten));
        });
        relay(&mut client, tokio::io::split(near), &toxics, stop, layer).await
    };
    if end == Some(End::Reset) {
        reset_on_close(&client);
    }
}

/// Pumps both directions between the client and `upstream` (the server, or the HTTP layer,
/// `layer`, run alongside) until both end or a toxic ends the connection.
async fn relay<UR, UW>(
    client: &mut TcpStream,
    (ur, uw): (UR, UW),
    toxics: &[Arc<ActiveToxic>],
    (stop_tx, mut stop_rx): (watch::Sender<Option<End>>, watch::Receiver<Option<End>>),
    layer: impl Future<Output = ()>,
) -> Option<End>
where
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let (cr, cw) = client.split();
    let up = pump(cr, uw, true, toxics, &stop_tx);
    let down = pump(ur, cw, false, toxics, &stop_tx);
    tokio::select! {
        _ = async { tokio::join!(up, down, layer) } => None,
        e = connection_end(toxics) => Some(e),
        _ = stop_rx.wait_for(|e| matches!(e, Some(End::Close | End::Reset))) => *stop_tx.borrow(),
    }
}

/// SO_LINGER 0: closing the socket sends RST instead of FIN.
fn reset_on_close(stream: &TcpStream) {
    let fd: BorrowedFd<'_> = stream.as_fd();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::Linger, &linger);
}

/// The first connection-level end a toxic asks for: reset-peer's and timeout's timers, or a
/// never-closing timeout's fault ending. Never resolves without such a toxic.
async fn connection_end(toxics: &[Arc<ActiveToxic>]) -> End {
    let mut timers = JoinSet::new();
    for t in toxics {
        let t = Arc::clone(t);
        let (wait, end) = match t.toxic {
            Toxic::ResetPeer { after } => (Some(after), End::Reset),
            Toxic::Timeout { after, .. } => (after, End::Close),
            _ => continue,
        };
        timers.spawn(async move {
            match wait {
                // The fault may end first: then it ends nothing.
                Some(after) => tokio::select! {
                    _ = tokio::time::sleep(after) => t.live().then_some(end),
                    _ = t.wait_ended() => None,
                },
                // A timeout without a time closes when its fault ends (the data it swallowed
                // is gone, so the stream could not go on).
                None => {
                    t.wait_ended().await;
                    Some(end)
                }
            }
        });
    }
    while let Some(done) = timers.join_next().await {
        if let Ok(Some(end)) = done {
            return end;
        }
    }
    std::future::pending().await
}

/// Passes one direction's data through its toxics: reads go on while chunks wait out their
/// latency, so the delay adds once per chunk rather than stalling the stream.
async fn pump<R, W>(
    mut r: R,
    mut w: W,
    upstream: bool,
    toxics: &[Arc<ActiveToxic>],
    stop: &watch::Sender<Option<End>>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mine: Vec<&ActiveToxic> = toxics
        .iter()
        .map(Arc::as_ref)
        .filter(|t| t.toxic.acts_on(upstream))
        .collect();
    if mine.is_empty() {
        // Reads of a chunk's size: `copy`'s 8 KiB buffer held a loopback stream to 0.67 GiB/s
        // (1.1 with this; `cargo xtask bench --only proxy`).
        let mut r = tokio::io::BufReader::with_capacity(CHUNK, r);
        let _ = tokio::io::copy_buf(&mut r, &mut w).await;
        finish(&mut w, upstream, stop).await;
        return;
    }
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = write_through(&mut w, rx, &mine, upstream, stop);
    tokio::join!(reader, writer);
}

/// Passes a direction's end on: a close (FIN), or downstream, when the HTTP layer asked for
/// a reset, the reset now that everything before it was written.
async fn finish<W: AsyncWrite + Unpin>(
    w: &mut W,
    upstream: bool,
    stop: &watch::Sender<Option<End>>,
) {
    if !upstream && *stop.borrow() == Some(End::ResetWhenWritten) {
        let _ = w.flush().await;
        stop.send_replace(Some(End::Reset));
    } else {
        let _ = w.shutdown().await;
    }
}

/// Writes each chunk once its toxics allow: latency, then slices and the bandwidth's pace;
/// closes the connection at a data limit, and passes the close on (late with slow-close).
async fn write_through<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    toxics: &[&ActiveToxic],
    upstream: bool,
    stop: &watch::Sender<Option<End>>,
) {
    let mut budgets: Vec<(&ActiveToxic, u64)> = toxics
        .iter()
        .filter_map(|t| match t.toxic {
            Toxic::LimitData { bytes, .. } => Some((*t, bytes)),
            _ => None,
        })
        .collect();
    let mut last_due = Instant::now();
    let mut pace = Instant::now();
    while let Some((arrived, chunk)) = rx.recv().await {
        let live: Vec<Toxic> = toxics
            .iter()
            .filter(|t| t.live())
            .map(|t| t.toxic)
            .collect();
        if live.iter().any(|t| matches!(t, Toxic::Timeout { .. })) {
            continue;
        }
        let delay: Duration = live.iter().map(sampled_latency).sum();
        let due = (arrived + delay).max(last_due);
        last_due = due;
        // A deadline already past would still wait for the timer's next 1 ms tick: 0 ms of
        // latency cost ~1.1 ms per chunk and direction.
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let shape = Shape::of(&live);
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at(shape.piece_len(rest.len()));
            rest = tail;
            let allowed = budgets
                .iter()
                .filter(|(t, _)| t.live())
                .map(|(_, left)| *left)
                .min()
                .unwrap_or(u64::MAX);
            let n = piece
                .len()
                .min(usize::try_from(allowed).unwrap_or(usize::MAX));
            if let Some(rate) = shape.rate {
                let start = pace.max(Instant::now());
                tokio::time::sleep_until(start).await;
                pace = start + Duration::from_secs_f64(n as f64 / rate as f64);
            }
            if w.write_all(&piece[..n]).await.is_err() {
                return;
            }
            for (_, left) in budgets.iter_mut().filter(|(t, _)| t.live()) {
                *left -= n as u64;
                if *left == 0 {
                    let _ = w.flush().await;
                    stop.send_replace(Some(End::Close));
                    return;
                }
            }
            if !rest.is_empty() && !shape.gap.is_zero() {
                tokio::time::sleep(shape.gap).await;
            }
        }
    }
    let linger = toxics
        .iter()
        .filter(|t| t.live())
        .filter_map(|t| match t.toxic {
            Toxic::SlowClose { delay, .. } => Some(delay),
            _ => None,
        })
        .max();
    if let Some(delay) = linger {
        tokio::time::sleep(delay).await;
    }
    finish(w, upstream, stop).await;
}

/// How a chunk is cut and paced: the slowest bandwidth toxic, the first slicer.
struct Shape {
    rate: Option<u64>,
    slice: Option<(u64, u64)>,
    gap: Duration,
}

impl Shape {
    fn of(live: &[Toxic]) -> Shape {
        let rate = live
            .iter()
            .filter_map(|t| match t {
                Toxic::Bandwidth { bytes_per_sec, .. } => Some((*bytes_per_sec).max(1)),
                _ => None,
            })
            .min();
        let slicer = live.iter().find_map(|t| match t {
            Toxic::Slicer {
                size,
                variation,
                delay,
                ..
            } => Some(((*size, *variation), *delay)),
            _ => None,
        });
        Shape {
            rate,
            slice: slicer.map(|(s, _)| s),
            gap: slicer.map(|(_, d)| d).unwrap_or_default(),
        }
    }

    /// The next piece's length out of `left` bytes: a slice, or 10 ms worth at the rate so
    /// the pace stays smooth, or all of it.
    fn piece_len(&self, left: usize) -> usize {
        let want = match (self.slice, self.rate) {
            (Some((size, variation)), _) => {
                size - variation + rand::rng().random_range(0..=2 * variation)
            }
            (None, Some(rate)) => (rate / 100).max(1),
            (None, None) => return left,
        };
        left.min(usize::try_from(want.max(1)).unwrap_or(usize::MAX))
    }
}

/// A latency toxic's delay for one chunk: uniform in latency ± jitter; zero for others.
fn sampled_latency(toxic: &Toxic) -> Duration {
    let Toxic::Latency {
        latency, jitter, ..
    } = *toxic
    else {
        return Duration::ZERO;
    };
    if jitter.is_zero() {
        return latency;
    }
    let spread = jitter.as_nanos() as u64;
    let offset = rand::rng().random_range(0..=2 * spread);
    (latency + Duration::from_nanos(offset)).saturating_sub(jitter)
}

/// Where the kernel's record (a proxied connect's or a redirected DNS query's) says the
/// client was going; a dual-stack socket's IPv4-mapped destination as the IPv4 address it is.
pub(crate) fn origin_addr(origin: &ProxyOrigin) -> SocketAddr {
    let port = origin.port as u16;
    if origin.family == FAMILY_V6 {
        let mut octets = [0u8; 16];
        for (i, w) in origin.addr.iter().enumerate() {
            octets[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        let ip = Ipv6Addr::from(octets);
        if let Some(v4) = ip.to_ipv4_mapped() {
            return SocketAddr::V4(SocketAddrV4::new(v4, port));
        }
        SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0))
    } else {
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(origin.addr[0].to_ne_bytes()),
            port,
        ))
    }
}
