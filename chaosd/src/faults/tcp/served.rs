//! The network namespaces the proxy and the resolver listen in. The kernel rewrites a
//! redirected connect to the loopback of the socket's own namespace, so a target process in
//! another namespace (a container) must find chaosd's listener there: for each such namespace
//! chaosd keeps a worker thread that has entered it (the network namespace is per thread;
//! chaosd's own threads never change theirs) and makes the sockets that belong there: the
//! listeners, on the same port as chaosd's own, and the proxy's and resolver's upstream
//! sockets, so the original destination is reached as the target would have reached it.
//!
//! The kernel redirects only in namespaces listed in `PROXY_NETNS` (by netns cookie):
//! chaosd's own always, another while a fault serves it. When chaosd dies its sockets close
//! with it, the namespaces they held can go, and the program links that redirect are gone too.

use std::{
    collections::BTreeMap,
    io,
    net::SocketAddr,
    os::fd::{AsRawFd as _, OwnedFd},
    path::PathBuf,
    sync::{Arc, mpsc},
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use chaosd_common::proxy::PROXY_NETNS_MAP;
use nix::sched::{CloneFlags, setns};

use crate::{
    error::{FaultError, RequestError},
    faults::net::netns::Netns,
};

/// Where a socket is made: chaosd's own namespace or one a worker has entered.
#[derive(Clone)]
pub enum Place {
    Home,
    Netns(Arc<NsWorker>),
}

/// [`Place::key`] of chaosd's own namespace.
pub const HOME: u64 = 0;

impl Place {
    /// The namespace's nsfs inode; [`HOME`] for chaosd's own.
    pub fn key(&self) -> u64 {
        match self {
            Place::Home => HOME,
            Place::Netns(w) => w.inode,
        }
    }

    /// The namespace's cookie, as the kernel's records carry it.
    pub fn cookie(&self) -> u64 {
        match self {
            Place::Home => super::netns_cookie().unwrap_or(0),
            Place::Netns(w) => w.cookie,
        }
    }

    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            Place::Home => "chaosd's own network namespace".into(),
            Place::Netns(w) => format!("the network namespace of {}", w.label),
        }
    }

    /// Runs `f` in the namespace and waits for it (not on the async runtime).
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        match self {
            Place::Home => f(),
            Place::Netns(w) => w.run(f),
        }
    }

    /// Runs `f` in the namespace, for a task on the async runtime.
    pub async fn run_async<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        match self {
            Place::Home => f(),
            Place::Netns(w) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                w.submit(Box::new(move || {
                    let _ = tx.send(f());
                }))?;
                rx.await.map_err(|_| worker_gone())?
            }
        }
    }

    /// A TCP connection to `to` made from this namespace.
    pub async fn tcp_connect(&self, to: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        if let Place::Home = self {
            return tokio::net::TcpStream::connect(to).await;
        }
        let fd = self.run_async(move || stream_socket(to)).await?;
        tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd))
            .connect(to)
            .await
    }

    /// A UDP socket bound to `addr` in this namespace.
    pub async fn udp_bind(&self, addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
        let std = self
            .run_async(move || {
                let s = std::net::UdpSocket::bind(addr)?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .await?;
        tokio::net::UdpSocket::from_std(std)
    }
}

/// A non-blocking TCP socket of `to`'s family, not connected yet.
fn stream_socket(to: SocketAddr) -> io::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let family = if to.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread in another network namespace that runs what must happen there.
pub struct NsWorker {
    pub inode: u64,
    pub cookie: u64,
    /// "pid N" of a target process seen in it.
    label: String,
    jobs: mpsc::Sender<Job>,
}

fn worker_gone() -> io::Error {
    io::Error::other("the network namespace worker thread is gone")
}

impl NsWorker {
    fn start(ns: &Netns) -> io::Result<Arc<NsWorker>> {
        let file = ns.try_clone()?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel::<io::Result<u64>>();
        std::thread::Builder::new()
            .name(format!("chaosd-netns-{}", ns.inode))
            .spawn(move || {
                let entered = setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)
                    .and_then(|()| check_loopback_up())
                    .and_then(|()| cookie_here());
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                drop(file);
                if ok {
                    // Ends when the last sender (the worker's owner) is dropped.
                    while let Ok(job) = queue.recv() {
                        job();
                    }
                }
            })?;
        let cookie = ready.recv().map_err(|_| worker_gone())??;
        Ok(Arc::new(NsWorker {
            inode: ns.inode,
            cookie,
            label: format!("pid {}", ns.via_pid),
            jobs,
        }))
    }

    fn submit(&self, job: Job) -> io::Result<()> {
        self.jobs.send(job).map_err(|_| worker_gone())
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(Box::new(move || {
            let _ = tx.send(f());
        }))?;
        rx.recv().map_err(|_| worker_gone())?
    }
}

