//! Request parameters as typed values: sizes, rates, prefixes, ports, errnos, signals,
//! durations and clock offsets, each parsed once when a request (or config) is decoded.

/// Splits `"1.5GiB"` into `(1.5, "GiB")` (the unit trimmed); None without a leading number.
pub fn split_number(s: &str) -> Option<(f64, &str)> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

/// Parses a byte size: `1073741824`, `512MiB`, `2GiB`, `1.5G` (k/M/G/T are powers of 1000,
/// Ki/Mi/Gi/Ti powers of 1024; a trailing `B` is optional).
pub fn parse_size(input: &str) -> Result<u64, String> {
    let (num, unit) = split_number(input.trim())
        .ok_or_else(|| format!("{input:?} does not start with a number"))?;
    let unit = unit
        .strip_suffix('B')
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit {other:?}")),
    };
    let bytes = num * mult;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err("too large".into());
    }
    Ok(bytes as u64)
}

/// A value of a request parameter, parsed once when the request is decoded, with the text the
/// request wrote it as (what answers, the journal and `chaosctl list` echo back).
///
/// It (de)serialises as that text; a number is accepted where a string is (`"errno": 5`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written<T> {
    text: String,
    value: T,
}

/// How a parameter's text becomes its value.
pub trait Quantity: Sized {
    /// `text` is trimmed. The error says what is wrong and gives an example.
    fn parse(text: &str) -> Result<Self, String>;
}

/// A parameter that does not parse: the text and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?} is not valid: {reason}")]
pub struct ValueError {
    pub input: String,
    pub reason: String,
}

impl<T> Written<T> {
    /// A default whose text is known to parse to `value`.
    pub(crate) fn known(text: &str, value: T) -> Self {
        Written {
            text: text.to_string(),
            value,
        }
    }

    pub fn value(&self) -> &T {
        &self.value
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

impl<T: Copy> Written<T> {
    pub fn get(&self) -> T {
        self.value
    }
}

impl<T: Quantity> std::str::FromStr for Written<T> {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let text = s.trim();
        T::parse(text)
            .map(|value| Written {
                text: text.to_string(),
                value,
            })
            .map_err(|reason| ValueError {
                input: text.to_string(),
                reason,
            })
    }
}

impl<T> std::fmt::Display for Written<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl<T> serde::Serialize for Written<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de, T: Quantity> serde::Deserialize<'de> for Written<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum TextOrNumber {
            Text(String),
            Number(u64),
        }
        let text = match TextOrNumber::deserialize(d)? {
            TextOrNumber::Text(s) => s,
            TextOrNumber::Number(n) => n.to_string(),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv4 or IPv6 prefix ("10.0.0.0/8", "2001:db8::/32"); a bare address is /32 or /128.
/// Host bits are cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(pub ipnet::IpNet);

impl Quantity for Cidr {
    fn parse(text: &str) -> Result<Self, String> {
        if let Ok(net) = text.parse::<ipnet::IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        text.parse::<std::net::IpAddr>()
            .map(|a| Cidr(a.into()))
            .map_err(|_| "expected a CIDR like 10.0.0.0/8 or 2001:db8::/32, or an address".into())
    }
}

/// A DNS name pattern (`dns.*`): an exact name (`db.svc.test`) or `*.` and a suffix
/// (`*.svc.test`: every name below `svc.test`, not `svc.test` itself). Lower-cased, without
/// the trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainPattern {
    /// The name, or the suffix after `*.`.
    pub name: String,
    /// Whether it was `*.name`.
    pub wildcard: bool,
}

impl DomainPattern {
    /// Whether the query name `qname` (lower case, no trailing dot) matches.
    pub fn matches(&self, qname: &str) -> bool {
        if self.wildcard {
            qname.len() > self.name.len()
                && qname.ends_with(self.name.as_str())
                && qname.as_bytes()[qname.len() - self.name.len() - 1] == b'.'
        } else {
            qname == self.name
        }
    }
}

