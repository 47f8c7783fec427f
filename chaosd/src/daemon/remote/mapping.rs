//! What each Chaos Mesh attack becomes in chaosd: the wire bodies of [`super::wire`] turned
//! into chaosd fault specs and targets, or refused with the reason (docs/chaos-mesh.md has the
//! table).
//!
//! Chaos Mesh aims at a machine, chaosd at cgroups, so the targets are chosen here:
//! - network and DNS attacks take the host-wide target (every cgroup but the protected ones,
//!   `policy.host_exclude` included), narrowed by the peers the attack names: an attack must
//!   name them (`ip-address` or `hostname`), since chaosd matches traffic by peer and not by
//!   device, and a device-wide fault would otherwise reach every connection, loopback included;
//! - http attacks (`http-abort`, `http-delay`) take the host-wide target too, narrowed by the
//!   attack's port (`port`, else each of `proxy_ports`): chaosd's HTTP faults act on the
//!   connections the host's processes open to that port, to whichever address (not those
//!   other machines open to a server here, which Chaos Mesh's chaos-tproxy would take);
//! - stress attacks run chaosd's workers host-wide with no target;
//! - disk attacks act on the directory of the attack's `path`;
//! - process and clock attacks act on the cgroups of the processes they name, and only when
//!   those cgroups hold nothing else, so chaosd's per-cgroup action touches exactly the
//!   processes Chaos Mesh meant.
//!
//! The host lookups (name resolution, processes, cgroups) go through [`HostView`], so the
//! mapping is tested without touching the host.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::DeserializeOwned;

use super::wire::{
    ClockAttack, DiskAttack, HttpAttack, Loose, NetworkAttack, ProcessAttack, StressAttack, given,
};
use crate::api::{
    ClockName, ClockSkewParams, Direction, DiskFillParams, DiskIoParams, DnsAnswerParams,
    FaultSpec, HttpAbortParams, HttpDelayParams, IoMode, NetBandwidthParams, NetCorruptParams,
    NetDelayParams, NetDuplicateParams, NetFilter, NetLossParams, NetPartitionParams, PortRange,
    ProcessKillParams, ProcessPauseParams, Proto, StressCpuParams, StressMemParams, TargetSelector,
    Written,
};

/// Most chaosd faults one attack may become (its peers × its ports): what one cgroup stacks.
pub const MAX_FAULTS_PER_ATTACK: usize = 8;

/// Why an attack is not applied; both are 4xx with the text as the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    /// chaosd has no counterpart for what the attack asks.
    #[error("{0}")]
    Unmapped(String),
    /// A field is missing or does not parse.
    #[error("{0}")]
    Invalid(String),
}

fn unmapped(s: impl Into<String>) -> MapError {
    MapError::Unmapped(s.into())
}

fn invalid(s: impl Into<String>) -> MapError {
    MapError::Invalid(s.into())
}

/// One chaosd fault of an attack.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub fault: FaultSpec,
    pub targets: Vec<TargetSelector>,
}

/// What the mapping needs to know about the host.
pub trait HostView {
    /// The addresses `hostname` resolves to.
    fn resolve(&self, hostname: &str) -> Result<Vec<IpAddr>, String>;
    fn device_exists(&self, name: &str) -> bool;
    /// User-space processes whose pid is `process`, or whose command name or executable's
    /// file name is `process`.
    fn processes_named(&self, process: &str) -> Vec<u32>;
    /// The cgroup2 path of `pid`.
    fn cgroup_of(&self, pid: u32) -> Result<String, String>;
    /// The user-space processes in `cgroup` and below it: pid and command name.
    fn processes_under(&self, cgroup: &str) -> Vec<(u32, String)>;
    fn is_dir(&self, path: &Path) -> bool;
}

/// The chaosd faults for a body posted to `/api/attack/{route}`.
pub fn plan(
    route: &str,
    body: serde_json::Value,
    host: &dyn HostView,
) -> Result<Vec<Planned>, MapError> {
    let action = body
        .get("action")
        .and_then(|a| a.as_str())
        .unwrap_or_default()
        .to_string();
    match route {
        "network" => {
            // Refused before decoding: their own fields (duration, port, ...) are not ours.
            if let Some(why) = network_unmapped(&action) {
                return Err(why);
            }
            network(decode(route, &action, body)?, host)
        }
        "stress" => stress(decode(route, &action, body)?),
        "disk" => disk(decode(route, &action, body)?, host),
        "process" => process(decode(route, &action, body)?, host),
        "clock" => clock(decode(route, &action, body)?, host),
        "http" => {
            // Refused before decoding: their own fields (file_path, url, ...) are not ours.
            if let Some(why) = http_unmapped(&action) {
                return Err(why);
            }
            http(decode(route, &action, body)?)
        }
        "jvm" => Err(unmapped(
            "jvm attacks need a Java agent in the target JVM (Byteman); chaosd has no JVM faults",
        )),
        "redis" | "kafka" => Err(unmapped(format!(
            "{route} attacks speak to the {route} server as a client; chaosd injects faults \
             into a host's processes and traffic only"
        ))),
        "file" => Err(unmapped(
            "file attacks create, delete or rewrite files; chaosd changes no file contents \
             (io.errno fails file operations instead, through /v1/faults)",
        )),
        "vm" | "user_defined" | "user" => Err(unmapped(format!(
            "{route} attacks run commands or act on virtual machines; chaosd runs no commands \
             for a remote caller"
        ))),
        other => Err(invalid(format!(
            "no attack route {other:?}; chaosd serves network, stress, disk, process, clock and \
             http (and answers jvm, redis, kafka, file, vm with why not)"
        ))),
    }
}

fn decode<T: DeserializeOwned>(
    route: &str,
    action: &str,
    body: serde_json::Value,
) -> Result<T, MapError> {
    serde_json::from_value(body).map_err(|e| {
        let what = if action.is_empty() {
            route.to_string()
        } else {
            format!("{route}-{action}")
        };
        invalid(format!("invalid {what} attack: {e}"))
    })
}

/// Percent as Chaos Mesh writes it ("50", "12.5"): 0 < p <= 100.
fn percent(field: &str, text: &str) -> Result<f64, MapError> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(invalid(format!(
            "{field} {text:?} is not a percentage above 0 and at most 100 (e.g. \"50\")"
        ))),
    }
}

/// A Go duration (`time.ParseDuration`): "100ms", "1.5s", "1h30m", "250us"; no sign.
pub fn go_duration(field: &str, text: &str) -> Result<Duration, MapError> {
    let bad = || {
        invalid(format!(
            "{field} {text:?} is not a duration (units ns, us, ms, s, m, h; e.g. 100ms, 1.5s, 1h30m)"
        ))
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let num: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let ns = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += num * ns;
        rest = &rest[unit_end..];
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(total as u64))
}

