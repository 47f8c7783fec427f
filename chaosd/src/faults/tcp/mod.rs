//! Proxy faults (`tcp.*`): a target cgroup's matching TCP connects are redirected in the
//! kernel (cgroup connect4, see `chaosd_common::proxy`) to a loopback listener of chaosd's,
//! whose proxy (on the async runtime) connects to the original destination and applies the
//! toxics of the faults that hit the connection. `getpeername()` still answers with the
//! address the application asked for. `tcp.down` redirects to a bound port nobody listens on,
//! so the connect fails with ECONNREFUSED without reaching the proxy.
//!
//! Connections made before a fault are left alone; after it ends, new connects go direct and
//! the connections it proxied keep flowing through the proxy without its toxic. When chaosd
//! dies, the program links close with it: new connects go direct at once.
//!
//! Targets in other network namespaces (containers) get listeners inside theirs, on the same
//! port, and their upstream connections are made from there ([`served`]).
//!
//! # Kernel requirements
//! cgroup sock_addr connect4 and getpeername4 (5.8+) and sock_ops programs with bpf_link, and
//! `bpf_get_current_pid_tgid` in sock_addr programs; SO_NETNS_COOKIE (5.14+) to tell the
//! namespaces chaosd listens in. IPv4 and IPv6, and IPv4-mapped destinations of dual-stack
//! sockets as IPv4.

pub mod bandwidth;
pub mod down;
pub mod latency;
pub mod limit_data;
pub(crate) mod proxy;
pub mod reset_peer;
pub(crate) mod served;
pub mod slicer;
pub mod slow_close;
pub mod timeout;
mod toxic;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::TcpListener as StdListener,
    sync::{Arc, Mutex, OnceLock},
};

use anyhow::Context as _;
use aya::{Ebpf, maps::HashMap};
use chaosd_common::{
    net::{NetKind, NetRule},
    proxy::{PROXY_FLAG_REFUSE, PROXY_PEERS_MAP},
};

use served::Place;
pub use toxic::Toxic;

use crate::{
    api::{NetFilter, Proto},
    error::{FaultError, RequestError},
    faults::kernel::{Kernel, ProgramGroup, SlotRuleFault},
    faults::net::{filter::peer_filter, loss::check_percent, percent_to_ppm},
    faults::{ActiveFault, ApplyContext},
};

/// The proxy's state: its listening sockets in each namespace it serves while a fault needs
/// them, and what the kernel tells it.
pub struct TcpState {
    shared: Arc<proxy::Shared>,
    /// By namespace ([`Place::key`]).
    sites: BTreeMap<u64, Site>,
    /// The listeners' port, the same in every namespace: the kernel rule names one port.
    proxy_port: Option<u16>,
    /// The refusing sockets' port (`tcp.down`), likewise.
    refuse_port: Option<u16>,
    /// The namespaces each proxy fault (by counter slot) holds, chaosd's own first.
    holds: BTreeMap<u32, Vec<Place>>,
}

/// What the proxy keeps open in one namespace: its listeners (one port on 127.0.0.1 and,
/// where the namespace has IPv6, on ::1: the kernel rewrites a connect to the loopback of its
/// own family, keeping the port), and a bound, never-listening port, where a redirected
/// connect is refused (`tcp.down`).
#[derive(Default)]
struct Site {
    listener: Option<Vec<tokio::task::AbortHandle>>,
    refuser: Option<Vec<tokio::net::TcpSocket>>,
}