/// Refuses (NetworkDown) a namespace whose `lo` is down: a connect redirected to its loopback
/// would fail (ENETUNREACH) instead of reaching chaosd's listener.
fn check_loopback_up() -> io::Result<()> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags into `req`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short == 0 {
        return Err(io::Error::from(io::ErrorKind::NetworkDown));
    }
    Ok(())
}

/// The netns cookie of the calling thread's namespace (SO_NETNS_COOKIE).
fn cookie_here() -> io::Result<u64> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    // Unbound: a namespace whose loopback is down has no address to bind.
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cookie)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The namespaces served besides chaosd's own, each held by the faults that need it.
pub struct ServedNetns {
    /// `PROXY_NETNS`: where the kernel may redirect.
    map: HashMap<MapData, u64, u32>,
    others: BTreeMap<u64, (Arc<NsWorker>, usize)>,
}

impl ServedNetns {
    /// Takes the map and lists chaosd's own namespace in it, for good.
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let map = ebpf
            .take_map(PROXY_NETNS_MAP)
            .context("eBPF object has no proxy netns map")?;
        let mut map = HashMap::try_from(map).context("proxy netns map has the wrong type")?;
        // Without SO_NETNS_COOKIE the proxy kinds are refused before anything needs the map.
        if let Some(home) = super::netns_cookie() {
            map.insert(home, 1, 0)
                .context("listing chaosd's network namespace for the proxy")?;
        }
        Ok(ServedNetns {
            map,
            others: BTreeMap::new(),
        })
    }

    /// The namespaces other than chaosd's of the processes in the cgroups at `dirs`, each held
    /// once more (entered and listed for the kernel the first time). On error none is held.
    pub fn acquire(&mut self, dirs: &[PathBuf]) -> Result<Vec<Place>, FaultError> {
        let own = Netns::own().map(|n| n.inode).ok();
        let mut held = Vec::new();
        for ns in crate::faults::net::netns::of_processes(dirs) {
            if Some(ns.inode) == own {
                continue;
            }
            match self.hold(&ns) {
                Ok(w) => held.push(Place::Netns(w)),
                Err(e) => {
                    self.release(&held);
                    return Err(e);
                }
            }
        }
        Ok(held)
    }

    fn hold(&mut self, ns: &Netns) -> Result<Arc<NsWorker>, FaultError> {
        if let Some((w, users)) = self.others.get_mut(&ns.inode) {
            *users += 1;
            return Ok(Arc::clone(w));
        }
        let pid = ns.via_pid;
        let w = NsWorker::start(ns).map_err(|e| match e.kind() {
            io::ErrorKind::NetworkDown => FaultError::Refused(RequestError::LoopbackDown { pid }),
            _ => FaultError::kernel(
                "entering a target's network namespace",
                anyhow::Error::new(e).context(format!("the namespace of pid {pid}")),
            ),
        })?;
        self.map.insert(w.cookie, 1, 0).map_err(|e| {
            FaultError::kernel("listing a target's network namespace for the proxy", e)
        })?;
        tracing::info!(
            inode = ns.inode,
            pid = ns.via_pid,
            "serving a target's network namespace"
        );
        self.others.insert(ns.inode, (Arc::clone(&w), 1));
        Ok(w)
    }

    /// One hold fewer on each of `places`; the last one unlists the namespace and lets its
    /// worker go.
    pub fn release(&mut self, places: &[Place]) {
        for p in places {
            let Place::Netns(w) = p else { continue };
            let Some((_, users)) = self.others.get_mut(&w.inode) else {
                continue;
            };
            *users -= 1;
            if *users == 0 {
                self.others.remove(&w.inode);
                if let Err(e) = self.map.remove(&w.cookie) {
                    tracing::warn!(inode = w.inode, "unlisting a network namespace: {e}");
                }
                tracing::info!(inode = w.inode, "no longer serving a network namespace");
            }
        }
    }
}
