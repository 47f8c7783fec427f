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
//! # Kernel requirements
//! cgroup sock_addr connect4 and getpeername4 (5.8+) and sock_ops programs with bpf_link, and
//! `bpf_get_current_pid_tgid` in sock_addr programs; SO_NETNS_COOKIE (5.14+) to keep the
//! redirect inside chaosd's network namespace. IPv4 and IPv6 (IPv4-mapped destinations of
//! dual-stack sockets go direct).

pub mod bandwidth;
pub mod down;
pub mod latency;
pub mod limit_data;
pub(crate) mod proxy;
pub mod reset_peer;
pub mod slicer;
pub mod slow_close;
pub mod timeout;
mod toxic;

use std::{
    net::TcpListener as StdListener,
    sync::{Arc, Mutex, OnceLock},
};

use anyhow::Context as _;
use aya::{Ebpf, maps::HashMap};
use chaosd_common::{
    net::{NetKind, NetRule},
    proxy::{PROXY_FLAG_REFUSE, PROXY_PEERS_MAP},
};

pub use toxic::Toxic;

use crate::{
    api::{NetFilter, Proto},
    error::{FaultError, RequestError},
    faults::kernel::{Kernel, ProgramGroup, SlotRuleFault},
    faults::net::{filter::peer_filter, loss::check_percent, percent_to_ppm},
    faults::{ActiveFault, ApplyContext},
};

/// The proxy's state: its listener while a fault needs it, and what the kernel tells it.
pub struct TcpState {
    shared: Arc<proxy::Shared>,
    listener: Option<Listener>,
    /// A bound, never-listening port (on 127.0.0.1 and ::1): connects redirected there are
    /// refused (`tcp.down`).
    refuser: Option<(Vec<tokio::net::TcpSocket>, u16)>,
    /// Proxy faults in force: the listener and the refusing port live while this is above 0.
    users: usize,
}

/// The proxy's listeners: one port on 127.0.0.1 and, where the host has IPv6, on ::1 (the
/// kernel rewrites a connect to the loopback of its own family, keeping the port).
struct Listener {
    port: u16,
    tasks: Vec<tokio::task::AbortHandle>,
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
            listener: None,
            refuser: None,
            users: 0,
        })
    }

    /// The loopback port connects hit by a fault go to (`refuse`: `tcp.down`'s), started if
    /// need be.
    fn port_for(&mut self, refuse: bool) -> Result<u16, FaultError> {
        if refuse {
            if self.refuser.is_none() {
                self.refuser = Some(refusing_port()?);
            }
            return Ok(self.refuser.as_ref().map(|(_, p)| *p).unwrap_or_default());
        }
        if let Some(l) = &self.listener {
            return Ok(l.port);
        }
        let listener = self.start_listener()?;
        let port = listener.port;
        self.listener = Some(listener);
        Ok(port)
    }

    fn start_listener(&self) -> Result<Listener, FaultError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| FaultError::kernel("starting the proxy (no async runtime)", e))?;
        let (port, listeners) = bind_pair(|addr| {
            let l = StdListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .map_err(|e| FaultError::kernel("binding the proxy's loopback listeners", e))?;
        let _entered = runtime.enter();
        let mut tasks = Vec::new();
        for std in listeners {
            let listener = tokio::net::TcpListener::from_std(std)
                .map_err(|e| FaultError::kernel("registering the proxy's listener", e))?;
            let task = runtime.spawn(proxy::accept_loop(listener, Arc::clone(&self.shared)));
            tasks.push(task.abort_handle());
        }
        tracing::info!(port, listeners = tasks.len(), "proxy listening on loopback");
        Ok(Listener { port, tasks })
    }

    /// One proxy fault fewer; the last one closes the listener (proxied connections go on).
    fn release(&mut self) {
        self.users = self.users.saturating_sub(1);
        if self.users == 0 {
            if let Some(l) = self.listener.take() {
                l.tasks.iter().for_each(tokio::task::AbortHandle::abort);
                tracing::info!(
                    port = l.port,
                    "proxy listener closed: no proxy fault is active"
                );
            }
            self.refuser = None;
        }
    }
}

/// TCP sockets bound to one loopback port without listening: a SYN to it is answered by RST.
fn refusing_port() -> Result<(Vec<tokio::net::TcpSocket>, u16), FaultError> {
    let (port, sockets) = bind_pair(|addr| {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(addr)?;
        Ok(socket)
    })
    .map_err(|e| FaultError::kernel("binding the refusing port", e))?;
    Ok((sockets, port))
}

/// Binds `bind` on 127.0.0.1 with a free port and on ::1 with the same port (retrying when
/// that one is taken); a host without IPv6 gets the IPv4 one only.
fn bind_pair<T: LocalPort>(
    bind: impl Fn(std::net::SocketAddr) -> std::io::Result<T>,
) -> std::io::Result<(u16, Vec<T>)> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    let mut last = None;
    for _ in 0..32 {
        let v4 = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let port = local_port(&v4)?;
        match bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
            Ok(v6) => return Ok((port, vec![v4, v6])),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => {
                tracing::info!("the proxy listens on IPv4 only: ::1 is not available ({e})");
                return Ok((port, vec![v4]));
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port free on both loopbacks")))
}

/// What [`bind_pair`] needs of what it binds: the port it got.
trait LocalPort {
    fn port(&self) -> std::io::Result<u16>;
}

impl LocalPort for StdListener {
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
/// so the first redirected connection finds it. On error nothing of it stays. The rule counts
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
    k.tcp.users += 1;
    let added = add_rule(k, effect, percent, filter, ctx);
    let slot = match added {
        Ok(slot) => slot,
        Err(e) => {
            k.tcp.release();
            return Err(e);
        }
    };
    let slots = Arc::clone(&k.slots);
    drop(guard);
    Ok(SlotRuleFault::new(kernel, &slots, slot, "tcp", remove_rule))
}

/// Ends a proxy fault: the rule first, so no new connect is sent to a toxic that is ending,
/// then the toxic (proxied connections) and the fault's hold on the listeners.
fn remove_rule(k: &mut Kernel, slot: u32) -> Result<(), FaultError> {
    let result = k.net.remove_fault(&mut k.ebpf, slot);
    k.tcp.shared.toxics.end(slot);
    k.tcp.shared.http.end(slot);
    k.tcp.release();
    result
}

fn add_rule(
    k: &mut Kernel,
    effect: Effect,
    percent: f64,
    filter: chaosd_common::net::PeerFilter,
    ctx: &ApplyContext<'_>,
) -> Result<u32, FaultError> {
    let refuse = matches!(effect, Effect::Toxic(Toxic::Down));
    let port = k.tcp.port_for(refuse)?;
    let slot = k.slots.allocate()?;
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
        k.slots.release(slot);
        return Err(e);
    }
    Ok(slot)
}
