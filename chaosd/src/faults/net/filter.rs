//! Turning a request's [`NetFilter`] into the kernel's [`PeerFilter`], with clear errors.

use chaosd_common::net::{FAMILY_ANY, FAMILY_V4, FAMILY_V6, PROTO_ANY, PeerFilter, Prefix};
use ipnet::IpNet;

use crate::{
    api::{NetFilter, PortRange, Proto, Written},
    error::RequestError,
};

/// Checks what the fields say together (each parsed when the request was decoded) and builds
/// the kernel filter.
pub fn peer_filter(f: &NetFilter) -> Result<PeerFilter, RequestError> {
    let peer = f.dst.as_ref().map(|d| d.get().0);
    let local = f.src.as_ref().map(|s| s.get().0);
    let family = match (peer, local) {
        (Some(a), Some(b)) if family_of(&a) != family_of(&b) => {
            return Err(bad(
                "src",
                f.src.as_ref().map(Written::text).unwrap_or_default(),
                "dst and src must be the same address family",
            ));
        }
        (Some(n), _) | (None, Some(n)) => family_of(&n),
        (None, None) => FAMILY_ANY,
    };
    let (port_lo, port_hi) = f
        .port
        .as_ref()
        .map(|p| {
            let PortRange { first, last } = p.get();
            (u32::from(first), u32::from(last))
        })
        .unwrap_or((0, 0));
    if port_hi != 0 && matches!(f.proto, Proto::Icmp) {
        return Err(bad(
            "port",
            f.port.as_ref().map(Written::text).unwrap_or_default(),
            "ICMP has no ports; drop --port or pick tcp/udp",
        ));
    }
    Ok(PeerFilter {
        family,
        proto: proto_number(f.proto),
        port_lo,
        port_hi,
        has_peer: u32::from(peer.is_some()),
        has_local: u32::from(local.is_some()),
        peer: peer.map(prefix).unwrap_or_default(),
        local: local.map(prefix).unwrap_or_default(),
    })
}

fn bad(field: &'static str, input: &str, reason: &str) -> RequestError {
    RequestError::BadFilter {
        field,
        input: input.to_string(),
        reason: reason.to_string(),
    }
}

fn family_of(n: &IpNet) -> u32 {
    match n {
        IpNet::V4(_) => FAMILY_V4,
        IpNet::V6(_) => FAMILY_V6,
    }
}

/// Address and mask as raw words in network byte order, the way the programs read packets.
fn prefix(n: IpNet) -> Prefix {
    let (addr, mask): (Vec<u8>, Vec<u8>) = match n {
        IpNet::V4(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
        IpNet::V6(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
    };
    let words = |b: &[u8]| {
        let mut w = [0u32; 4];
        for (i, c) in b.chunks(4).enumerate() {
            w[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
        }
        w
    };
    Prefix {
        addr: words(&addr),
        mask: words(&mask),
    }
}

fn proto_number(p: Proto) -> u32 {
    match p {
        Proto::Any => PROTO_ANY,
        Proto::Tcp => 6,
        Proto::Udp => 17,
        Proto::Icmp => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(dst: Option<&str>, src: Option<&str>, port: Option<&str>, proto: Proto) -> NetFilter {
        NetFilter {
            dst: dst.map(|s| s.parse().unwrap()),
            src: src.map(|s| s.parse().unwrap()),
            port: port.map(|s| s.parse().unwrap()),
            proto,
        }
    }

    #[test]
    fn prefixes_are_masked_words_in_packet_order() {
        let f = peer_filter(&filter(Some("10.1.2.3/8"), None, Some("5432"), Proto::Tcp)).unwrap();
        assert_eq!(f.family, FAMILY_V4);
        assert_eq!(f.peer.addr[0], u32::from_ne_bytes([10, 0, 0, 0]));
        assert_eq!(f.peer.mask[0], u32::from_ne_bytes([255, 0, 0, 0]));
        assert_eq!((f.port_lo, f.port_hi, f.proto), (5432, 5432, 6));
        let v6 = peer_filter(&filter(Some("::1"), None, None, Proto::Any)).unwrap();
        assert_eq!(v6.family, FAMILY_V6);
        assert_eq!(v6.peer.mask, [u32::MAX; 4]);
    }

    #[test]
    fn fields_that_disagree_are_refused_with_the_field() {
        for (f, field) in [
            (
                filter(Some("10.0.0.1"), Some("::1"), None, Proto::Any),
                "src",
            ),
            (filter(None, None, Some("80"), Proto::Icmp), "port"),
        ] {
            match peer_filter(&f) {
                Err(RequestError::BadFilter { field: got, .. }) => assert_eq!(got, field, "{f:?}"),
                other => panic!("{f:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_fields_do_not_decode() {
        for body in [
            r#"{"dst": "10.0.0.0/33"}"#,
            r#"{"port": "0"}"#,
            r#"{"port": "90-80"}"#,
        ] {
            let e = serde_json::from_str::<NetFilter>(body).unwrap_err();
            assert!(e.to_string().contains("is not valid"), "{body}: {e}");
        }
    }
}
