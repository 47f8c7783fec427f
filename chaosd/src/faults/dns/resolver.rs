//! chaosd's resolver on the async runtime: the kernel sends a target's port-53 queries here
//! (UDP and TCP, on one loopback port); each query's record (where it was going, which faults
//! hit its socket) is found by the client socket's cookie. Matching queries are answered as
//! their fault says; the rest, and delayed ones, are forwarded unchanged to the server the
//! application asked, and its answer is passed back unchanged.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::maps::{HashMap, MapData};
use chaosd_common::{
    net::PPM_ONE,
    proxy::{NO_SLOT, ProxyOrigin},
};
use hickory_proto::{
    op::{Header, Message, ResponseCode},
    rr::{
        RData, Record, RecordType,
        rdata::{A, AAAA},
    },
};
use rand::Rng as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, UdpSocket},
};

use super::diag::SockDiag;
use crate::{
    api::{AnswerAddr, DomainPattern},
    faults::tcp::{bind_pair, served::Place},
};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// How long a forwarded query waits for the real server (glibc gives up after 5 s).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest DNS message over UDP or TCP.
const MAX_MESSAGE: usize = 65_535;

/// Which queries a fault takes.
#[derive(Clone, Debug)]
pub struct Select {
    /// None: every name.
    pub domains: Vec<DomainPattern>,
    /// None: every type.
    pub types: Vec<RecordType>,
    /// Chance per matching query, parts per million.
    pub ppm: u32,
}

impl Select {
    fn matches(&self, qname: &str, qtype: RecordType) -> bool {
        (self.domains.is_empty() || self.domains.iter().any(|d| d.matches(qname)))
            && (self.types.is_empty() || self.types.contains(&qtype))
    }
}

/// What a fault does to a query it takes.
#[derive(Clone, Debug)]
pub enum Action {
    /// Answer with this response code (NXDOMAIN = 3, SERVFAIL = 2, ...).
    Error(u16),
    /// No answer at all.
    Timeout,
    /// Answer A/AAAA queries with these addresses (other types: an empty answer).
    Answer { ips: Vec<AnswerAddr>, ttl: u32 },
    /// Forward after this long.
    Delay(Duration),
}

/// One DNS fault as the resolver applies it, with its counters.
#[derive(Debug)]
pub struct DnsFault {
    pub select: Select,
    pub action: Action,
    /// Queries that matched its names and types.
    pub seen: AtomicU64,
    /// Queries it acted on (its dice hit).
    pub affected: AtomicU64,
}

impl DnsFault {
    pub fn new(select: Select, action: Action) -> Self {
        DnsFault {
            select,
            action,
            seen: AtomicU64::new(0),
            affected: AtomicU64::new(0),
        }
    }
}

/// What the resolver's tasks share.
pub struct Shared {
    /// The kernel's records by socket cookie (`PROXY_ORIGINS`).
    pub origins: Mutex<HashMap<MapData, u64, ProxyOrigin>>,
    /// The DNS faults in force, by counter slot (the slots the kernel records name).
    pub faults: RwLock<BTreeMap<u32, Arc<DnsFault>>>,
}

/// One namespace the resolver listens in: where its upstream sockets are made, and a
/// NETLINK_SOCK_DIAG socket there (it sees only its own namespace's sockets).
struct Site {
    place: Place,
    diag: Mutex<SockDiag>,
}

impl Shared {
    pub fn new(origins: HashMap<MapData, u64, ProxyOrigin>) -> Self {
        Shared {
            origins: Mutex::new(origins),
            faults: RwLock::default(),
        }
    }