/// A duration as chaosd's parameters write it (humantime text), from a Go duration.
fn written_duration(field: &str, text: &str) -> Result<Written<Duration>, MapError> {
    let d = go_duration(field, text)?;
    humantime::format_duration(d)
        .to_string()
        .parse()
        .map_err(|e| invalid(format!("{field}: {e}")))
}

fn written<T: crate::api::units::Quantity>(
    field: &str,
    text: &str,
) -> Result<Written<T>, MapError> {
    text.parse().map_err(|e| invalid(format!("{field}: {e}")))
}

/// A size as dd writes it (Chaos Mesh's disk attacks): c=1, w=2, b=512, kB=1000, K=1024,
/// MB=1000², M=1024², GB, G, TB, T; also KiB, MiB, GiB, TiB.
pub fn dd_size(field: &str, text: &str) -> Result<u64, MapError> {
    let bad = || {
        invalid(format!(
            "{field} {text:?} is not a size (e.g. 512kB, 100M, 1G; dd's units: c, w, b, kB, K, \
             MB, M, GB, G)"
        ))
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let n: u64 = text[..split].parse().map_err(|_| bad())?;
    let mult: u64 = match &text[split..] {
        "" | "c" => 1,
        "w" => 2,
        "b" => 512,
        "kB" | "KB" => 1000,
        "K" | "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).filter(|&b| b > 0).ok_or_else(bad)
}

fn comma_list(text: &str) -> Vec<&str> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The fields of a network attack that are set, by their Chaos Mesh name.
fn network_fields(a: &NetworkAttack) -> Vec<&'static str> {
    let all: [(&'static str, &Option<Loose>); 21] = [
        ("correlation", &a.correlation),
        ("device", &a.device),
        ("source-port", &a.source_port),
        ("egress-port", &a.egress_port),
        ("ip-address", &a.ip_address),
        ("ip-protocol", &a.ip_protocol),
        ("hostname", &a.hostname),
        ("percent", &a.percent),
        ("latency", &a.latency),
        ("jitter", &a.jitter),
        ("direction", &a.direction),
        ("accept-tcp-flags", &a.accept_tcp_flags),
        ("dns-server", &a.dns_server),
        ("dns-ip", &a.dns_ip),
        ("dns-domain-name", &a.dns_domain_name),
        ("rate", &a.rate),
        ("limit", &a.limit),
        ("buffer", &a.buffer),
        ("peakrate", &a.peakrate),
        ("minburst", &a.minburst),
        ("uid", &None),
    ];
    all.iter()
        .filter(|(_, v)| given(v).is_some())
        .map(|(n, _)| *n)
        .collect()
}

/// The network actions with no counterpart, and why.
fn network_unmapped(action: &str) -> Option<MapError> {
    let why = match action {
        "flood" => {
            "network-flood generates traffic (iperf); chaosd injects faults into a host's own \
             traffic and generates none"
        }
        "down" => {
            "network-down takes a device down; chaosd never changes the host's interfaces (the \
             controller's own connection would go with it): use network-partition with the \
             peers' addresses"
        }
        "occupied" | "port" => "network port occupation binds ports; chaosd has no such fault",
        _ => return None,
    };
    Some(unmapped(why))
}

fn network(a: NetworkAttack, host: &dyn HostView) -> Result<Vec<Planned>, MapError> {
    const COMMON: &[&str] = &[
        "correlation",
        "device",
        "source-port",
        "egress-port",
        "ip-address",
        "ip-protocol",
        "hostname",
    ];
    let own: &[&str] = match a.action.as_str() {
        "loss" | "corrupt" | "duplicate" => &["percent"],
        "delay" => &["latency", "jitter", "accept-tcp-flags"],
        "partition" => &["direction", "accept-tcp-flags"],
        "bandwidth" => &["rate", "limit", "buffer", "peakrate", "minburst"],
        "dns" => &["dns-server", "dns-ip", "dns-domain-name"],
        other => {
            return Err(invalid(format!(
                "unknown network action {other:?}: delay, loss, corrupt, duplicate, partition, \
                 bandwidth or dns"
            )));
        }
    };
    let action = a.action.as_str();
    let common: &[&str] = if action == "dns" { &[] } else { COMMON };
    if let Some(extra) = network_fields(&a)
        .into_iter()
        .find(|f| !own.contains(f) && !common.contains(f))
    {
        return Err(invalid(format!(
            "{extra} is not a field of network-{action} (Chaos Mesh's fields for it: {})",
            common
                .iter()
                .chain(own)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if action == "dns" {
        return dns(&a);
    }
    if let Some(dev) = given(&a.device)
        && (dev.contains('/') || !host.device_exists(dev))
    {
        return Err(invalid(format!(
            "device {dev:?} does not exist on this host; chaosd checks it, then acts on the \
             host's traffic to the attack's peers whichever device carries it"
        )));
    }
    if let Some(c) = given(&a.correlation)
        && c.parse::<f64>() != Ok(0.0)
    {
        return Err(unmapped(format!(
            "correlation {c}: chaosd decides each packet independently; leave correlation \
             empty or 0"
        )));
    }
    if given(&a.source_port).is_some() {
        return Err(unmapped(
            "source-port: chaosd filters on the peer's port (egress-port) and address, not on \
             this host's own port",
        ));
    }
    if given(&a.accept_tcp_flags).is_some() {
        return Err(unmapped(
            "accept-tcp-flags: chaosd's packet programs do not look at TCP flags; leave it out",
        ));
    }
    let proto = match given(&a.ip_protocol).unwrap_or("all") {
        "all" | "any" => Proto::Any,
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        other => {
            return Err(invalid(format!(
                "ip-protocol {other:?}: tcp, udp, icmp or all"
            )));
        }
    };
    let ports: Vec<Option<Written<crate::api::PortRange>>> = match given(&a.egress_port) {
        None => vec![None],
        Some(text) => {
            if !matches!(proto, Proto::Tcp | Proto::Udp) {
                return Err(invalid(
                    "egress-port needs ip-protocol tcp or udp (as in Chaos Mesh)",
                ));
            }
            comma_list(text)
                .into_iter()
                .map(|p| written("egress-port", &p.replace(':', "-")).map(Some))
                .collect::<Result<_, _>>()?
        }
    };
    let peers = peers(&a, host, action)?;
    let filters: Vec<NetFilter> = peers
        .iter()
        .flat_map(|dst| {
            ports.iter().map(move |port| NetFilter {
                dst: Some(dst.clone()),
                src: None,
                port: port.clone(),
                proto,
            })
        })
        .collect();
    if filters.len() > MAX_FAULTS_PER_ATTACK {
        return Err(unmapped(format!(
            "this attack names {} peer addresses and {} port ranges: {} chaosd faults, above \
             the {MAX_FAULTS_PER_ATTACK} one target stacks; use CIDRs that cover the peers \
             (e.g. 10.0.0.0/24) or fewer ports",
            peers.len(),
            ports.len(),
            filters.len()
        )));
    }
    let fault = |filter: NetFilter| -> Result<FaultSpec, MapError> {
        Ok(match action {
            "loss" => FaultSpec::NetLoss(NetLossParams {
                percent: percent("percent", need(&a.percent, "percent", action)?)?,
                direction: Direction::Egress,
                filter,
            }),
            "corrupt" => FaultSpec::NetCorrupt(NetCorruptParams {
                percent: percent("percent", need(&a.percent, "percent", action)?)?,
                payload: false,
                filter,
            }),
            "duplicate" => FaultSpec::NetDuplicate(NetDuplicateParams {
                percent: percent("percent", need(&a.percent, "percent", action)?)?,
                filter,
            }),
            "delay" => FaultSpec::NetDelay(NetDelayParams {
                delay: written_duration("latency", need(&a.latency, "latency", action)?)?,
                jitter: match given(&a.jitter) {
                    Some(j) if !go_duration("jitter", j)?.is_zero() => {
                        Some(written_duration("jitter", j)?)
                    }
                    _ => None,
                },
                filter,
                netns: None,
            }),
            "bandwidth" => bandwidth(&a, filter)?,
            _ => partition(&a, filter)?,
        })
    };
    filters
        .into_iter()
        .map(|f| {
            Ok(Planned {
                fault: fault(f)?,
                targets: vec![TargetSelector::Host],
            })
        })
        .collect()
}

fn need<'a>(v: &'a Option<Loose>, field: &str, action: &str) -> Result<&'a str, MapError> {
    given(v).ok_or_else(|| invalid(format!("network-{action} needs {field}")))
}

/// The peers of a network attack: its `ip-address` list and the addresses its `hostname`s
/// resolve to.
fn peers(
    a: &NetworkAttack,
    host: &dyn HostView,
    action: &str,
) -> Result<Vec<Written<crate::api::Cidr>>, MapError> {
    let mut out: Vec<Written<crate::api::Cidr>> = Vec::new();
    if let Some(list) = given(&a.ip_address) {
        for item in comma_list(list) {
            out.push(written("ip-address", item)?);
        }
    }
    if let Some(list) = given(&a.hostname) {
        for name in comma_list(list) {
            let addrs = host
                .resolve(name)
                .map_err(|e| invalid(format!("hostname {name:?} does not resolve: {e}")))?;
            for ip in addrs {
                let w: Written<crate::api::Cidr> = written("hostname", &ip.to_string())?;
                if !out.contains(&w) {
                    out.push(w);
                }
            }
        }
    }
    if out.is_empty() {
        return Err(unmapped(format!(
            "network-{action} needs ip-address or hostname: chaosd matches traffic by peer \
             address, not by device, so without one the fault would reach every connection of \
             every process on the host, loopback included; name the peers (e.g. 10.0.0.0/8)"
        )));
    }
    Ok(out)
}

fn bandwidth(a: &NetworkAttack, filter: NetFilter) -> Result<FaultSpec, MapError> {
    for (field, v) in [("peakrate", &a.peakrate), ("minburst", &a.minburst)] {
        if given(v).is_some_and(|s| s != "0") {
            return Err(unmapped(format!(
                "{field}: chaosd paces to one rate with one burst; leave {field} out"
            )));
        }
    }
    let rate = need(&a.rate, "rate", "bandwidth")?;
    let burst = match given(&a.buffer) {
        Some(b) => Some(written("buffer", b)?),
        None => None,
    };
    Ok(FaultSpec::NetBandwidth(NetBandwidthParams {
        rate: written("rate", rate)?,
        burst,
        filter,
        netns: None,
    }))
}

fn partition(a: &NetworkAttack, filter: NetFilter) -> Result<FaultSpec, MapError> {
    Ok(match given(&a.direction) {
        Some("to") => FaultSpec::NetLoss(NetLossParams {
            percent: 100.0,
            direction: Direction::Egress,
            filter,
        }),
        Some("from") => FaultSpec::NetLoss(NetLossParams {
            percent: 100.0,
            direction: Direction::Ingress,
            filter,
        }),
        Some("both") => FaultSpec::NetPartition(NetPartitionParams { filter }),
        Some(other) => {
            return Err(invalid(format!("direction {other:?}: to, from or both")));
        }
        None => {
            return Err(invalid(
                "network-partition needs direction: to, from or both",
            ));
        }
    })
}

fn dns(a: &NetworkAttack) -> Result<Vec<Planned>, MapError> {
    if given(&a.dns_server).is_some() {
        return Err(unmapped(
            "dns-server rewrites /etc/resolv.conf; chaosd edits no file and answers matching \
             queries itself: give dns-domain-name and dns-ip instead",
        ));
    }
    let (Some(domains), Some(ip)) = (given(&a.dns_domain_name), given(&a.dns_ip)) else {
        return Err(invalid(
            "network-dns needs dns-domain-name and dns-ip together (the name and the address \
             it is to resolve to)",
        ));
    };
    let domains = comma_list(domains)
        .into_iter()
        .map(|d| written("dns-domain-name", d))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![Planned {
        fault: FaultSpec::DnsAnswer(DnsAnswerParams {
            ips: vec![written("dns-ip", ip)?],
            ttl: 0,
            domains,
            types: Vec::new(),
            percent: 100.0,
        }),
        targets: vec![TargetSelector::Host],
    }])
}

/// The http actions with no counterpart, and why.
fn http_unmapped(action: &str) -> Option<MapError> {
    let why = match action {
        "request" => {
            "http-request sends GET requests to url from this host; chaosd injects faults into \
             the host's own traffic and makes no requests for a remote caller: run a load \
             generator for that, and use http-abort or http-delay for the faults"
        }
        "config" => {
            "http-config reads a chaos-tproxy rule file (file_path) on this host; chaosd reads \
             no rule files for a remote caller and cannot replace or patch bodies, headers or \
             queries: post one http-abort or http-delay per rule, or inject http.status (a \
             chosen status code, headers and body), http.abort or http.delay through /v1/faults"
        }
        _ => return None,
    };
    Some(unmapped(why))
}

/// The first field set on an http attack that belongs to another http action: its Chaos
/// Mesh name and that action.
fn http_stray_fields(a: &HttpAttack) -> Option<(&'static str, &'static str)> {
    let owned: [(&'static str, bool, &'static str); 5] = [
        ("file_path", given(&a.file_path).is_some(), "http-config"),
        ("url", given(&a.url).is_some(), "http-request"),
        (
            "enable-conn-pool",
            given(&a.enable_conn_pool).is_some_and(|v| v != "false"),
            "http-request",
        ),
        (
            "count",
            given(&a.count).is_some_and(|v| v != "0"),
            "http-request",
        ),
        (
            "delay",
            a.action != "delay" && given(&a.delay).is_some(),
            "http-delay",
        ),
    ];
    owned
        .into_iter()
        .find(|(_, set, _)| *set)
        .map(|(field, _, owner)| (field, owner))
}

/// The ports an http attack covers: `port` if given (it must be one of `proxy_ports`), else
/// each of `proxy_ports`, consecutive ones merged into ranges.
fn http_ports(a: &HttpAttack, action: &str) -> Result<Vec<Written<PortRange>>, MapError> {
    let number = |field: &str, text: &str| -> Result<u16, MapError> {
        match text.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(invalid(format!(
                "{field} {text:?} is not a TCP port (1-65535)"
            ))),
        }
    };
    let mut proxy: Vec<u16> = Vec::new();
    for p in a.proxy_ports.iter().flatten() {
        proxy.push(number("proxy_ports", &p.0)?);
    }
    if proxy.is_empty() {
        return Err(invalid(format!(
            "http-{action} needs proxy_ports (the ports of the HTTP connections to act on, \
             e.g. [8080])"
        )));
    }
    proxy.sort_unstable();
    proxy.dedup();
    // chaos-mesh/chaosd takes port 0 as unset.
    if let Some(port) = given(&a.port).filter(|p| *p != "0") {
        let port = number("port", port)?;
        if !proxy.contains(&port) {
            return Err(invalid(format!(
                "port {port} is not one of proxy_ports {proxy:?}: no connection would be \
                 matched; add it to proxy_ports or leave port out"
            )));
        }
        proxy = vec![port];
    }
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for p in proxy {
        match ranges.last_mut() {
            Some((_, last)) if u32::from(*last) + 1 == u32::from(p) => *last = p,
            _ => ranges.push((p, p)),
        }
    }
    if ranges.len() > MAX_FAULTS_PER_ATTACK {
        return Err(unmapped(format!(
            "proxy_ports names {n} ports or runs of consecutive ports: {n} chaosd faults, \
             above the {MAX_FAULTS_PER_ATTACK} one target stacks; name fewer ports, or give \
             the one the service listens on as port",
            n = ranges.len()
        )));
    }
    ranges
        .into_iter()
        .map(|(first, last)| {
            let text = if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            };
            written("proxy_ports", &text)
        })
        .collect()
}

fn http(a: HttpAttack) -> Result<Vec<Planned>, MapError> {
    let action = a.action.as_str();
    if !matches!(action, "abort" | "delay") {
        return Err(invalid(format!(
            "unknown http action {action:?}: abort or delay (config and request are answered \
             with why not)"
        )));
    }
    if a.rule.is_some() || a.rules.is_some() {
        return Err(invalid(
            "rule/rules nest a chaos-tproxy rule as older chaos-mesh/chaosd clients send it; \
             send its fields flat as Chaos Mesh's controller does: proxy_ports, target, port, \
             path, method (and delay for http-delay)",
        ));
    }
    if let Some((field, owner)) = http_stray_fields(&a) {
        return Err(invalid(format!(
            "{field} is a field of {owner}, not of http-{action}"
        )));
    }
    let target = given(&a.target)
        .ok_or_else(|| invalid(format!("http-{action} needs target: Request or Response")))?;
    match (target, action) {
        ("Request", _) | ("Response", "delay") => {}
        ("Response", _) => {
            return Err(unmapped(
                "http-abort with target Response lets the server handle the request and drops \
                 its response; chaosd's http.abort stops the request before the server sees it, \
                 which is not the same for requests that change state: use target Request",
            ));
        }
        (other, _) => {
            return Err(invalid(format!("target {other:?}: Request or Response")));
        }
    }
    // chaos-mesh/chaosd takes code 0 as unset.
    if let Some(code) = given(&a.code).filter(|c| *c != "0") {
        return Err(unmapped(format!(
            "code {code}: chaosd picks requests by method, path and headers before any \
             response exists, and cannot select by the response's status code; leave code out"
        )));
    }
    let methods = match given(&a.method) {
        Some(m) => vec![written("method", m)?],
        None => Vec::new(),
    };
    let path = match given(&a.path) {
        Some(p) => Some(written("path", p)?),
        None => None,
    };
    let fault = |filter: NetFilter| -> Result<FaultSpec, MapError> {
        Ok(if action == "abort" {
            if given(&a.abort).is_some_and(|v| v != "true") {
                return Err(invalid(
                    "abort false asks http-abort not to abort; leave abort out or set it true",
                ));
            }
            FaultSpec::HttpAbort(HttpAbortParams {
                reset: false,
                methods: methods.clone(),
                path: path.clone(),
                request_headers: Vec::new(),
                percent: 100.0,
                filter,
            })
        } else {
            if given(&a.abort).is_some_and(|v| v != "false") {
                return Err(invalid("abort is a field of http-abort, not of http-delay"));
            }
            let text = given(&a.delay)
                .ok_or_else(|| invalid("http-delay needs delay (e.g. 500ms, 2s)"))?;
            if go_duration("delay", text)?.is_zero() {
                return Err(invalid(format!(
                    "delay {text:?} is no delay; give one above 0 (e.g. 500ms)"
                )));
            }
            FaultSpec::HttpDelay(HttpDelayParams {
                delay: written_duration("delay", text)?,
                jitter: None,
                methods: methods.clone(),
                path: path.clone(),
                request_headers: Vec::new(),
                percent: 100.0,
                filter,
            })
        })
    };
    http_ports(&a, action)?
        .into_iter()
        .map(|port| {
            Ok(Planned {
                fault: fault(NetFilter {
                    dst: None,
                    src: None,
                    port: Some(port),
                    proto: Proto::Tcp,
                })?,
                targets: vec![TargetSelector::Host],
            })
        })
        .collect()
}

fn stress(a: StressAttack) -> Result<Vec<Planned>, MapError> {
    if !a.options.is_empty() {
        return Err(unmapped(
            "options are stress-ng options; chaosd's workers are its own: leave options out",
        ));
    }
    let fault = match a.action.as_str() {
        "cpu" => {
            if given(&a.size).is_some() {
                return Err(invalid("size is not a field of stress-cpu"));
            }
            // Absent (Chaos Mesh drops a 0): full load, as stress-ng without --cpu-load.
            let load = match given(&a.load) {
                None | Some("0") => 100.0,
                Some(l) => match l.parse::<f64>() {
                    Ok(v) if v > 0.0 && v <= 100.0 => v,
                    _ => return Err(invalid(format!("load {l:?}: a percentage 1-100"))),
                },
            };
            let workers = match given(&a.workers) {
                None | Some("0") => None,
                Some(w) => Some(
                    w.parse::<u32>()
                        .map_err(|_| invalid(format!("workers {w:?}: a number of workers")))?,
                ),
            };
            FaultSpec::StressCpu(StressCpuParams { load, workers })
        }
        "mem" => {
            if given(&a.load).is_some() || given(&a.workers).is_some() {
                return Err(invalid(
                    "stress-mem takes size only (load and workers are stress-cpu's)",
                ));
            }
            let size = given(&a.size).ok_or_else(|| {
                invalid(
                    "stress-mem needs size (e.g. 256MB or 10%): chaosd does not default to all \
                     the host's memory",
                )
            })?;
            match size.strip_suffix('%') {
                Some(p) => FaultSpec::StressMem(StressMemParams {
                    size: None,
                    percent: Some(percent("size", p)?),
                    rate: None,
                }),
                None => FaultSpec::StressMem(StressMemParams {
                    size: Some(written("size", size)?),
                    percent: None,
                    rate: None,
                }),
            }
        }
        other => {
            return Err(invalid(format!(
                "unknown stress action {other:?}: cpu or mem"
            )));
        }
    };
    Ok(vec![Planned {
        fault,
        targets: Vec::new(),
    }])
}

/// The directory a disk attack's `path` names: itself if a directory, else its parent.
fn disk_dir(path: &str, host: &dyn HostView) -> Result<PathBuf, MapError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(invalid(format!("path {path:?} must be absolute")));
    }
    if host.is_dir(p) {
        return Ok(p.to_path_buf());
    }
    match p.parent() {
        Some(parent) if host.is_dir(parent) => Ok(parent.to_path_buf()),
        _ => Err(invalid(format!(
            "path {path:?}: neither it nor its directory exists on this host"
        ))),
    }
}