impl Quantity for DomainPattern {
    fn parse(text: &str) -> Result<Self, String> {
        const HINT: &str = "give a name like db.svc.test or a wildcard like *.svc.test";
        let lower = text.to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower);
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower),
        };
        if name.is_empty() || name.len() > 253 {
            return Err(format!("a name of 1 to 253 characters is needed; {HINT}"));
        }
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(format!("every label is 1 to 63 characters; {HINT}"));
            }
            if label == "*" || label.contains('*') {
                return Err(format!(
                    "`*` is only allowed as the first label (`*.`); {HINT}"
                ));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                || label.starts_with('-')
                || label.ends_with('-')
            {
                return Err(format!(
                    "labels hold letters, digits, `-` (not at either end) and `_`; {HINT}"
                ));
            }
        }
        Ok(DomainPattern {
            name: name.to_string(),
            wildcard,
        })
    }
}

/// A DNS response code a fault answers with (`NXDOMAIN`, `SERVFAIL`, `REFUSED`, `FORMERR`,
/// `NOTIMP`; case-insensitive). The value is the wire code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsRcode(pub u16);

impl Quantity for DnsRcode {
    fn parse(text: &str) -> Result<Self, String> {
        match text.to_ascii_uppercase().as_str() {
            "FORMERR" => Ok(DnsRcode(1)),
            "SERVFAIL" => Ok(DnsRcode(2)),
            "NXDOMAIN" => Ok(DnsRcode(3)),
            "NOTIMP" => Ok(DnsRcode(4)),
            "REFUSED" => Ok(DnsRcode(5)),
            _ => Err("give NXDOMAIN, SERVFAIL, REFUSED, FORMERR or NOTIMP".into()),
        }
    }
}

/// A DNS query type by name (`A`, `AAAA`, `MX`, ...; case-insensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsType(pub hickory_proto::rr::RecordType);

impl Quantity for DnsType {
    fn parse(text: &str) -> Result<Self, String> {
        use hickory_proto::rr::RecordType;
        match text.to_ascii_uppercase().parse::<RecordType>() {
            Ok(RecordType::Unknown(_)) | Err(_) => {
                Err("give a query type such as A, AAAA, MX, TXT, SRV, CNAME or PTR".into())
            }
            Ok(t) => Ok(DnsType(t)),
        }
    }
}

/// An address a `dns.answer` fault answers with, or `random` (a random address of the
/// query's family each time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerAddr {
    Fixed(std::net::IpAddr),
    Random,
}

impl Quantity for AnswerAddr {
    fn parse(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("random") {
            return Ok(AnswerAddr::Random);
        }
        text.parse::<std::net::IpAddr>()
            .map(AnswerAddr::Fixed)
            .map_err(|_| {
                "expected an IPv4 or IPv6 address (10.9.9.9, 2001:db8::9) or `random`".into()
            })
    }
}

/// A port or an inclusive range of ports ("5432", "8000-8080"), 1-65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl Quantity for PortRange {
    fn parse(text: &str) -> Result<Self, String> {
        let port = |p: &str| p.trim().parse::<u16>().ok().filter(|&p| p > 0);
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (port(a), port(b)),
            None => (port(text), port(text)),
        };
        match (first, last) {
            (Some(first), Some(last)) if first <= last => Ok(PortRange { first, last }),
            _ => Err("expected a port 1-65535 or a range like 8000-8080".into()),
        }
    }
}

/// An errno by name (`EIO`, case-insensitive) or number (1-4095).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Quantity for Errno {
    fn parse(text: &str) -> Result<Self, String> {
        super::errno::parse_errno(text)
            .map(Errno)
            .map_err(|_| "give an errno name like ECONNREFUSED or EIO, or a number 1-4095".into())
    }
}

/// A signal by name (`SIGTERM`, `TERM`, `term`) or number (`15`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal(pub nix::sys::signal::Signal);

impl Quantity for Signal {
    fn parse(text: &str) -> Result<Self, String> {
        use nix::sys::signal::Signal as Nix;
        let unknown = || "use a name like SIGKILL, SIGTERM or TERM, or a number like 9".to_string();
        if let Ok(n) = text.parse::<i32>() {
            return Nix::try_from(n).map(Signal).map_err(|_| unknown());
        }
        let upper = text.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        name.parse::<Nix>().map(Signal).map_err(|_| unknown())
    }
}

