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

/// The most a read takes: one chunk.
const CHUNK: usize = 32 * 1024;
/// Chunks read and waiting for their time (a toxic direction's queue).
const HELD: usize = 64;

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

/// Passes one direction's data through its toxics. A chunk due at once (no latency to wait
/// out, no shaping) is written from the read buffer before the next read, as a plain copy
/// would. A chunk that must wait is queued, and reads go on while it waits, so the delay
/// adds once per chunk rather than stalling the stream, until the queue is empty again.
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
    let mut out = Writer::new(w, &mine);
    let mut queue = Queue::new();
    let mut buf = Vec::with_capacity(CHUNK);
    loop {
        buf.clear();
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Some(slot) = out.schedule(Instant::now()) else {
            continue;
        };
        if slot.due <= Instant::now() && slot.shape.is_plain() {
            // The common zero-delay case: no hand-off to the queue, and one buffer that stays
            // in cache (queueing every chunk held `tcp.latency 0ms` to 0.74 GiB/s).
            if !out.write(&slot, &buf, stop).await {
                return;
            }
            continue;
        }
        let first = (slot, std::mem::replace(&mut buf, queue.spare()));
        match queue.hold(&mut r, &mut out, first, stop).await {
            Held::Drained => {}
            Held::Eof => break,
            Held::Ended => return,
        }
    }
    out.close(upstream, stop).await;
}

/// How a spell of queued chunks ended.
enum Held {
    /// Everything read was written: back to writing chunks as they are read.
    Drained,
    /// The source ended and everything it sent was written.
    Eof,
    /// The connection ends: a data limit was reached or the write failed.
    Ended,
}

/// The chunks read but not yet written while one waits for its time (or is paced), and the
/// buffers written chunks leave for the next reads.
struct Queue {
    tx: mpsc::Sender<(Instant, Vec<u8>)>,
    rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    // A fresh buffer per chunk cost a third of the throughput: the allocator hands the freed
    // memory back to the kernel, so every chunk faulted in and zeroed new pages (0.52 M page
    // faults in 3 GB).
    spare_tx: mpsc::Sender<Vec<u8>>,
    spare_rx: mpsc::Receiver<Vec<u8>>,
}

impl Queue {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel(HELD);
        let (spare_tx, spare_rx) = mpsc::channel(HELD + 1);
        Queue {
            tx,
            rx,
            spare_tx,
            spare_rx,
        }
    }

    /// An empty buffer for a read: a written chunk's, or a new one.
    fn spare(&mut self) -> Vec<u8> {
        let mut buf = self
            .spare_rx
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        buf.clear();
        buf
    }

    /// Writes `first` and the chunks read meanwhile, each at its time, until none is left.
    async fn hold<R, W>(
        &mut self,
        r: &mut R,
        out: &mut Writer<'_, W>,
        (first, chunk): (Slot, Vec<u8>),
        stop: &watch::Sender<Option<End>>,
    ) -> Held
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let Queue {
            tx,
            rx,
            spare_tx,
            spare_rx,
        } = self;
        // Dropped once the writer is done, at one of its two awaits: a permit is taken
        // before the read, and a read that has not completed has taken nothing, so no chunk
        // is lost.
        let reader = async {
            loop {
                let Ok(permit) = tx.reserve().await else {
                    return;
                };
                let mut buf = spare_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
                buf.clear();
                match r.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => permit.send((Instant::now(), buf)),
                }
            }
        };
        let writer = async {
            let mut next = Some((first, chunk));
            loop {
                if let Some((slot, chunk)) = next.take() {
                    if !out.write(&slot, &chunk, stop).await {
                        return Held::Ended;
                    }
                    // Full only if the reader stopped taking buffers back: then this one goes.
                    let _ = spare_tx.try_send(chunk);
                }
                let Ok((arrived, chunk)) = rx.try_recv() else {
                    return Held::Drained;
                };
                match out.schedule(arrived) {
                    Some(slot) => next = Some((slot, chunk)),
                    None => {
                        let _ = spare_tx.try_send(chunk);
                    }
                }
            }
        };
        tokio::pin!(reader, writer);
        tokio::select! {
            held = &mut writer => held,
            () = &mut reader => match writer.await {
                Held::Drained => Held::Eof,
                ended => ended,
            },
        }
    }
}

/// When a chunk goes, and how it is cut and paced.
struct Slot {
    due: Instant,
    shape: Shape,
}

/// A direction's writing side under its toxics: latency, then slices and the bandwidth's
/// pace; closes the connection at a data limit, and passes the close on (late with
/// slow-close).
struct Writer<'a, W> {
    w: W,
    toxics: &'a [&'a ActiveToxic],
    /// What each data limit lets through still.
    budgets: Vec<(&'a ActiveToxic, u64)>,
    /// The last chunk's time: a later chunk never overtakes it.
    last_due: Instant,
    /// When the bandwidth lets the next piece go.
    pace: Instant,
}