fn disk(a: DiskAttack, host: &dyn HostView) -> Result<Vec<Planned>, MapError> {
    let path = given(&a.path).ok_or_else(|| {
        invalid(
            "a disk attack needs path: chaosd acts on the filesystem of that file or directory \
             (it does not default to its working directory)",
        )
    })?;
    let dir = disk_dir(path, host)?.to_string_lossy().into_owned();
    match a.action.as_str() {
        "fill" => {
            if given(&a.payload_process_num).is_some() {
                return Err(invalid("payload-process-num is not a field of disk-fill"));
            }
            let size = dd_size(
                "size",
                given(&a.size).ok_or_else(|| invalid("disk-fill needs size"))?,
            )?;
            Ok(vec![Planned {
                fault: FaultSpec::DiskFill(DiskFillParams {
                    path: dir,
                    size: Some(written("size", &size.to_string())?),
                    percent: None,
                    allow_below_floor: false,
                }),
                targets: Vec::new(),
            }])
        }
        "write-payload" | "read-payload" => {
            if given(&a.fill_by_fallocate).is_some() {
                return Err(invalid("fill-by-fallocate is a field of disk-fill only"));
            }
            if let Some(s) = given(&a.size) {
                dd_size("size", s)?;
            }
            let workers = match given(&a.payload_process_num) {
                None => 1,
                Some(n) => match n.parse::<usize>() {
                    Ok(n @ 1..=MAX_FAULTS_PER_ATTACK) => n,
                    _ => {
                        return Err(invalid(format!(
                            "payload-process-num {n:?}: 1 to {MAX_FAULTS_PER_ATTACK}"
                        )));
                    }
                },
            };
            let mode = if a.action == "write-payload" {
                IoMode::Write
            } else {
                IoMode::Read
            };
            Ok((0..workers)
                .map(|_| Planned {
                    fault: FaultSpec::DiskIo(DiskIoParams {
                        path: dir.clone(),
                        mode,
                        rate: None,
                    }),
                    targets: Vec::new(),
                })
                .collect())
        }
        other => Err(invalid(format!(
            "unknown disk action {other:?}: fill, write-payload or read-payload"
        ))),
    }
}

