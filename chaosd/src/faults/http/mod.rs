//! HTTP faults (`http.*`): plaintext HTTP/1.1 requests on a target cgroup's TCP connections
//! are aborted, answered with a status or delayed. They ride the transparent proxy's
//! redirection and proxy (`tcp.*`): a connection one of them hits passes through an HTTP layer
//! ([`stream`]) between the connection's TCP toxics and the server, which reads each request's
//! head and body framing (keep-alive and pipelining: responses go back in request order).
//!
//! A connection whose first bytes are no HTTP request (a TLS ClientHello, a protocol whose
//! server speaks first) passes through untouched: only the TCP toxics act on it. Counters
//! count requests: `seen` matched the fault's method, path and header filters on a connection
//! it covers, `affected` got its dice and its effect.
//!
//! # Kernel requirements
//! Those of the proxy (`tcp.*`): cgroup sock_addr connect4/6 and getpeername4/6, sock_ops,
//! SO_NETNS_COOKIE (5.14+).

pub mod abort;
pub mod delay;
pub mod status;
mod stream;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

pub(crate) use stream::serve;

use crate::{
    api::{Counters, HeaderMatch, HttpSelect, PathGlob},
    error::{FaultError, RequestError},
    faults::kernel::{Kernel, SlotRuleFault},
    faults::net::percent_to_ppm,
    faults::tcp::{Effect, apply_effect, validate_filter},
    faults::{ActiveFault, ApplyContext},
};

/// What an HTTP fault does to a request it takes.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// No response: the connection is closed, or reset.
    Abort { reset: bool },
    /// chaosd answers: the status line and headers (without `connection`, which depends on
    /// the request, and the final blank line), the body.
    Answer { head: String, body: Vec<u8> },
    /// The request reaches the server `delay` ± `jitter` late.
    Delay { delay: Duration, jitter: Duration },
}

/// Which requests a fault takes.
#[derive(Clone, Debug, Default)]
pub struct Select {
    pub methods: Vec<String>,
    pub path: Option<PathGlob>,
    pub headers: Vec<HeaderMatch>,
    /// Share of matching requests, per million.
    pub ppm: u32,
}

impl Select {
    fn of(p: &impl HttpSelect) -> Select {
        Select {
            methods: p.methods().iter().map(|m| m.value().0.clone()).collect(),
            path: p.path().map(|g| g.value().clone()),
            headers: p
                .request_headers()
                .iter()
                .map(|h| h.value().clone())
                .collect(),
            ppm: percent_to_ppm(p.percent()),
        }
    }

    /// Whether a request (its method, path without the query, lower-case headers) matches.
    pub fn matches(&self, method: &str, path: &str, headers: &[(String, Vec<u8>)]) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && self.path.as_ref().is_none_or(|g| g.matches(path))
            && self
                .headers
                .iter()
                .all(|h| h.matches(headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()))))
    }
}

/// One HTTP fault in force, with its request counters.
pub struct HttpFault {
    pub select: Select,
    pub action: Action,
    pub seen: AtomicU64,
    pub affected: AtomicU64,
    /// Set when the fault ends: connections it hit stop applying it.
    ended: AtomicBool,
}

impl HttpFault {
    pub fn new(select: Select, action: Action) -> Self {
        HttpFault {
            select,
            action,
            seen: AtomicU64::new(0),
            affected: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        }
    }

    pub fn live(&self) -> bool {
        !self.ended.load(Ordering::Relaxed)
    }
}

/// The HTTP faults in force by counter slot (the kernel records the slots that hit each
/// connection). Locked only for map lookups and updates.
#[derive(Default)]
pub struct HttpFaults(RwLock<BTreeMap<u32, Arc<HttpFault>>>);

impl HttpFaults {
    pub fn insert(&self, slot: u32, fault: Arc<HttpFault>) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot, fault);
    }

    /// Takes the fault out (if `slot` is one) and tells its connections it ended.
    pub fn end(&self, slot: u32) {
        let removed = self
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&slot);
        if let Some(f) = removed {
            f.ended.store(true, Ordering::Relaxed);
        }
    }

    /// The faults of these slots, in the kernel record's order.
    pub fn of_slots(&self, slots: &[u32]) -> Vec<Arc<HttpFault>> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        slots.iter().filter_map(|s| map.get(s).cloned()).collect()
    }
}

/// The checks every HTTP kind shares (each value was parsed when the request was decoded).
pub fn validate_select(p: &impl HttpSelect) -> Result<(), RequestError> {
    validate_filter(p.filter(), p.percent())
}

/// Applies one HTTP fault: every matching connect goes to the proxy (the dice are rolled per
/// request there), which finds the fault by its slot.
pub fn apply_http(
    kernel: &Arc<Mutex<Kernel>>,
    p: &impl HttpSelect,
    action: Action,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let fault = Arc::new(HttpFault::new(Select::of(p), action));
    let rule = apply_effect(
        kernel,
        Effect::Http(Arc::clone(&fault)),
        100.0,
        p.filter(),
        ctx,
    )?;
    Ok(Box::new(HttpActive { rule, fault }))
}

/// An HTTP fault in force: its kernel rule, and its counters, which the HTTP layer keeps (per
/// request, not per connection).
struct HttpActive {
    rule: SlotRuleFault,
    fault: Arc<HttpFault>,
}

impl ActiveFault for HttpActive {
    fn counters(&self) -> Counters {
        Counters {
            seen: self.fault.seen.load(Ordering::Relaxed),
            affected: self.fault.affected.load(Ordering::Relaxed),
        }
    }

    fn revert(&mut self) -> Result<(), FaultError> {
        self.rule.revert()
    }
}
