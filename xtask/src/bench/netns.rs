//! Two network namespaces joined by a veth pair, made with netlink (rtnetlink), never `ip`.
//!
//! The namespaces are anonymous: each lives while its [`NetNs`] holds the namespace fd, and
//! the veth pair dies with them, so nothing is left behind even if the bench is killed.

use std::{
    ffi::CString,
    fs::File,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::AsRawFd as _,
    thread::{self, JoinHandle},
};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::sched::{CloneFlags, setns, unshare};
use rtnetlink::{LinkUnspec, LinkVeth};

/// Address of the veth end in namespace A (the client side).
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
/// Address of the veth end in namespace B (the server side).
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
/// The veth end in namespace A: traffic from A to B leaves through it (where qdiscs go).
pub const VETH_A: &str = "chaosbench0";
const VETH_B: &str = "chaosbench1";

/// An anonymous network namespace, alive while this holds its fd.
pub struct NetNs {
    fd: File,
}

impl NetNs {
    pub fn new() -> Result<NetNs> {
        let fd = thread::spawn(|| -> Result<File> {
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
            File::open("/proc/thread-self/ns/net").context("opening the new netns")
        })
        .join()
        .map_err(|_| anyhow!("the netns thread panicked"))??;
        Ok(NetNs { fd })
    }

    /// The namespace's nsfs file (for a child process to `setns` into).
    pub fn fd(&self) -> &File {
        &self.fd
    }

    /// Another handle on the same namespace (for guards that must act in it when dropped).
    pub fn try_clone(&self) -> Result<NetNs> {
        Ok(NetNs {
            fd: self.fd.try_clone()?,
        })
    }

    /// Runs `f` on a new thread that has entered this namespace (sockets it makes live here).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<JoinHandle<Result<T>>> {
        let fd = self.fd.try_clone()?;
        Ok(thread::spawn(move || {
            setns(&fd, CloneFlags::CLONE_NEWNET).context("entering the bench netns")?;
            f()
        }))
    }

    /// [`NetNs::spawn`] and wait for the result.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        join(self.spawn(f)?)
    }
}

pub fn join<T>(h: JoinHandle<Result<T>>) -> Result<T> {
    h.join().map_err(|_| anyhow!("a bench thread panicked"))?
}

/// Namespaces A and B with `VETH_A` (ADDR_A/24) in A and `VETH_B` (ADDR_B/24) in B, up.
pub fn veth_pair() -> Result<(NetNs, NetNs)> {
    let (a, b) = (NetNs::new()?, NetNs::new()?);
    let b_fd = b.fd.try_clone()?;
    a.run(move || {
        netlink(|handle| async move {
            handle
                .link()
                .add(LinkVeth::new(VETH_A, VETH_B).build())
                .execute()
                .await?;
            handle
                .link()
                .set(
                    LinkUnspec::new_with_name(VETH_B)
                        .setns_by_fd(b_fd.as_raw_fd())
                        .build(),
                )
                .execute()
                .await?;
            address_and_up(&handle, VETH_A, ADDR_A).await
        })
    })
    .context("creating the veth pair in namespace A")?;
    b.run(|| netlink(|handle| async move { address_and_up(&handle, VETH_B, ADDR_B).await }))
        .context("configuring the veth end in namespace B")?;
    Ok((a, b))
}

/// Runs one netlink conversation on a current-thread runtime in the calling thread's netns.
pub fn netlink<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening netlink")?;
        tokio::spawn(conn);
        f(handle).await
    })
}

async fn address_and_up(handle: &rtnetlink::Handle, name: &str, addr: Ipv4Addr) -> Result<()> {
    let index = ifindex(name)?;
    handle
        .address()
        .add(index, IpAddr::V4(addr), 24)
        .execute()
        .await?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await?;
    Ok(())
}

pub fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name)?;
    // SAFETY: a valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("no interface {name} in this namespace");
    }
    Ok(index)
}

/// A socket address on ADDR_B.
pub fn server_addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ADDR_B), port)
}
