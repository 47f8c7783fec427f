//! Wire types of the HTTP kinds (`http.*`): plaintext HTTP/1.1 requests on a target's TCP
//! connections, which the transparent proxy (`tcp.*`) carries, are aborted, answered with a
//! status or delayed. TLS passes through with only the TCP toxics.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{NetFilter, Written, units::Quantity};

/// Which requests an HTTP fault takes; every kind has these fields.
pub trait HttpSelect {
    /// Request methods; none means every method.
    fn methods(&self) -> &[Written<HttpMethod>];
    /// Path glob (query string left out); none means every path.
    fn path(&self) -> Option<&Written<PathGlob>>;
    /// Request headers that must all be present (and match).
    fn request_headers(&self) -> &[Written<HeaderMatch>];
    /// Share of matching requests affected (rolled per request).
    fn percent(&self) -> f64;
    /// Which connections: `dst` and `port` (as the `tcp.*` kinds).
    fn filter(&self) -> &NetFilter;
}

macro_rules! select {
    ($t:ty) => {
        impl HttpSelect for $t {
            fn methods(&self) -> &[Written<HttpMethod>] {
                &self.methods
            }
            fn path(&self) -> Option<&Written<PathGlob>> {
                self.path.as_ref()
            }
            fn request_headers(&self) -> &[Written<HeaderMatch>] {
                &self.request_headers
            }
            fn percent(&self) -> f64 {
                self.percent
            }
            fn filter(&self) -> &NetFilter {
                &self.filter
            }
        }
    };
}

/// `http.abort`: matching requests get no response; the connection is closed (FIN), or reset
/// (RST) with `reset`. Responses to requests before it on the connection are delivered first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpAbortParams {
    #[serde(default)]
    pub reset: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Written<HttpMethod>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Written<PathGlob>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers: Vec<Written<HeaderMatch>>,
    #[serde(default = "hundred")]
    pub percent: f64,
    #[serde(default)]
    pub filter: NetFilter,
}

/// `http.status`: matching requests are answered by chaosd with `status`, `headers` and
/// `body`; the server never sees them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpStatusParams {
    pub status: Written<HttpStatus>,
    /// Response headers, `Name: value`; `content-length` is set from the body.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Written<HeaderLine>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Written<HttpMethod>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Written<PathGlob>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers: Vec<Written<HeaderMatch>>,
    #[serde(default = "hundred")]
    pub percent: f64,
    #[serde(default)]
    pub filter: NetFilter,
}

/// `http.delay`: matching requests reach the server `delay` ± `jitter` late (later requests
/// on the connection wait behind them, as HTTP/1.1 answers in order).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpDelayParams {
    pub delay: Written<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Written<Duration>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Written<HttpMethod>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Written<PathGlob>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers: Vec<Written<HeaderMatch>>,
    #[serde(default = "hundred")]
    pub percent: f64,
    #[serde(default)]
    pub filter: NetFilter,
}

select!(HttpAbortParams);
select!(HttpStatusParams);
select!(HttpDelayParams);

fn hundred() -> f64 {
    100.0
}

/// Whether `b` may appear in an HTTP token (method, header name; RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A request method (`GET`, `POST`, ...), upper-cased; compared exactly with the request's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpMethod(pub String);

impl Quantity for HttpMethod {
    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || !text.bytes().all(is_tchar) {
            return Err("give a method such as GET, POST or DELETE".into());
        }
        Ok(HttpMethod(text.to_ascii_uppercase()))
    }
}

/// A glob over a request path (`/api/*`): `*` is any run of characters, `/` included (so
/// `/api/*` takes everything below `/api/`), `?` one character, `[abc]`, `[a-z]` and `[!a]`
/// classes. The query string is not part of the path it is matched with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathGlob(pub String);

impl PathGlob {
    pub fn matches(&self, path: &str) -> bool {
        glob_match(self.0.as_bytes(), path.as_bytes())
    }
}

