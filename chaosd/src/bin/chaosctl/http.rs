//! `chaosctl inject http ...`: HTTP/1.1 faults on a cgroup's plaintext requests, through the
//! transparent proxy (no client change). TLS connections pass through with only the TCP
//! toxics: chaosd reads no encrypted request.

use std::time::Duration;

use chaosd::api::{
    Cidr, FaultSpec, HeaderLine, HeaderMatch, HttpAbortParams, HttpDelayParams, HttpMethod,
    HttpSelect, HttpStatus, HttpStatusParams, NetFilter, PathGlob, PortRange, Written,
};
use clap::{Args, Subcommand};

use crate::args::Common;

#[derive(Subcommand)]
pub enum HttpFault {
    /// Give the target's matching plaintext HTTP requests no response: the connection is
    /// closed (curl: "Empty reply from server"), or reset with --reset. TLS passes through.
    Abort {
        /// Reset the connection (RST: ECONNRESET) instead of closing it.
        #[arg(long)]
        reset: bool,
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Answer the target's matching plaintext HTTP requests with a status code (headers, body)
    /// instead of the server; the server never sees them. TLS passes through.
    Status {
        /// The code to answer with, 200 to 599, e.g. 503.
        #[arg(long)]
        status: Written<HttpStatus>,
        /// A response header, 'Name: value'; repeatable. Content-Length comes from --body.
        #[arg(long)]
        header: Vec<Written<HeaderLine>>,
        /// The response body (empty by default).
        #[arg(long)]
        body: Option<String>,
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Delay the target's matching plaintext HTTP requests on their way to the server (later
    /// requests on the same connection wait behind them). TLS passes through.
    Delay {
        /// Added to each matching request, e.g. 300ms.
        #[arg(long)]
        delay: Written<Duration>,
        /// Uniform spread around the delay, at most the delay.
        #[arg(long)]
        jitter: Option<Written<Duration>>,
        #[command(flatten)]
        request: RequestArgs,
    },
}

/// Which requests, on which connections, how many, and the common target/duration flags.
#[derive(Args)]
pub struct RequestArgs {
    /// Request method (GET, POST, ...); repeatable or comma-separated; every method by default.
    #[arg(long, value_delimiter = ',')]
    pub method: Vec<Written<HttpMethod>>,
    /// Path glob, query string left out: '/api/*' (`*` crosses `/`), '/v?/items', '/[ab]*'.
    #[arg(long)]
    pub path: Option<Written<PathGlob>>,
    /// A request header that must be present: 'Name: value-glob' or 'Name'; repeatable (all
    /// must match).
    #[arg(long)]
    pub request_header: Vec<Written<HeaderMatch>>,
    /// Destination prefix the target connects to (IPv4 or IPv6 CIDR or address).
    #[arg(long)]
    pub dst: Option<Written<Cidr>>,
    /// Destination port or range, e.g. 8080 or 8000-8080.
    #[arg(long)]
    pub port: Option<Written<PortRange>>,
    /// Share of matching requests affected, above 0 and at most 100 (rolled per request).
    #[arg(long, default_value_t = 100.0)]
    pub percent: f64,
    #[command(flatten)]
    pub common: Common,
}

impl RequestArgs {
    fn filter(&self) -> NetFilter {
        NetFilter {
            dst: self.dst.clone(),
            port: self.port.clone(),
            ..NetFilter::default()
        }
    }
}

impl HttpFault {
    pub fn into_spec(self) -> (FaultSpec, Common) {
        match self {
            HttpFault::Abort { reset, request: r } => (
                FaultSpec::HttpAbort(HttpAbortParams {
                    reset,
                    filter: r.filter(),
                    methods: r.method,
                    path: r.path,
                    request_headers: r.request_header,
                    percent: r.percent,
                }),
                r.common,
            ),
            HttpFault::Status {
                status,
                header,
                body,
                request: r,
            } => (
                FaultSpec::HttpStatus(HttpStatusParams {
                    status,
                    headers: header,
                    body,
                    filter: r.filter(),
                    methods: r.method,
                    path: r.path,
                    request_headers: r.request_header,
                    percent: r.percent,
                }),
                r.common,
            ),
            HttpFault::Delay {
                delay,
                jitter,
                request: r,
            } => (
                FaultSpec::HttpDelay(HttpDelayParams {
                    delay,
                    jitter,
                    filter: r.filter(),
                    methods: r.method,
                    path: r.path,
                    request_headers: r.request_header,
                    percent: r.percent,
                }),
                r.common,
            ),
        }
    }

    /// What `list` shows of an HTTP fault's parameters (the connection filter comes after).
    pub fn describe(spec: &FaultSpec) -> Option<String> {
        let (what, select): (String, &dyn HttpSelect) = match spec {
            FaultSpec::HttpAbort(p) => (
                if p.reset { "reset" } else { "closed" }.to_string() + " without a response",
                p,
            ),
            FaultSpec::HttpStatus(p) => (format!("answered {}", p.status), p),
            FaultSpec::HttpDelay(p) => (
                format!(
                    "{} late{}",
                    p.delay,
                    p.jitter
                        .as_ref()
                        .map(|j| format!(" ± {j}"))
                        .unwrap_or_default()
                ),
                p,
            ),
            _ => return None,
        };
        let methods: Vec<String> = select.methods().iter().map(ToString::to_string).collect();
        let mut which = if methods.is_empty() {
            "requests".to_string()
        } else {
            format!("{} requests", methods.join(","))
        };
        if let Some(path) = select.path() {
            which.push_str(&format!(" for {path}"));
        }
        for h in select.request_headers() {
            which.push_str(&format!(" with {h}"));
        }
        Some(format!("{} % of {which}: {what}", select.percent()))
    }
}