    /// The record of the client socket at `peer` (in `site`) that sent to our `local` address.
    fn origin(
        &self,
        site: &Site,
        protocol: u8,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Option<ProxyOrigin> {
        let cookie = {
            let mut diag = site.diag.lock().unwrap_or_else(|e| e.into_inner());
            match diag.cookie(protocol, peer, local) {
                Ok(c) => c?,
                Err(e) => {
                    tracing::warn!(%peer, "dns resolver: sock_diag lookup: {e}");
                    return None;
                }
            }
        };
        let origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        origins.get(&cookie, 0).ok()
    }

    fn faults_of(&self, origin: &ProxyOrigin) -> Vec<Arc<DnsFault>> {
        let faults = self.faults.read().unwrap_or_else(|e| e.into_inner());
        origin
            .slots
            .iter()
            .filter(|s| **s != NO_SLOT)
            .filter_map(|s| faults.get(s).cloned())
            .collect()
    }
}

/// The resolver's sockets in one namespace while a DNS fault needs them: UDP and TCP on one
/// loopback port (127.0.0.1 and, where the namespace has it, ::1).
pub struct Server {
    pub port: u16,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

/// Binds the resolver's sockets at `place` (on `port`, or a free one when none is chosen yet)
/// and starts serving on the current runtime.
pub fn start(shared: &Arc<Shared>, place: &Place, port: Option<u16>) -> std::io::Result<Server> {
    let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let (port, udp, tcp, diag) = place.run(move || {
        let (port, udp, tcp) = bind_all(port)?;
        Ok((port, udp, tcp, SockDiag::open()?))
    })?;
    let site = Arc::new(Site {
        place: place.clone(),
        diag: Mutex::new(diag),
    });
    let _entered = runtime.enter();
    let mut tasks = Vec::new();
    for s in udp {
        s.set_nonblocking(true)?;
        let s = Arc::new(UdpSocket::from_std(s)?);
        let task = udp_loop(s, Arc::clone(shared), Arc::clone(&site));
        tasks.push(runtime.spawn(task).abort_handle());
    }
    for l in tcp {
        l.set_nonblocking(true)?;
        let l = TcpListener::from_std(l)?;
        let task = tcp_loop(l, Arc::clone(shared), Arc::clone(&site));
        tasks.push(runtime.spawn(task).abort_handle());
    }
    tracing::info!(
        port,
        sockets = tasks.len(),
        place = %place.describe(),
        "dns resolver listening on loopback"
    );
    Ok(Server { port, tasks })
}

type Bound = (u16, Vec<std::net::UdpSocket>, Vec<std::net::TcpListener>);

/// UDP and TCP on 127.0.0.1 and ::1 (where the namespace has IPv6) with one port: `port`, or
/// a free one (retrying when it is taken for TCP).
fn bind_all(port: Option<u16>) -> std::io::Result<Bound> {
    let mut last = None;
    for _ in 0..32 {
        let (got, udp) = bind_pair(port, std::net::UdpSocket::bind)?;
        match bind_pair(Some(got), std::net::TcpListener::bind) {
            Ok((_, tcp)) if tcp.len() == udp.len() => return Ok((got, udp, tcp)),
            Ok(_) => {
                return Err(std::io::Error::other(
                    "::1 took UDP but not TCP on the resolver's port",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && port.is_none() => {
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port free for UDP and TCP")))
}

async fn udp_loop(sock: Arc<UdpSocket>, shared: Arc<Shared>, site: Arc<Site>) {
    let Ok(local) = sock.local_addr() else { return };
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                let query = buf[..n].to_vec();
                let sock = Arc::clone(&sock);
                let shared = Arc::clone(&shared);
                let site = Arc::clone(&site);
                tokio::spawn(async move {
                    if let Some(reply) = serve_udp(&shared, &site, local, peer, &query).await {
                        let _ = sock.send_to(&reply, peer).await;
                    }
                });
            }
            Err(e) => {
                tracing::debug!("dns resolver: udp receive: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_udp(
    shared: &Shared,
    site: &Site,
    local: SocketAddr,
    peer: SocketAddr,
    query: &[u8],
) -> Option<Vec<u8>> {
    let Some(origin) = shared.origin(site, IPPROTO_UDP, local, peer) else {
        tracing::warn!(%peer, "dns resolver: a query nobody redirected (no kernel record); dropped");
        return None;
    };
    let to = crate::faults::tcp::proxy::origin_addr(&origin);
    match decide(shared, &origin, query).await {
        Outcome::Reply(r) => Some(r),
        Outcome::NoAnswer => None,
        Outcome::Forward => forward_udp(&site.place, to, query)
            .await
            .inspect_err(|e| tracing::debug!(%to, "dns resolver: forwarding over udp: {e}"))
            .ok(),
    }
}

async fn forward_udp(place: &Place, to: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let any: SocketAddr = if to.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = place.udp_bind(any).await?;
    sock.connect(to).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv(&mut buf))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    buf.truncate(n);
    Ok(buf)
}

async fn tcp_loop(listener: TcpListener, shared: Arc<Shared>, site: Arc<Site>) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let shared = Arc::clone(&shared);
                let site = Arc::clone(&site);
                tokio::spawn(async move { serve_tcp(&shared, &site, stream, local, peer).await });
            }
            Err(e) => {
                tracing::debug!("dns resolver: tcp accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A TCP client: length-prefixed queries, each decided on its own; forwarded ones share one
/// upstream connection, opened at the first.
async fn serve_tcp(
    shared: &Shared,
    site: &Site,
    mut client: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
) {
    let Some(origin) = shared.origin(site, IPPROTO_TCP, local, peer) else {
        tracing::warn!(%peer, "dns resolver: a connection nobody redirected (no kernel record); closed");
        return;
    };
    let to = crate::faults::tcp::proxy::origin_addr(&origin);
    let mut upstream: Option<TcpStream> = None;
    while let Ok(query) = read_framed(&mut client).await {
        let reply = match decide(shared, &origin, &query).await {
            Outcome::Reply(r) => r,
            Outcome::NoAnswer => continue,
            Outcome::Forward => {
                if upstream.is_none() {
                    match tokio::time::timeout(UPSTREAM_TIMEOUT, site.place.tcp_connect(to)).await {
                        Ok(Ok(s)) => upstream = Some(s),
                        _ => return,
                    }
                }
                let Some(up) = upstream.as_mut() else { return };
                let answered = async {
                    write_framed(up, &query).await?;
                    read_framed(up).await
                };
                match tokio::time::timeout(UPSTREAM_TIMEOUT, answered).await {
                    Ok(Ok(r)) => r,
                    _ => return,
                }
            }
        };
        if write_framed(&mut client, &reply).await.is_err() {
            return;
        }
    }
}

async fn read_framed(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = s.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_framed(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    s.write_all(&out).await
}

/// What becomes of one query.
enum Outcome {
    Reply(Vec<u8>),
    NoAnswer,
    Forward,
}

/// Applies the faults that hit the query's socket: each whose names and types match counts
/// it as seen and rolls its dice; delays that hit add up; the first other action that hits
/// answers (or withholds the answer); otherwise the query is forwarded.
async fn decide(shared: &Shared, origin: &ProxyOrigin, query: &[u8]) -> Outcome {
    let faults = shared.faults_of(origin);
    if faults.is_empty() {
        return Outcome::Forward;
    }
    // A message chaosd cannot read goes to the server as it is.
    let Ok(msg) = Message::from_vec(query) else {
        return Outcome::Forward;
    };
    let Some(q) = msg.queries().first() else {
        return Outcome::Forward;
    };
    let qname = q
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let qtype = q.query_type();
    let mut delay = Duration::ZERO;
    let mut act: Option<&Action> = None;
    for f in &faults {
        if !f.select.matches(&qname, qtype) {
            continue;
        }
        f.seen.fetch_add(1, Ordering::Relaxed);
        let hit = f.select.ppm >= PPM_ONE || rand::rng().random_range(0..PPM_ONE) < f.select.ppm;
        if !hit {
            continue;
        }
        match &f.action {
            Action::Delay(d) => {
                f.affected.fetch_add(1, Ordering::Relaxed);
                delay += *d;
            }
            other if act.is_none() => {
                f.affected.fetch_add(1, Ordering::Relaxed);
                act = Some(other);
            }
            _ => {}
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match act {
        None | Some(Action::Delay(_)) => Outcome::Forward,
        Some(Action::Timeout) => Outcome::NoAnswer,
        Some(Action::Error(code)) => reply(&msg, ResponseCode::from(0, *code as u8), Vec::new()),
        Some(Action::Answer { ips, ttl }) => {
            let records = forged(q.name(), qtype, ips, *ttl);
            reply(&msg, ResponseCode::NoError, records)
        }
    }
}

/// The records a `dns.answer` fault gives a query of `qtype`.
fn forged(
    name: &hickory_proto::rr::Name,
    qtype: RecordType,
    ips: &[AnswerAddr],
    ttl: u32,
) -> Vec<Record> {
    let mut rng = rand::rng();
    ips.iter()
        .filter_map(|ip| {
            let rdata = match (qtype, ip) {
                (RecordType::A, AnswerAddr::Fixed(IpAddr::V4(v4))) => RData::A(A(*v4)),
                (RecordType::AAAA, AnswerAddr::Fixed(IpAddr::V6(v6))) => RData::AAAA(AAAA(*v6)),
                // Random addresses come from ranges reserved for tests: 198.18.0.0/15 and
                // 2001:db8::/32, so nothing real answers there.
                (RecordType::A, AnswerAddr::Random) => {
                    let low: u32 = rng.random_range(0..(1 << 17));
                    RData::A(A(Ipv4Addr::from(0xc612_0000 | low)))
                }
                (RecordType::AAAA, AnswerAddr::Random) => {
                    let low: u128 = rng.random_range(0..(1u128 << 96));
                    RData::AAAA(AAAA(Ipv6Addr::from((0x2001_0db8u128 << 96) | low)))
                }
                _ => return None,
            };
            Some(Record::from_rdata(name.clone(), ttl, rdata))
        })
        .collect()
}

fn reply(query: &Message, code: ResponseCode, answers: Vec<Record>) -> Outcome {
    let mut r = Message::new();
    r.set_header(Header::response_from_request(query.header()));
    r.set_recursion_available(true);
    r.set_response_code(code);
    r.add_queries(query.queries().iter().cloned());
    r.add_answers(answers);
    match r.to_vec() {
        Ok(bytes) => Outcome::Reply(bytes),
        Err(e) => {
            tracing::warn!("dns resolver: encoding an answer: {e}");
            Outcome::Forward
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::units::Quantity as _;

    #[test]
    fn patterns_match_exact_names_and_strict_subdomains() {
        let wild = DomainPattern::parse("*.svc.test").unwrap();
        assert!(wild.matches("db.svc.test"));
        assert!(wild.matches("a.b.svc.test"));
        assert!(!wild.matches("svc.test"));
        assert!(!wild.matches("xsvc.test"));
        let exact = DomainPattern::parse("Db.Svc.Test.").unwrap();
        assert!(exact.matches("db.svc.test"));
        assert!(!exact.matches("x.db.svc.test"));
    }

    #[test]
    fn error_replies_keep_the_id_and_question() {
        let mut q = Message::new();
        q.set_id(4242);
        q.add_query(hickory_proto::op::Query::query(
            "db.svc.test.".parse().unwrap(),
            RecordType::A,
        ));
        let Outcome::Reply(bytes) = reply(&q, ResponseCode::NXDomain, Vec::new()) else {
            panic!("no reply")
        };
        let r = Message::from_vec(&bytes).unwrap();
        assert_eq!(r.id(), 4242);
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
        assert_eq!(r.queries(), q.queries());
    }
}