impl Quantity for PathGlob {
    fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') && !text.starts_with('*') {
            return Err("a path glob starts with `/` (or `*`), e.g. '/api/*'".into());
        }
        check_glob(text)?;
        Ok(PathGlob(text.to_string()))
    }
}

/// Whether a glob is well formed: every `[` class closed and not empty.
fn check_glob(text: &str) -> Result<(), String> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' {
            let Some(end) = class_end(b, i) else {
                return Err(format!(
                    "the `[` at {} opens a class that is never closed (or is empty); \
                     write a class like [a-z], or `[[]` for a literal `[`",
                    i + 1
                ));
            };
            i = end;
        }
        i += 1;
    }
    Ok(())
}

/// The index of the `]` closing the class opened at `open`, which holds at least one character.
fn class_end(p: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if p.get(i) == Some(&b'!') {
        i += 1;
    }
    // A `]` right after the opening is a member, not the end.
    if p.get(i) == Some(&b']') {
        i += 1;
    }
    while i < p.len() {
        if p[i] == b']' {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Whether the class `p[open..=end]` holds `c`.
fn class_holds(p: &[u8], open: usize, end: usize, c: u8) -> bool {
    let mut i = open + 1;
    let negated = p[i] == b'!';
    if negated {
        i += 1;
    }
    let mut held = false;
    while i < end {
        if i + 2 < end && p[i + 1] == b'-' {
            held |= (p[i]..=p[i + 2]).contains(&c);
            i += 3;
        } else {
            held |= p[i] == c;
            i += 1;
        }
    }
    held != negated
}

/// Glob matching with backtracking on the last `*` (linear for patterns without classes).
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                while p.get(pi) == Some(&b'*') {
                    pi += 1;
                }
                star = Some((pi, si));
                continue;
            }
            Some(b'?') => Some(pi + 1),
            Some(b'[') => class_end(p, pi)
                .filter(|end| class_holds(p, pi, *end, s[si]))
                .map(|end| end + 1),
            Some(c) if *c == s[si] => Some(pi + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                si += 1;
            }
            (None, Some((sp, ss))) => {
                pi = sp;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// A request header a fault requires: `Name: value-glob` (name case-insensitive, the value a
/// glob as for paths, compared with the value trimmed) or `Name` alone (present, any value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Lower case.
    pub name: String,
    pub value: Option<PathGlob>,
}

impl HeaderMatch {
    /// Whether the request's headers (lower-case names) hold a matching one.
    pub fn matches<'a>(&self, headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> bool {
        headers.into_iter().any(|(name, value)| {
            name == self.name
                && self.value.as_ref().is_none_or(|glob| {
                    std::str::from_utf8(value).is_ok_and(|v| glob.matches(v.trim()))
                })
        })
    }
}

impl Quantity for HeaderMatch {
    fn parse(text: &str) -> Result<Self, String> {
        const HINT: &str = "write 'Name: value' (the value may be a glob) or 'Name' alone";
        let (name, value) = match text.split_once(':') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (text.trim(), None),
        };
        check_header_name(name, HINT)?;
        let value = match value {
            Some(v) => {
                check_header_value(v, HINT)?;
                check_glob(v)?;
                Some(PathGlob(v.to_string()))
            }
            None => None,
        };
        Ok(HeaderMatch {
            name: name.to_ascii_lowercase(),
            value,
        })
    }
}

fn check_header_name(name: &str, hint: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("the header name is empty; {hint}"));
    }
    if !name.bytes().all(is_tchar) {
        return Err(format!(
            "header name {name:?} holds a character a header name cannot (spaces, `:`, quotes, ...); {hint}"
        ));
    }
    Ok(())
}

fn check_header_value(value: &str, hint: &str) -> Result<(), String> {
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!(
            "a header value cannot hold control characters (CR, LF, ...); {hint}"
        ));
    }
    Ok(())
}

/// A response header `http.status` sends: `Name: value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderLine {
    pub name: String,
    pub value: String,
}