impl TcpState {
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let peers = ebpf
            .take_map(PROXY_PEERS_MAP)
            .context("eBPF object has no proxy peers map")?;
        let peers = HashMap::try_from(peers).context("proxy peers map has the wrong type")?;
        Ok(TcpState {
            shared: Arc::new(proxy::Shared {
                peers: Mutex::new(peers),
                toxics: toxic::Toxics::default(),
                http: crate::faults::http::HttpFaults::default(),
            }),
            sites: BTreeMap::new(),
            proxy_port: None,
            refuse_port: None,
            holds: BTreeMap::new(),
        })
    }

    /// The loopback port connects hit by a fault go to (`down`: `tcp.down`'s), open in
    /// chaosd's namespace and in each of `places` (started where need be). On error, what no
    /// fault holds is closed.
    fn port_for(&mut self, down: bool, places: &[Place]) -> Result<u16, FaultError> {
        let mut port = if down {
            self.refuse_port
        } else {
            self.proxy_port
        };
        for place in std::iter::once(&Place::Home).chain(places) {
            match self.open_at(place, down, port) {
                Ok(p) => port = Some(p),
                Err(e) => {
                    self.close_unheld();
                    return Err(e);
                }
            }
        }
        let port = port.unwrap_or_default();
        if down {
            self.refuse_port = Some(port);
        } else {
            self.proxy_port = Some(port);
        }
        Ok(port)
    }

    /// Opens the listener (or, `down`, the refusing port) at `place` unless it is open; on
    /// `port` when one is chosen already, else on a free one. Returns the port.
    fn open_at(&mut self, place: &Place, down: bool, port: Option<u16>) -> Result<u16, FaultError> {
        let site = self.sites.entry(place.key()).or_default();
        let open = if down {
            site.refuser.is_some()
        } else {
            site.listener.is_some()
        };
        if let (true, Some(p)) = (open, port) {
            return Ok(p);
        }
        let where_ = place.describe();
        if down {
            let (p, sockets) = place
                .run(move || bind_pair(port, refusing_socket))
                .map_err(|e| bind_error("binding the refusing port", &where_, port, e))?;
            self.sites.entry(place.key()).or_default().refuser = Some(sockets);
            return Ok(p);
        }
        let (p, tasks) = start_listener(&self.shared, place, port)
            .map_err(|e| bind_error("binding the proxy's loopback listeners", &where_, port, e))?;
        tracing::info!(port = p, listeners = tasks.len(), place = %where_, "proxy listening on loopback");
        self.sites.entry(place.key()).or_default().listener = Some(tasks);
        Ok(p)
    }

    /// Closes what no proxy fault holds any more (proxied connections go on).
    fn close_unheld(&mut self) {
        let held: BTreeSet<u64> = self
            .holds
            .values()
            .flat_map(|places| places.iter().map(Place::key))
            .collect();
        self.sites.retain(|key, site| {
            let keep = held.contains(key);
            if !keep && let Some(tasks) = site.listener.take() {
                tasks.iter().for_each(tokio::task::AbortHandle::abort);
                tracing::info!(
                    netns = key,
                    "proxy listener closed: no proxy fault needs it"
                );
            }
            keep
        });
        if !self.sites.values().any(|s| s.listener.is_some()) {
            self.proxy_port = None;
        }
        if !self.sites.values().any(|s| s.refuser.is_some()) {
            self.refuse_port = None;
        }
    }

    /// Ends the proxy fault at `slot`'s hold on its namespaces; returns the ones besides
    /// chaosd's for [`ServedNetns::release`].
    fn release(&mut self, slot: u32) -> Vec<Place> {
        let places = self.holds.remove(&slot).unwrap_or_default();
        self.close_unheld();
        places
    }
}

fn bind_error(what: &'static str, place: &str, port: Option<u16>, e: std::io::Error) -> FaultError {
    let at = port.map(|p| format!(" on port {p}")).unwrap_or_default();
    let detail = format!(
        "in {place}{at} (a served namespace needs its loopback up and the port chaosd listens on at home free)"
    );
    FaultError::kernel(what, anyhow::Error::new(e).context(detail))
}

