//! Wire types of the DNS kinds (`dns.*`): a target's port-53 queries go through chaosd's
//! resolver, which answers the matching ones as the fault says and forwards the rest.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AnswerAddr, DnsRcode, DnsType, DomainPattern, Written};

/// Which queries a DNS fault takes; every kind has these fields.
pub trait DnsSelect {
    /// Name patterns; none means every name.
    fn domains(&self) -> &[Written<DomainPattern>];
    /// Query types; none means every type.
    fn types(&self) -> &[Written<DnsType>];
    /// Share of matching queries affected (rolled per query).
    fn percent(&self) -> f64;
}

macro_rules! select {
    ($t:ty) => {
        impl DnsSelect for $t {
            fn domains(&self) -> &[Written<DomainPattern>] {
                &self.domains
            }
            fn types(&self) -> &[Written<DnsType>] {
                &self.types
            }
            fn percent(&self) -> f64 {
                self.percent
            }
        }
    };
}

/// `dns.error`: matching queries are answered with `rcode` (NXDOMAIN, SERVFAIL, REFUSED).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsErrorParams {
    pub rcode: Written<DnsRcode>,
    /// Exact names (`db.svc.test`) and wildcards (`*.svc.test`); none = every name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<Written<DomainPattern>>,
    /// Query types (`A`, `AAAA`, ...); none = every type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<Written<DnsType>>,
    #[serde(default = "hundred")]
    pub percent: f64,
}

/// `dns.timeout`: matching queries get no answer at all (the client's own timeout shows).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsTimeoutParams {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<Written<DomainPattern>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<Written<DnsType>>,
    #[serde(default = "hundred")]
    pub percent: f64,
}

/// `dns.answer`: matching A/AAAA queries are answered with these addresses (those of the
/// query's family; `random`: a random one each time); other types get an empty answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsAnswerParams {
    pub ips: Vec<Written<AnswerAddr>>,
    /// TTL of the forged records, seconds; 0 by default so nothing caches them past the fault.
    #[serde(default)]
    pub ttl: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<Written<DomainPattern>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<Written<DnsType>>,
    #[serde(default = "hundred")]
    pub percent: f64,
}

/// `dns.delay`: matching queries are forwarded `delay` late (the answer is the real one).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsDelayParams {
    pub delay: Written<Duration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<Written<DomainPattern>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<Written<DnsType>>,
    #[serde(default = "hundred")]
    pub percent: f64,
}

select!(DnsErrorParams);
select!(DnsTimeoutParams);
select!(DnsAnswerParams);
select!(DnsDelayParams);

fn hundred() -> f64 {
    100.0
}