impl Quantity for HeaderLine {
    fn parse(text: &str) -> Result<Self, String> {
        const HINT: &str = "write a header as 'Name: value', e.g. 'Retry-After: 5'";
        let Some((name, value)) = text.split_once(':') else {
            return Err(format!("no `:` between name and value; {HINT}"));
        };
        let (name, value) = (name.trim(), value.trim());
        check_header_name(name, HINT)?;
        check_header_value(value, HINT)?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" | "transfer-encoding" => {
                Err(format!("{name} is set by chaosd from --body; leave it out"))
            }
            "connection" => Err(
                "connection is set by chaosd (keep-alive as the client asked); leave it out".into(),
            ),
            _ => Ok(HeaderLine {
                name: name.to_string(),
                value: value.to_string(),
            }),
        }
    }
}

/// The status code `http.status` answers with: a final code, 200 to 599.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpStatus(pub u16);

impl HttpStatus {
    /// Whether a response with this code carries no body (RFC 9110: 204 and 304).
    pub fn bodiless(self) -> bool {
        matches!(self.0, 204 | 304)
    }
}

impl Quantity for HttpStatus {
    fn parse(text: &str) -> Result<Self, String> {
        match text.parse::<u16>() {
            Ok(code @ 200..=599) => Ok(HttpStatus(code)),
            Ok(_) => Err("a status code from 200 to 599 is needed, e.g. 503".into()),
            Err(_) => Err("give a numeric status code such as 503".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> PathGlob {
        PathGlob::parse(p).unwrap()
    }

    #[test]
    fn path_globs_match_as_documented() {
        assert!(glob("/api/*").matches("/api/x"));
        assert!(glob("/api/*").matches("/api/v1/users"));
        assert!(glob("/api/*").matches("/api/"));
        assert!(!glob("/api/*").matches("/api"));
        assert!(!glob("/api/*").matches("/other"));
        assert!(glob("/a?c").matches("/abc"));
        assert!(!glob("/a?c").matches("/ac"));
        assert!(glob("/v[0-9]/*").matches("/v2/x"));
        assert!(!glob("/v[0-9]/*").matches("/vx/x"));
        assert!(glob("/v[!0-9]").matches("/vx"));
        assert!(glob("/[]]").matches("/]"));
        assert!(glob("*.png").matches("/img/a.png"));
        assert!(glob("/*/b/*").matches("/a/x/b/c"));
        assert!(glob("/exact").matches("/exact") && !glob("/exact").matches("/exactly"));
    }

    #[test]
    fn bad_globs_headers_and_codes_are_refused_with_the_reason() {
        assert!(
            PathGlob::parse("/api/[a-")
                .unwrap_err()
                .contains("never closed")
        );
        assert!(
            PathGlob::parse("api")
                .unwrap_err()
                .contains("starts with `/`")
        );
        assert!(HttpStatus::parse("99").unwrap_err().contains("200 to 599"));
        assert!(HttpStatus::parse("600").unwrap_err().contains("200 to 599"));
        assert!(HttpStatus::parse("abc").unwrap_err().contains("numeric"));
        assert!(
            HeaderLine::parse("Retry-After 5")
                .unwrap_err()
                .contains("`:`")
        );
        assert!(
            HeaderLine::parse("Bad Name: x")
                .unwrap_err()
                .contains("cannot")
        );
        assert!(
            HeaderLine::parse("Content-Length: 3")
                .unwrap_err()
                .contains("--body")
        );
        assert!(HeaderMatch::parse(": x").unwrap_err().contains("empty"));
        assert!(HttpMethod::parse("GE T").is_err());
        assert_eq!(HttpMethod::parse("get").unwrap().0, "GET");
    }

    #[test]
    fn header_matches_by_name_and_value_glob() {
        let m = HeaderMatch::parse("X-Canary: yes*").unwrap();
        let hit: [(&str, &[u8]); 1] = [("x-canary", b" yes-please")];
        let miss: [(&str, &[u8]); 1] = [("x-canary", b"no")];
        assert!(m.matches(hit) && !m.matches(miss));
        let present = HeaderMatch::parse("X-Debug").unwrap();
        let any: [(&str, &[u8]); 1] = [("x-debug", b"")];
        assert!(present.matches(any));
    }
}