/// The cgroups of `pids`, each checked to hold none but them (and their children among them).
fn cgroups_of_only(
    what: &str,
    pids: &[u32],
    host: &dyn HostView,
) -> Result<Vec<TargetSelector>, MapError> {
    let mut cgroups: BTreeMap<String, ()> = BTreeMap::new();
    for &pid in pids {
        let cg = host
            .cgroup_of(pid)
            .map_err(|e| invalid(format!("{what}: the cgroup of pid {pid}: {e}")))?;
        cgroups.insert(cg, ());
    }
    for cg in cgroups.keys() {
        let others: Vec<String> = host
            .processes_under(cg)
            .into_iter()
            .filter(|(p, _)| !pids.contains(p))
            .map(|(p, comm)| format!("{p} ({comm})"))
            .collect();
        if !others.is_empty() {
            let shown = others
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            return Err(unmapped(format!(
                "{what}: chaosd acts on whole cgroups, and cgroup {cg} also holds {} other \
                 process(es): {shown}{}; run the target in a cgroup of its own (a systemd unit \
                 or scope), or use chaosd's /v1/faults API with that cgroup",
                others.len(),
                if others.len() > 5 { ", ..." } else { "" }
            )));
        }
    }
    Ok(cgroups.into_keys().map(TargetSelector::Cgroup).collect())
}