/// Binds the listeners at `place` and starts their accept loops on the current runtime.
fn start_listener(
    shared: &Arc<proxy::Shared>,
    place: &Place,
    port: Option<u16>,
) -> std::io::Result<(u16, Vec<tokio::task::AbortHandle>)> {
    let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let (port, listeners) = place.run(move || {
        bind_pair(port, |addr| {
            let l = StdListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
    })?;
    let _entered = runtime.enter();
    let mut tasks = Vec::new();
    for std in listeners {
        let listener = tokio::net::TcpListener::from_std(std)?;
        let task = runtime.spawn(proxy::accept_loop(
            listener,
            Arc::clone(shared),
            place.clone(),
        ));
        tasks.push(task.abort_handle());
    }
    Ok((port, tasks))
}

/// A TCP socket bound to `addr` without listening: a SYN to it is answered by RST.
fn refusing_socket(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(addr)?;
    Ok(socket)
}

/// Binds `bind` on 127.0.0.1 and on ::1 with one port: `port`, or a free one (retrying when
/// that one is taken on ::1); a namespace without IPv6 gets the IPv4 one only.
pub(crate) fn bind_pair<T: LocalPort>(
    port: Option<u16>,
    bind: impl Fn(std::net::SocketAddr) -> std::io::Result<T>,
) -> std::io::Result<(u16, Vec<T>)> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    let mut last = None;
    for _ in 0..32 {
        let v4 = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port.unwrap_or(0))))?;
        let got = local_port(&v4)?;
        match bind(SocketAddr::from((Ipv6Addr::LOCALHOST, got))) {
            Ok(v6) => return Ok((got, vec![v4, v6])),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && port.is_none() => last = Some(e),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(e),
            Err(e) => {
                tracing::info!("listening on IPv4 only: ::1 is not available ({e})");
                return Ok((got, vec![v4]));
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port free on both loopbacks")))
}

/// What [`bind_pair`] needs of what it binds: the port it got.
pub(crate) trait LocalPort {
    fn port(&self) -> std::io::Result<u16>;
}

impl LocalPort for StdListener {
    fn port(&self) -> std::io::Result<u16> {
        Ok(self.local_addr()?.port())
    }
}

impl LocalPort for std::net::UdpSocket {
    fn port(&self) -> std::io::Result<u16> {
        Ok(self.local_addr()?.port())
    }
}

impl LocalPort for tokio::net::TcpSocket {
    fn port(&self) -> std::io::Result<u16> {
        Ok(self.local_addr()?.port())
    }
}

fn local_port(bound: &impl LocalPort) -> std::io::Result<u16> {
    bound.port()
}

/// chaosd's network namespace cookie (SO_NETNS_COOKIE, 5.14+), read once.
pub fn netns_cookie() -> Option<u64> {
    static COOKIE: OnceLock<Option<u64>> = OnceLock::new();
    *COOKIE.get_or_init(|| {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
        let mut cookie = 0u64;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
        let rc = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::SOL_SOCKET,
                libc::SO_NETNS_COOKIE,
                (&raw mut cookie).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(cookie)
    })
}

/// The filter checks every proxy kind shares: TCP, by destination and port only.
pub fn validate_filter(filter: &NetFilter, percent: f64) -> Result<(), RequestError> {
    check_percent(percent)?;
    if let Some(src) = &filter.src {
        return Err(RequestError::BadFilter {
            field: "src",
            input: src.to_string(),
            reason: "a connect has no local address yet; filter by --dst and --port".into(),
        });
    }
    if !matches!(filter.proto, Proto::Any | Proto::Tcp) {
        return Err(RequestError::BadFilter {
            field: "proto",
            input: format!("{:?}", filter.proto).to_lowercase(),
            reason: "the proxy kinds act on TCP connections only; drop --proto".into(),
        });
    }
    peer_filter(filter).map(drop)
}

/// What a proxy fault puts in the proxy's registries under its slot.
pub(crate) enum Effect {
    /// A toxic on the connection's bytes (`tcp.*`).
    Toxic(Toxic),
    /// A fault on the connection's HTTP requests (`http.*`).
    Http(Arc<crate::faults::http::HttpFault>),
}

/// Applies one proxy fault (`tcp.*`).
pub fn apply_toxic(
    kernel: &Arc<Mutex<Kernel>>,
    toxic: Toxic,
    percent: f64,
    filter: &NetFilter,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let rule = apply_effect(kernel, Effect::Toxic(toxic), percent, filter, ctx)?;
    Ok(Box::new(rule))
}

/// Applies one proxy fault: its effect goes into the registry before the kernel rule exists,
/// so the first redirected connection finds it; the listeners are open in every namespace
/// the targets' processes are in by then. On error nothing of it stays. The rule counts
/// connections; kinds that count otherwise wrap it.
pub(crate) fn apply_effect(
    kernel: &Arc<Mutex<Kernel>>,
    effect: Effect,
    percent: f64,
    filter: &NetFilter,
    ctx: &ApplyContext<'_>,
) -> Result<SlotRuleFault, FaultError> {
    let mut filter = peer_filter(filter).map_err(FaultError::Refused)?;
    filter.proto = 6;
    let mut guard = kernel.lock().unwrap_or_else(|e| e.into_inner());
    let k = &mut *guard;
    k.require(ProgramGroup::Proxy)?;
    let places = k.served.acquire(&target_dirs(k, ctx))?;
    let slot = match add_rule(k, effect, percent, filter, ctx, &places) {
        Ok(slot) => slot,
        Err(e) => {
            k.served.release(&places);
            return Err(e);
        }
    };
    let slots = Arc::clone(&k.slots);
    drop(guard);
    Ok(SlotRuleFault::new(kernel, &slots, slot, "tcp", remove_rule))
}

/// The cgroup directories of a fault's targets, whose processes' namespaces it serves.
pub(crate) fn target_dirs(k: &Kernel, ctx: &ApplyContext<'_>) -> Vec<std::path::PathBuf> {
    ctx.targets
        .iter()
        .map(|t| k.net.cgroup_dir(&t.cgroup))
        .collect()
}

/// Ends a proxy fault: the rule first, so no new connect is sent to a toxic that is ending,
/// then the toxic (proxied connections) and the fault's hold on the listeners and namespaces.
fn remove_rule(k: &mut Kernel, slot: u32) -> Result<(), FaultError> {
    let result = k.net.remove_fault(&mut k.ebpf, slot);
    k.tcp.shared.toxics.end(slot);
    k.tcp.shared.http.end(slot);
    let places = k.tcp.release(slot);
    k.served.release(&places);
    result
}

fn add_rule(
    k: &mut Kernel,
    effect: Effect,
    percent: f64,
    filter: chaosd_common::net::PeerFilter,
    ctx: &ApplyContext<'_>,
    places: &[Place],
) -> Result<u32, FaultError> {
    let refuse = matches!(effect, Effect::Toxic(Toxic::Down));
    let port = k.tcp.port_for(refuse, places)?;
    let slot = match k.slots.allocate() {
        Ok(slot) => slot,
        Err(e) => {
            k.tcp.close_unheld();
            return Err(e);
        }
    };
    let mut held = vec![Place::Home];
    held.extend(places.iter().cloned());
    k.tcp.holds.insert(slot, held);
    let rule = NetRule {
        kind: NetKind::Proxy.code(),
        counter_slot: slot,
        deadline_ns: ctx.deadline_ns(),
        probability_ppm: percent_to_ppm(percent),
        flags: if refuse { PROXY_FLAG_REFUSE } else { 0 },
        redirect_port: u32::from(port),
        filter,
        ..NetRule::default()
    };
    match effect {
        Effect::Toxic(toxic) => k
            .tcp
            .shared
            .toxics
            .insert(slot, Arc::new(toxic::ActiveToxic::new(toxic))),
        Effect::Http(fault) => k.tcp.shared.http.insert(slot, fault),
    }
    if let Err(e) = k.net.add_fault(&mut k.ebpf, rule, ctx.cgroup_targets()) {
        k.tcp.shared.toxics.end(slot);
        k.tcp.shared.http.end(slot);
        k.tcp.release(slot);
        k.slots.release(slot);
        return Err(e);
    }
    Ok(slot)
}