/// A byte count above zero: "512MiB", "2GiB", "1073741824" (see [`parse_size`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl Quantity for ByteSize {
    fn parse(text: &str) -> Result<Self, String> {
        match parse_size(text) {
            Ok(0) => Err("it must be above zero (examples: 512MiB, 2GiB, 1073741824)".into()),
            Ok(n) => Ok(ByteSize(n)),
            Err(e) => Err(format!("{e} (examples: 512MiB, 2GiB, 1073741824)")),
        }
    }
}

/// A byte count, zero included: "32KiB", "0" (see [`parse_size`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteCount(pub u64);

impl Quantity for ByteCount {
    fn parse(text: &str) -> Result<Self, String> {
        parse_size(text)
            .map(ByteCount)
            .map_err(|e| format!("{e} (examples: 32KiB, 15000, 0)"))
    }
}

/// Bytes per second above zero: "100MiB/s" (the `/s` is optional).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRate(pub u64);

impl Quantity for ByteRate {
    fn parse(text: &str) -> Result<Self, String> {
        let per_second = text.strip_suffix("/s").unwrap_or(text);
        ByteSize::parse(per_second.trim()).map(|ByteSize(n)| ByteRate(n))
    }
}

/// A tc-style link rate, kept in bytes per second: `1mbit`, `500kbit`, `2gbit` (bits per
/// second, powers of 1000), `10mbps`, `100kbps` (bytes per second); a bare number is bits.
/// At least 8 kbit/s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkRate(pub u64);

impl LinkRate {
    /// Slowest rate accepted: 8 kbit/s; a 64 KiB TSO burst then takes a minute.
    pub const MIN_BYTES_PER_SEC: u64 = 1000;
}

impl Quantity for LinkRate {
    fn parse(text: &str) -> Result<Self, String> {
        let lower = text.to_ascii_lowercase();
        let (num, unit) = split_number(&lower).ok_or("it must start with a number (e.g. 1mbit)")?;
        let (scale, bytes) = match unit {
            "" | "bit" => (1.0, false),
            "kbit" => (1e3, false),
            "mbit" => (1e6, false),
            "gbit" => (1e9, false),
            "bps" => (1.0, true),
            "kbps" => (1e3, true),
            "mbps" => (1e6, true),
            "gbps" => (1e9, true),
            _ => {
                return Err(
                    "unknown unit; use bit, kbit, mbit, gbit (bits/s) or bps, kbps, \
                            mbps, gbps (bytes/s)"
                        .into(),
                );
            }
        };
        let bytes_per_sec = num * scale / if bytes { 1.0 } else { 8.0 };
        if !bytes_per_sec.is_finite() || bytes_per_sec < Self::MIN_BYTES_PER_SEC as f64 {
            return Err("it must be at least 8kbit (1kbps)".into());
        }
        Ok(LinkRate(bytes_per_sec.min(u64::MAX as f64 / 1e9) as u64))
    }
}

/// A duration as humantime writes it: "100ms", "1.5s", "2h30m".
impl Quantity for std::time::Duration {
    fn parse(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 100ms, 1.5s, 2m)"))
    }
}

/// A signed clock offset in nanoseconds: an optional sign, then a duration ("-2h30m",
/// "+90s", "45m"); not zero, at most a century either way (skewed time_t stays far from
/// overflow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockOffset(pub i64);

impl ClockOffset {
    pub const MAX: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);
}

impl Quantity for ClockOffset {
    fn parse(text: &str) -> Result<Self, String> {
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let magnitude = humantime::parse_duration(rest.trim())
            .map_err(|e| format!("{e} (examples: -2h30m, +90s, 45m)"))?;
        if magnitude.is_zero() {
            return Err("a zero offset skews nothing".into());
        }
        if magnitude > Self::MAX {
            return Err("it must be at most 100 years either way".into());
        }
        let ns = magnitude.as_nanos() as i64;
        Ok(ClockOffset(if negative { -ns } else { ns }))
    }
}

/// A clock drift in parts per million: "+500ppm" runs 500 µs fast per second, "-20ppm" slow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockDrift(pub f64);

impl ClockDrift {
    /// The drift either way a clock may get: from half speed to double speed.
    pub const MIN_PPM: f64 = -500_000.0;
    pub const MAX_PPM: f64 = 1_000_000.0;
}

