//! `net.connect_error`: `connect()` from the target fails with a chosen errno (TCP and
//! connected UDP), and so does an unconnected UDP `sendmsg()`.

use std::sync::{Arc, Mutex};

use chaosd_common::net::{NET_KIND_CONNECT_ERROR, NetRule};
use nix::errno::Errno;

use super::{apply_rule, filter::peer_filter, loss::check_percent, percent_to_ppm};
use crate::{
    api::NetConnectErrorParams,
    error::{FaultError, RequestError},
    fault::{ActiveFault, ApplyContext},
    kernel::Kernel,
};

/// errno by name ("ECONNREFUSED", case-insensitive) or number ("111").
pub fn parse_errno(s: &str) -> Result<i32, RequestError> {
    let bad = || RequestError::BadErrno {
        input: s.to_string(),
    };
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=4095).contains(&n).then_some(n).ok_or_else(bad);
    }
    let upper = s.to_ascii_uppercase();
    (1..=133)
        .find(|&n| format!("{:?}", Errno::from_raw(n)) == upper)
        .ok_or_else(bad)
}

pub fn validate(p: &NetConnectErrorParams) -> Result<(), RequestError> {
    parse_errno(&p.errno)?;
    check_percent(p.percent)?;
    if p.filter.src.is_some() {
        return Err(RequestError::BadFilter {
            field: "src",
            input: p.filter.src.clone().unwrap_or_default(),
            reason: "a connect has no local address yet; filter by --dst and --port".into(),
        });
    }
    peer_filter(&p.filter).map(drop)
}

pub fn apply(
    kernel: &Arc<Mutex<Kernel>>,
    p: &NetConnectErrorParams,
    ctx: &ApplyContext<'_>,
) -> Result<Box<dyn ActiveFault>, FaultError> {
    let rule = NetRule {
        kind: NET_KIND_CONNECT_ERROR,
        probability_ppm: percent_to_ppm(p.percent),
        retval: -parse_errno(&p.errno).expect("validated before apply"),
        filter: peer_filter(&p.filter).expect("validated before apply"),
        ..NetRule::default()
    };
    apply_rule(kernel, rule, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_by_name_or_number() {
        assert_eq!(parse_errno("ECONNREFUSED").unwrap(), libc::ECONNREFUSED);
        assert_eq!(parse_errno("etimedout").unwrap(), libc::ETIMEDOUT);
        assert_eq!(parse_errno("111").unwrap(), 111);
        for bad in ["ENOTATHING", "0", "5000", ""] {
            assert!(parse_errno(bad).is_err(), "{bad}");
        }
    }
}