fn process(a: ProcessAttack, host: &dyn HostView) -> Result<Vec<Planned>, MapError> {
    if given(&a.recover_cmd).is_some() {
        return Err(unmapped(
            "recoverCmd runs a shell command at recovery; chaosd runs no commands for a remote \
             caller",
        ));
    }
    let name = given(&a.process)
        .ok_or_else(|| invalid("a process attack needs process (a name or a pid)"))?;
    let signal: i32 = match (a.action.as_str(), given(&a.signal)) {
        ("stop", _) => libc::SIGSTOP,
        ("" | "kill", None) => libc::SIGKILL,
        ("" | "kill", Some(s)) => match s.parse::<i32>() {
            Ok(0) => libc::SIGKILL,
            Ok(n) => n,
            Err(_) => {
                return Err(invalid(format!(
                    "signal {s:?}: a signal number, e.g. 9 or 15"
                )));
            }
        },
        (other, _) => {
            return Err(invalid(format!(
                "unknown process action {other:?}: kill or stop (or none, as Chaos Mesh sends)"
            )));
        }
    };
    let pids = host.processes_named(name);
    if pids.is_empty() {
        return Err(invalid(format!(
            "no process named or numbered {name:?} on this host"
        )));
    }
    let what = format!("process {name:?}");
    let targets = cgroups_of_only(&what, &pids, host)?;
    let fault = if signal == libc::SIGSTOP {
        // Stopped until the recover call, as chaos-mesh/chaosd resumes SIGSTOP'ed processes.
        FaultSpec::ProcessPause(ProcessPauseParams {})
    } else {
        FaultSpec::ProcessKill(ProcessKillParams {
            signal: written("signal", &signal.to_string())?,
            count: None,
            percent: None,
            every: None,
        })
    };
    Ok(vec![Planned { fault, targets }])
}

