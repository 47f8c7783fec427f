//! `chaosctl inject dns ...`: DNS faults through chaosd's resolver, on a cgroup's queries.

use std::time::Duration;

use chaosd::api::{
    AnswerAddr, DnsAnswerParams, DnsDelayParams, DnsErrorParams, DnsRcode, DnsTimeoutParams,
    DnsType, DomainPattern, FaultSpec, Written,
};
use clap::{Args, Subcommand};

use crate::args::Common;

#[derive(Subcommand)]
pub enum DnsFault {
    /// Answer the target's matching queries with an error code instead of the server's answer.
    Error {
        /// NXDOMAIN (no such name), SERVFAIL, REFUSED, FORMERR or NOTIMP.
        #[arg(long)]
        rcode: Written<DnsRcode>,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Leave the target's matching queries unanswered (the client's own timeout shows).
    Timeout {
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Answer the target's matching A/AAAA queries with wrong addresses.
    Answer {
        /// Addresses to answer with, comma-separated (those of the query's family are given),
        /// or `random` (from 198.18.0.0/15 or 2001:db8::/32).
        #[arg(long, value_delimiter = ',', required = true)]
        ip: Vec<Written<AnswerAddr>>,
        /// TTL of the forged records in seconds; 0 so nothing caches them past the fault.
        #[arg(long, default_value_t = 0)]
        ttl: u32,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Answer the target's matching queries late (the answer is the server's).
    Delay {
        /// How late, e.g. 2s or 300ms.
        #[arg(long)]
        delay: Written<Duration>,
        #[command(flatten)]
        query: QueryArgs,
    },
}

/// Which queries, how many of them, and the common target/duration flags.
#[derive(Args)]
pub struct QueryArgs {
    /// Name pattern: an exact name (db.svc.test) or a wildcard (*.svc.test); repeatable or
    /// comma-separated; every name by default.
    #[arg(long, value_delimiter = ',')]
    pub domain: Vec<Written<DomainPattern>>,
    /// Query type (A, AAAA, MX, ...); repeatable or comma-separated; every type by default.
    #[arg(long = "type", value_delimiter = ',')]
    pub qtype: Vec<Written<DnsType>>,
    /// Share of matching queries affected, above 0 and at most 100 (rolled per query).
    #[arg(long, default_value_t = 100.0)]
    pub percent: f64,
    #[command(flatten)]
    pub common: Common,
}

impl DnsFault {
    pub fn into_spec(self) -> (FaultSpec, Common) {
        match self {
            DnsFault::Error { rcode, query } => (
                FaultSpec::DnsError(DnsErrorParams {
                    rcode,
                    domains: query.domain,
                    types: query.qtype,
                    percent: query.percent,
                }),
                query.common,
            ),
            DnsFault::Timeout { query } => (
                FaultSpec::DnsTimeout(DnsTimeoutParams {
                    domains: query.domain,
                    types: query.qtype,
                    percent: query.percent,
                }),
                query.common,
            ),
            DnsFault::Answer { ip, ttl, query } => (
                FaultSpec::DnsAnswer(DnsAnswerParams {
                    ips: ip,
                    ttl,
                    domains: query.domain,
                    types: query.qtype,
                    percent: query.percent,
                }),
                query.common,
            ),
            DnsFault::Delay { delay, query } => (
                FaultSpec::DnsDelay(DnsDelayParams {
                    delay,
                    domains: query.domain,
                    types: query.qtype,
                    percent: query.percent,
                }),
                query.common,
            ),
        }
    }

    /// What `list` shows of a DNS fault's parameters.
    pub fn describe(spec: &FaultSpec) -> Option<String> {
        let join = |v: &[String]| {
            if v.is_empty() {
                "every name".to_string()
            } else {
                v.join(",")
            }
        };
        let (what, domains, types, percent) = match spec {
            FaultSpec::DnsError(p) => (
                format!("answered {}", p.rcode),
                &p.domains,
                &p.types,
                p.percent,
            ),
            FaultSpec::DnsTimeout(p) => ("unanswered".to_string(), &p.domains, &p.types, p.percent),
            FaultSpec::DnsAnswer(p) => (
                format!(
                    "answered {}",
                    p.ips
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                &p.domains,
                &p.types,
                p.percent,
            ),
            FaultSpec::DnsDelay(p) => {
                (format!("{} late", p.delay), &p.domains, &p.types, p.percent)
            }
            _ => return None,
        };
        let names: Vec<String> = domains.iter().map(ToString::to_string).collect();
        let types: Vec<String> = types.iter().map(ToString::to_string).collect();
        Some(format!(
            "{percent} % of queries for {}{}: {what}",
            join(&names),
            if types.is_empty() {
                String::new()
            } else {
                format!(" ({})", types.join(","))
            }
        ))
    }
}