impl Quantity for ClockDrift {
    fn parse(text: &str) -> Result<Self, String> {
        let number = text
            .strip_suffix("ppm")
            .ok_or("give it in ppm (examples: +500ppm, -20ppm)")?
            .trim();
        let ppm: f64 = number
            .strip_prefix('+')
            .unwrap_or(number)
            .parse()
            .map_err(|_| format!("{number:?} is not a number (examples: +500ppm, -20ppm)"))?;
        if ppm == 0.0 || !ppm.is_finite() {
            return Err("a zero drift changes nothing".into());
        }
        if !(Self::MIN_PPM..=Self::MAX_PPM).contains(&ppm) {
            return Err(
                "it must be from -500000ppm (half speed) to +1000000ppm (double speed)".into(),
            );
        }
        Ok(ClockDrift(ppm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: Quantity>(s: &str) -> Result<T, ValueError> {
        s.parse::<Written<T>>().map(|w| w.value)
    }

    #[test]
    fn values_keep_their_text_and_parse_once() {
        let w: Written<ByteSize> = " 256MiB ".parse().unwrap();
        assert_eq!((w.text(), w.get()), ("256MiB", ByteSize(256 << 20)));
        assert_eq!(serde_json::to_string(&w).unwrap(), "\"256MiB\"");
        let n: Written<Errno> = serde_json::from_str("5").unwrap();
        assert_eq!((n.text(), n.get()), ("5", Errno(libc::EIO)));
        let e = serde_json::from_str::<Written<Errno>>("\"EFOO\"").unwrap_err();
        assert!(e.to_string().contains("\"EFOO\" is not valid"), "{e}");
    }

    #[test]
    fn prefixes_ports_and_signals() {
        assert_eq!(
            parse::<Cidr>("10.1.2.3/8").unwrap().0.to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse::<Cidr>("::1").unwrap().0.to_string(), "::1/128");
        assert!(parse::<Cidr>("10.0.0.0/33").is_err());
        assert_eq!(
            parse::<PortRange>("8000-8080").unwrap(),
            PortRange {
                first: 8000,
                last: 8080
            }
        );
        for bad in ["0", "9-8", "70000", "a-b", ""] {
            assert!(parse::<PortRange>(bad).is_err(), "{bad:?}");
        }
        use nix::sys::signal::Signal as Nix;
        for (s, want) in [
            ("SIGTERM", Nix::SIGTERM),
            ("term", Nix::SIGTERM),
            ("9", Nix::SIGKILL),
        ] {
            assert_eq!(parse::<Signal>(s).unwrap(), Signal(want), "{s}");
        }
        assert!(parse::<Signal>("SIGFOO").is_err());
    }

    #[test]
    fn rates_sizes_and_offsets() {
        assert_eq!(parse::<LinkRate>("1mbit").unwrap(), LinkRate(125_000));
        assert_eq!(parse::<LinkRate>("10mbps").unwrap(), LinkRate(10_000_000));
        assert_eq!(parse::<LinkRate>("8000").unwrap(), LinkRate(1000));
        for bad in ["", "fast", "1kbit", "10furlongs"] {
            assert!(parse::<LinkRate>(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse::<ByteRate>("8MiB/s").unwrap(), ByteRate(8 << 20));
        assert!(parse::<ByteSize>("0").is_err());
        assert_eq!(
            parse::<ClockOffset>("-2h30m").unwrap(),
            ClockOffset(-9_000_000_000_000)
        );
        assert_eq!(
            parse::<ClockOffset>("+90s").unwrap(),
            ClockOffset(90_000_000_000)
        );
        for bad in ["", "-", "soon", "0s", "-0s", "200years", "--1s"] {
            assert!(parse::<ClockOffset>(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse::<ClockDrift>("+500ppm").unwrap(), ClockDrift(500.0));
        assert_eq!(parse::<ClockDrift>("-20.5 ppm").unwrap(), ClockDrift(-20.5));
        for bad in ["500", "0ppm", "-600000ppm", "fastppm", "+2000000ppm"] {
            assert!(parse::<ClockDrift>(bad).is_err(), "{bad:?}");
        }
    }
}