fn clock_name(id: &str) -> Result<ClockName, MapError> {
    let upper = id.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CLOCK_").unwrap_or(&upper);
    Ok(match bare {
        "REALTIME" => ClockName::Realtime,
        "MONOTONIC" => ClockName::Monotonic,
        "MONOTONIC_RAW" => ClockName::MonotonicRaw,
        "REALTIME_COARSE" => ClockName::RealtimeCoarse,
        "MONOTONIC_COARSE" => ClockName::MonotonicCoarse,
        "BOOTTIME" => ClockName::Boottime,
        "REALTIME_ALARM" => ClockName::RealtimeAlarm,
        "BOOTTIME_ALARM" => ClockName::BoottimeAlarm,
        "TAI" => ClockName::Tai,
        "PROCESS_CPUTIME_ID" | "THREAD_CPUTIME_ID" => {
            return Err(unmapped(format!(
                "{id}: CPU-time clocks are not wall clocks; chaosd skews CLOCK_REALTIME, \
                 CLOCK_MONOTONIC, CLOCK_BOOTTIME and their variants"
            )));
        }
        _ => return Err(invalid(format!("clock-ids-slice: unknown clock {id:?}"))),
    })
}

fn clock(a: ClockAttack, host: &dyn HostView) -> Result<Vec<Planned>, MapError> {
    if !a.action.is_empty() {
        return Err(invalid(format!(
            "clock attacks have no action, got {:?}",
            a.action
        )));
    }
    let pid_text = given(&a.pid).ok_or_else(|| invalid("a clock attack needs pid"))?;
    let pid: u32 = pid_text
        .parse()
        .map_err(|_| invalid(format!("pid {pid_text:?} is not a process id")))?;
    let offset = given(&a.time_offset)
        .ok_or_else(|| invalid("a clock attack needs time-offset (e.g. -5m, 1h)"))?;
    let (sign, magnitude) = match offset.as_bytes().first() {
        Some(b'-') => ("-", &offset[1..]),
        Some(b'+') => ("+", &offset[1..]),
        _ => ("+", offset),
    };
    let d = go_duration("time-offset", magnitude)?;
    let offset_text = format!("{sign}{}", humantime::format_duration(d));
    let clocks = match given(&a.clock_ids_slice) {
        None => vec![ClockName::Realtime],
        Some(list) => comma_list(list)
            .into_iter()
            .map(clock_name)
            .collect::<Result<Vec<_>, _>>()?,
    };
    if !host.processes_named(&pid.to_string()).contains(&pid) {
        return Err(invalid(format!("no process {pid} on this host")));
    }
    let targets = cgroups_of_only(&format!("pid {pid}"), &[pid], host)?;
    Ok(vec![Planned {
        fault: FaultSpec::ClockSkew(ClockSkewParams {
            offset: Some(written("time-offset", &offset_text)?),
            drift: None,
            rate: None,
            clocks,
        }),
        targets,
    }])
}

/// The host as it is: DNS through the system resolver, `/proc`, `/sys/class/net`, cgroup2.
pub struct LiveHost {
    pub mount: PathBuf,
}

impl HostView for LiveHost {
    fn resolve(&self, hostname: &str) -> Result<Vec<IpAddr>, String> {
        use std::net::ToSocketAddrs as _;
        let mut out: Vec<IpAddr> = Vec::new();
        for a in (hostname, 0).to_socket_addrs().map_err(|e| e.to_string())? {
            if !out.contains(&a.ip()) {
                out.push(a.ip());
            }
        }
        Ok(out)
    }

    fn device_exists(&self, name: &str) -> bool {
        !name.is_empty() && Path::new("/sys/class/net").join(name).exists()
    }