impl<'a, W: AsyncWrite + Unpin> Writer<'a, W> {
    fn new(w: W, toxics: &'a [&'a ActiveToxic]) -> Self {
        let budgets = toxics
            .iter()
            .filter_map(|t| match t.toxic {
                Toxic::LimitData { bytes, .. } => Some((*t, bytes)),
                _ => None,
            })
            .collect();
        Writer {
            w,
            toxics,
            budgets,
            last_due: Instant::now(),
            pace: Instant::now(),
        }
    }

    /// When and how a chunk that `arrived` goes, by the toxics live now; `None` when a
    /// timeout drops it.
    fn schedule(&mut self, arrived: Instant) -> Option<Slot> {
        let live: Vec<Toxic> = self
            .toxics
            .iter()
            .filter(|t| t.live())
            .map(|t| t.toxic)
            .collect();
        if live.iter().any(|t| matches!(t, Toxic::Timeout { .. })) {
            return None;
        }
        let delay: Duration = live.iter().map(sampled_latency).sum();
        let due = (arrived + delay).max(self.last_due);
        self.last_due = due;
        Some(Slot {
            due,
            shape: Shape::of(&live),
        })
    }

    /// Writes `chunk` at its slot; false when the connection ends (a data limit reached, or
    /// the write failed).
    async fn write(
        &mut self,
        slot: &Slot,
        chunk: &[u8],
        stop: &watch::Sender<Option<End>>,
    ) -> bool {
        // A deadline already past would still wait for the timer's next 1 ms tick: 0 ms of
        // latency cost ~1.1 ms per chunk and direction.
        if slot.due > Instant::now() {
            tokio::time::sleep_until(slot.due).await;
        }
        let shape = &slot.shape;
        let mut rest = chunk;
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at(shape.piece_len(rest.len()));
            rest = tail;
            let allowed = self
                .budgets
                .iter()
                .filter(|(t, _)| t.live())
                .map(|(_, left)| *left)
                .min()
                .unwrap_or(u64::MAX);
            let n = piece
                .len()
                .min(usize::try_from(allowed).unwrap_or(usize::MAX));
            if let Some(rate) = shape.rate {
                let start = self.pace.max(Instant::now());
                tokio::time::sleep_until(start).await;
                self.pace = start + Duration::from_secs_f64(n as f64 / rate as f64);
            }
            if self.w.write_all(&piece[..n]).await.is_err() {
                return false;
            }
            for (_, left) in self.budgets.iter_mut().filter(|(t, _)| t.live()) {
                *left -= n as u64;
                if *left == 0 {
                    let _ = self.w.flush().await;
                    stop.send_replace(Some(End::Close));
                    return false;
                }
            }
            if !rest.is_empty() && !shape.gap.is_zero() {
                tokio::time::sleep(shape.gap).await;
            }
        }
        true
    }

    /// Passes the source's end on, late by the longest live slow-close.
    async fn close(mut self, upstream: bool, stop: &watch::Sender<Option<End>>) {
        let linger = self
            .toxics
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
        finish(&mut self.w, upstream, stop).await;
    }
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

    /// Neither cut nor paced: the chunk goes in one write.
    fn is_plain(&self) -> bool {
        self.rate.is_none() && self.slice.is_none()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Stream;

    /// One stream through `pump` on loopback (a sending thread, the pump on a 2-worker
    /// runtime, a draining thread), as `cargo xtask bench --only proxy` measures the proxy,
    /// without the daemon. `PUMP_TOXIC=latency0|none`.
    #[test]
    #[ignore = "a throughput measurement, not a check"]
    fn pump_throughput() {
        let toxic = std::env::var("PUMP_TOXIC").unwrap_or_else(|_| "latency0".into());
        let secs: u64 = std::env::var("PUMP_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3);
        let toxics: Vec<Arc<ActiveToxic>> = match toxic.as_str() {
            "none" => vec![],
            _ => vec![Arc::new(ActiveToxic::new(Toxic::Latency {
                latency: Duration::ZERO,
                jitter: Duration::ZERO,
                stream: Stream::Both,
            }))],
        };
        let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sink_addr = sink.local_addr().unwrap();
        let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let front_addr = front.local_addr().unwrap();
        let drain = std::thread::spawn(move || {
            use std::io::Read as _;
            let (mut s, _) = sink.accept().unwrap();
            let mut buf = vec![0u8; 256 << 10];
            let mut total = 0u64;
            let mut first = None;
            loop {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                first.get_or_insert_with(std::time::Instant::now);
                total += n as u64;
            }
            (total, first.unwrap().elapsed())
        });
        let send = std::thread::spawn(move || {
            use std::io::Write as _;
            let mut s = std::net::TcpStream::connect(front_addr).unwrap();
            s.set_nodelay(true).unwrap();
            let chunk = vec![0x5au8; 128 << 10];
            let end = std::time::Instant::now() + Duration::from_secs(secs);
            while std::time::Instant::now() < end {
                s.write_all(&chunk).unwrap();
            }
        });
        // The runtime's CPU time (the proxy's share: its syscalls and copies), added up as
        // each worker stops.
        let cpu = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let spent = Arc::clone(&cpu);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .on_thread_stop(move || {
                let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
                    .map(|t| Duration::from(t).as_nanos() as u64)
                    .unwrap_or(0);
                spent.fetch_add(t, std::sync::atomic::Ordering::Relaxed);
            })
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let front = TcpListener::from_std({
                front.set_nonblocking(true).unwrap();
                front
            })
            .unwrap();
            let (client, _) = front.accept().await.unwrap();
            let upstream = TcpStream::connect(sink_addr).await.unwrap();
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            tokio::spawn(async move {
                let (mut client, mut upstream) = (client, upstream);
                let (cr, _cw) = client.split();
                let (_ur, uw) = upstream.split();
                let stop = watch::channel(None::<End>).0;
                pump(cr, uw, true, &toxics, &stop).await;
            })
            .await
            .unwrap();
        });
        drop(rt);
        send.join().unwrap();
        let (total, took) = drain.join().unwrap();
        let cpu = cpu.load(std::sync::atomic::Ordering::Relaxed) as f64;
        eprintln!(
            "pump {toxic}: {:.3} GiB/s, proxy CPU {:.3} s per GiB ({total} bytes in {took:?})",
            total as f64 / (1u64 << 30) as f64 / took.as_secs_f64(),
            cpu / 1e9 / (total as f64 / (1u64 << 30) as f64)
        );
    }
}