    fn processes_named(&self, process: &str) -> Vec<u32> {
        let user_space =
            |pid: u32| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty());
        if let Ok(pid) = process.parse::<u32>() {
            return if user_space(pid) {
                vec![pid]
            } else {
                Vec::new()
            };
        }
        // /proc/PID/comm holds at most 15 bytes of the name.
        let comm_of = |name: &str| name.chars().take(15).collect::<String>();
        let wanted = comm_of(process);
        let own = std::process::id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut out: Vec<u32> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != own && user_space(pid))
            .filter(|&pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
                comm.trim_end() == wanted
                    || exe
                        .as_deref()
                        .and_then(Path::file_name)
                        .is_some_and(|f| f == process)
            })
            .collect();
        out.sort_unstable();
        out
    }

    fn cgroup_of(&self, pid: u32) -> Result<String, String> {
        crate::host::cgroup::cgroup_of_pid(pid).map_err(|e| e.to_string())
    }

    fn processes_under(&self, cgroup: &str) -> Vec<(u32, String)> {
        crate::host::cgroup::processes_in(&self.mount, cgroup, true)
            .into_iter()
            .map(|p| (p.pid, p.comm))
            .collect()
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Default)]
    struct FakeHost {
        names: BTreeMap<String, Vec<IpAddr>>,
        procs: Vec<(u32, &'static str, &'static str)>,
    }

    impl HostView for FakeHost {
        fn resolve(&self, hostname: &str) -> Result<Vec<IpAddr>, String> {
            self.names
                .get(hostname)
                .cloned()
                .ok_or_else(|| "no such name".into())
        }
        fn device_exists(&self, name: &str) -> bool {
            name == "eth0"
        }
        fn processes_named(&self, process: &str) -> Vec<u32> {
            self.procs
                .iter()
                .filter(|(pid, comm, _)| *comm == process || pid.to_string() == process)
                .map(|p| p.0)
                .collect()
        }
        fn cgroup_of(&self, pid: u32) -> Result<String, String> {
            self.procs
                .iter()
                .find(|p| p.0 == pid)
                .map(|p| p.2.to_string())
                .ok_or_else(|| "gone".into())
        }
        fn processes_under(&self, cgroup: &str) -> Vec<(u32, String)> {
            self.procs
                .iter()
                .filter(|p| p.2 == cgroup)
                .map(|p| (p.0, p.1.to_string()))
                .collect()
        }
        fn is_dir(&self, path: &Path) -> bool {
            path == Path::new("/var/lib/app")
        }
    }

    fn one(route: &str, body: serde_json::Value, host: &FakeHost) -> Planned {
        let mut v = plan(route, body, host).unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0)
    }

    #[test]
    fn network_loss_is_host_wide_to_the_named_peers() {
        let host = FakeHost::default();
        let p = one(
            "network",
            json!({"uid":"u","action":"loss","device":"eth0","ip-address":"10.1.2.3",
                   "ip-protocol":"udp","egress-port":"53","percent":"30","correlation":"0"}),
            &host,
        );
        assert_eq!(p.targets, vec![TargetSelector::Host]);
        let FaultSpec::NetLoss(l) = p.fault else {
            panic!("{:?}", p.fault)
        };
        assert_eq!(l.percent, 30.0);
        assert_eq!(l.filter.dst.unwrap().text(), "10.1.2.3");
        assert_eq!(l.filter.port.unwrap().text(), "53");
        assert_eq!(l.filter.proto, Proto::Udp);
    }

    #[test]
    fn peers_times_ports_become_several_faults() {
        let mut host = FakeHost::default();
        host.names.insert(
            "db.example".into(),
            vec!["10.0.0.5".parse().unwrap(), "10.0.0.6".parse().unwrap()],
        );
        let v = plan(
            "network",
            json!({"action":"delay","hostname":"db.example","ip-protocol":"tcp",
                   "egress-port":"5432,8001:8010","latency":"1.5s","jitter":"10ms"}),
            &host,
        )
        .unwrap();
        assert_eq!(v.len(), 4);
        let FaultSpec::NetDelay(d) = &v[1].fault else {
            panic!()
        };
        assert_eq!(d.delay.get(), Duration::from_millis(1500));
        assert_eq!(d.jitter.as_ref().unwrap().get(), Duration::from_millis(10));
        assert_eq!(d.filter.port.as_ref().unwrap().text(), "8001-8010");
    }

    #[test]
    fn partition_directions() {
        let host = FakeHost::default();
        let to = one(
            "network",
            json!({"action":"partition","ip-address":"10.0.0.0/8","direction":"to"}),
            &host,
        );
        assert!(
            matches!(to.fault, FaultSpec::NetLoss(ref l) if l.percent == 100.0 && l.direction == Direction::Egress)
        );
        let from = one(
            "network",
            json!({"action":"partition","ip-address":"10.0.0.0/8","direction":"from"}),
            &host,
        );
        assert!(
            matches!(from.fault, FaultSpec::NetLoss(ref l) if l.direction == Direction::Ingress)
        );
        let both = one(
            "network",
            json!({"action":"partition","ip-address":"10.0.0.0/8","direction":"both"}),
            &host,
        );
        assert!(matches!(both.fault, FaultSpec::NetPartition(_)));
    }

    #[test]
    fn what_has_no_counterpart_is_refused_with_why() {
        let host = FakeHost::default();
        let refuse = |route: &str, body: serde_json::Value| {
            plan(route, body, &host).unwrap_err().to_string()
        };
        assert!(
            refuse("network", json!({"action":"loss","percent":"5"}))
                .contains("needs ip-address or hostname")
        );
        assert!(
            refuse(
                "network",
                json!({"action":"loss","percent":"5","ip-address":"1.2.3.4","correlation":"25"})
            )
            .contains("correlation")
        );
        assert!(refuse("network", json!({"action":"loss","percent":"5","ip-address":"1.2.3.4","source-port":"80","ip-protocol":"tcp"})).contains("source-port"));
        assert!(
            refuse(
                "network",
                json!({"action":"down","device":"eth0","duration":"1m"})
            )
            .contains("never changes the host's interfaces")
        );
        assert!(
            refuse(
                "network",
                json!({"action":"loss","percent":"5","ip-address":"1.2.3.4","device":"nope0"})
            )
            .contains("device \"nope0\"")
        );
        assert!(
            refuse(
                "network",
                json!({"action":"loss","percent":"5","ip-address":"1.2.3.4","latency":"1s"})
            )
            .contains("latency is not a field of network-loss")
        );
        assert!(
            refuse("network", json!({"action":"dns","dns-server":"1.1.1.1"}))
                .contains("resolv.conf")
        );
        assert!(refuse("jvm", json!({"action":"gc"})).contains("JVM"));
        assert!(
            refuse(
                "stress",
                json!({"action":"cpu","options":["--cpu-method","all"]})
            )
            .contains("stress-ng")
        );
        assert!(
            refuse(
                "process",
                json!({"process":"x","recoverCmd":"systemctl start x"})
            )
            .contains("runs no commands")
        );
        let many = refuse(
            "network",
            json!({"action":"loss","percent":"5","ip-protocol":"tcp",
                   "ip-address":"10.0.0.1,10.0.0.2,10.0.0.3","egress-port":"1,2,3"}),
        );
        assert!(many.contains("9 chaosd faults"), "{many}");
    }

    /// `spec.http-abort` / `spec.http-delay` as Chaos Mesh's controller flattens them.
    #[test]
    fn http_abort_and_delay_are_host_wide_on_the_attacks_port() {
        let host = FakeHost::default();
        let abort = one(
            "http",
            json!({"uid":"u-h1","action":"abort","proxy_ports":[8080],"target":"Request",
                   "port":8080,"path":"/api/*","method":"GET"}),
            &host,
        );
        assert_eq!(abort.targets, vec![TargetSelector::Host]);
        let FaultSpec::HttpAbort(a) = abort.fault else {
            panic!("{:?}", abort.fault)
        };
        assert!(!a.reset);
        assert_eq!(a.percent, 100.0);
        assert_eq!(a.methods[0].value().0, "GET");
        assert_eq!(a.path.as_ref().unwrap().text(), "/api/*");
        assert_eq!(a.filter.port.as_ref().unwrap().text(), "8080");
        assert_eq!((a.filter.dst.as_ref(), a.filter.proto), (None, Proto::Tcp));

        let delay = one(
            "http",
            json!({"uid":"u-h2","action":"delay","proxy_ports":[80],"target":"Response",
                   "delay":"1.5s"}),
            &host,
        );
        let FaultSpec::HttpDelay(d) = delay.fault else {
            panic!("{:?}", delay.fault)
        };
        assert_eq!(d.delay.get(), Duration::from_millis(1500));
        assert!(d.methods.is_empty() && d.path.is_none() && d.jitter.is_none());
        assert_eq!(d.filter.port.as_ref().unwrap().text(), "80");

        // Without port, each of proxy_ports; consecutive ports become one range.
        let v = plan(
            "http",
            json!({"action":"delay","proxy_ports":[8082,80,8081,8080],"target":"Request",
                   "delay":"100ms","port":0,"code":"","abort":false}),
            &host,
        )
        .unwrap();
        let ports: Vec<String> = v
            .iter()
            .map(|p| match &p.fault {
                FaultSpec::HttpDelay(d) => d.filter.port.as_ref().unwrap().text().to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ports, ["80", "8080-8082"]);
        // chaos-mesh/chaosd's own clients send abort true and an empty delay.
        assert!(matches!(
            one(
                "http",
                json!({"action":"abort","proxy_ports":[80],"target":"Request","abort":true,"delay":""}),
                &host
            )
            .fault,
            FaultSpec::HttpAbort(_)
        ));
    }

    #[test]
    fn http_fields_that_are_bad_missing_or_have_no_counterpart_are_named() {
        let host = FakeHost::default();
        let refuse = |body: serde_json::Value| plan("http", body, &host).unwrap_err();
        let invalid_with = |body: serde_json::Value, what: &str| {
            let e = refuse(body);
            assert!(
                matches!(&e, MapError::Invalid(m) if m.contains(what)),
                "{what}: {e:?}"
            );
        };
        let unmapped_with = |body: serde_json::Value, what: &str| {
            let e = refuse(body);
            assert!(
                matches!(&e, MapError::Unmapped(m) if m.contains(what)),
                "{what}: {e:?}"
            );
        };
        invalid_with(
            json!({"action":"abort","target":"Request"}),
            "needs proxy_ports",
        );
        invalid_with(
            json!({"action":"abort","target":"Request","proxy_ports":[]}),
            "needs proxy_ports",
        );
        invalid_with(
            json!({"action":"abort","target":"Request","proxy_ports":[70000]}),
            "proxy_ports \"70000\"",
        );
        invalid_with(
            json!({"action":"abort","target":"Request","proxy_ports":[80],"port":81}),
            "port 81 is not one of proxy_ports",
        );
        invalid_with(json!({"action":"abort","proxy_ports":[80]}), "needs target");
        invalid_with(
            json!({"action":"abort","proxy_ports":[80],"target":"Both"}),
            "target \"Both\"",
        );
        invalid_with(
            json!({"action":"delay","proxy_ports":[80],"target":"Request"}),
            "needs delay",
        );
        invalid_with(
            json!({"action":"delay","proxy_ports":[80],"target":"Request","delay":"soon"}),
            "delay \"soon\"",
        );
        invalid_with(
            json!({"action":"delay","proxy_ports":[80],"target":"Request","delay":"0s"}),
            "no delay",
        );
        invalid_with(
            json!({"action":"abort","proxy_ports":[80],"target":"Request","delay":"1s"}),
            "delay is a field of http-delay",
        );
        invalid_with(
            json!({"action":"abort","proxy_ports":[80],"target":"Request","path":"api"}),
            "path:",
        );
        invalid_with(
            json!({"action":"abort","proxy_ports":[80],"target":"Request","method":"G T"}),
            "method:",
        );
        invalid_with(
            json!({"action":"abort","proxy_ports":[80],"target":"Request","abort":false}),
            "abort false",
        );
        invalid_with(
            json!({"action":"abort","proxy_ports":[80],"target":"Request","url":"http://x"}),
            "url is a field of http-request",
        );
        invalid_with(
            json!({"action":"abort","rule":{"target":"Request"},"proxy_ports":[80]}),
            "send its fields flat",
        );
        invalid_with(
            json!({"action":"abort","proxy_ports":[80],"target":"Request","replace":{"code":503}}),
            "unknown field `replace`",
        );
        invalid_with(json!({"action":"patch"}), "abort or delay");
        unmapped_with(
            json!({"action":"abort","proxy_ports":[80],"target":"Response"}),
            "use target Request",
        );
        unmapped_with(
            json!({"action":"abort","proxy_ports":[80],"target":"Response","code":"500"}),
            "use target Request",
        );
        unmapped_with(
            json!({"action":"delay","proxy_ports":[80],"target":"Response","code":"500","delay":"1s"}),
            "code 500",
        );
        unmapped_with(
            json!({"action":"request","url":"http://10.0.0.1/","count":10,"enable-conn-pool":true}),
            "makes no requests",
        );
        unmapped_with(
            json!({"action":"config","file_path":"/etc/rules.json"}),
            "http.status",
        );
        unmapped_with(
            json!({"action":"abort","target":"Request",
                   "proxy_ports":[1,3,5,7,9,11,13,15,17]}),
            "9 chaosd faults",
        );
    }

    #[test]
    fn dns_maps_a_name_onto_an_address() {
        let p = one(
            "network",
            json!({"action":"dns","dns-domain-name":"db.svc.test","dns-ip":"10.9.9.9"}),
            &FakeHost::default(),
        );
        let FaultSpec::DnsAnswer(a) = p.fault else {
            panic!()
        };
        assert_eq!(a.ips[0].text(), "10.9.9.9");
        assert_eq!(a.domains[0].text(), "db.svc.test");
    }

    #[test]
    fn stress_and_disk() {
        let host = FakeHost::default();
        let cpu = one(
            "stress",
            json!({"action":"cpu","load":50,"workers":2}),
            &host,
        );
        assert_eq!(
            cpu.fault,
            FaultSpec::StressCpu(StressCpuParams {
                load: 50.0,
                workers: Some(2)
            })
        );
        assert!(cpu.targets.is_empty());
        let mem = one("stress", json!({"action":"mem","size":"10%"}), &host);
        assert!(matches!(mem.fault, FaultSpec::StressMem(ref m) if m.percent == Some(10.0)));
        let fill = one(
            "disk",
            json!({"action":"fill","size":"1M","path":"/var/lib/app/fill.dat"}),
            &host,
        );
        let FaultSpec::DiskFill(f) = fill.fault else {
            panic!()
        };
        assert_eq!(f.path, "/var/lib/app");
        assert_eq!(f.size.unwrap().get().0, 1 << 20);
        let io = plan(
            "disk",
            json!({"action":"write-payload","size":"100M","path":"/var/lib/app","payload-process-num":2}),
            &host,
        )
        .unwrap();
        assert_eq!(io.len(), 2);
        assert!(
            plan(
                "disk",
                json!({"action":"fill","size":"1M","path":"/nope/x"}),
                &host
            )
            .is_err()
        );
    }

    #[test]
    fn process_and_clock_need_a_cgroup_of_their_own() {
        let host = FakeHost {
            procs: vec![
                (10, "api", "/system.slice/api.service"),
                (20, "nginx", "/system.slice/web.service"),
                (21, "nginx", "/system.slice/web.service"),
                (30, "worker", "/system.slice/mixed.service"),
                (31, "sidecar", "/system.slice/mixed.service"),
            ],
            ..FakeHost::default()
        };
        let stop = one(
            "process",
            json!({"action":"","process":"nginx","signal":19}),
            &host,
        );
        assert_eq!(stop.fault, FaultSpec::ProcessPause(ProcessPauseParams {}));
        assert_eq!(
            stop.targets,
            vec![TargetSelector::Cgroup("/system.slice/web.service".into())]
        );
        let kill = one("process", json!({"process":"10","signal":15}), &host);
        assert!(
            matches!(kill.fault, FaultSpec::ProcessKill(ref k) if k.signal.get().0 == nix::sys::signal::Signal::SIGTERM)
        );
        let e = plan("process", json!({"process":"worker"}), &host)
            .unwrap_err()
            .to_string();
        assert!(e.contains("31 (sidecar)"), "{e}");
        let skew = one(
            "clock",
            json!({"pid":10,"time-offset":"-5m","clock-ids-slice":"CLOCK_REALTIME,CLOCK_MONOTONIC"}),
            &host,
        );
        let FaultSpec::ClockSkew(c) = skew.fault else {
            panic!()
        };
        assert_eq!(c.offset_ns(), -300_000_000_000);
        assert_eq!(c.clocks, vec![ClockName::Realtime, ClockName::Monotonic]);
    }

    #[test]
    fn go_durations_and_dd_sizes() {
        assert_eq!(
            go_duration("x", "1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            go_duration("x", "250us").unwrap(),
            Duration::from_micros(250)
        );
        assert!(go_duration("x", "1 s").is_err());
        assert!(go_duration("x", "").is_err());
        assert_eq!(dd_size("s", "512kB").unwrap(), 512_000);
        assert_eq!(dd_size("s", "2G").unwrap(), 2 << 30);
        assert!(dd_size("s", "0").is_err());
        assert!(dd_size("s", "1Q").is_err());
    }
}
