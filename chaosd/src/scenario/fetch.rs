//! The probes' HTTP client: one `GET` on a fresh connection, plain or over TLS (rustls, with
//! the system's trust store or a CA file), through hyper. A fresh connection per check is the
//! point: a probe measures what a new client of the service sees.

use std::{path::Path, sync::Arc};

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

/// Response bytes read at most; probes check a status or one query result, not a download.
const MAX_RESPONSE: usize = 1 << 20;

/// An `http://` or `https://` URL taken apart once, when the scenario is validated.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HttpUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses `http://HOST[:PORT][/PATH]` or `https://..`; the error says what is wrong.
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(format!(
                "{url:?} is not an HTTP URL: write http://HOST:PORT/PATH or https://HOST/PATH"
            ));
        };
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 literal without a port: `[::1]`.
            Some((h, p)) if !p.contains(']') => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("{url:?}: port {p:?} is not a number 1-65535"))?;
                (h, port)
            }
            _ => (authority, if https { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("{url:?}: the URL has no host"));
        }
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(HttpUrl {
            https,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// `HOST:PORT` to connect to.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// TLS settings of a client: whom to trust.
#[derive(Clone)]
pub struct Tls(Arc<rustls::ClientConfig>);

impl Tls {
    /// Trusts the certificates of `ca_file` (PEM) or, without one, the system's trust store.
    pub fn new(ca_file: Option<&Path>) -> Result<Tls, String> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("reading ca_file {}: {e}", path.display()))?;
                if certs.is_empty() {
                    return Err(format!(
                        "ca_file {} holds no PEM certificate",
                        path.display()
                    ));
                }
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(
                        "the system's trust store has no certificate (install ca-certificates, or give ca_file)".into(),
                    );
                }
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Tls(Arc::new(config)))
    }
}

/// A response: status and body.
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

/// `GET url` on a fresh connection, with extra headers; `tls` is needed for `https`.
pub async fn get(
    url: &HttpUrl,
    headers: &[(&str, String)],
    tls: Option<&Tls>,
) -> Result<Response, String> {
    let authority = url.authority();
    let tcp = TcpStream::connect(&authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    if !url.https {
        return exchange(tcp, url, headers).await;
    }
    let tls = tls.ok_or("https needs TLS settings")?;
    let name = ServerName::try_from(url.host.trim_start_matches('[').trim_end_matches(']'))
        .map_err(|e| format!("{}: not a TLS server name: {e}", url.host))?
        .to_owned();
    let stream = tokio_rustls::TlsConnector::from(tls.0.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {authority}: {e}"))?;
    exchange(stream, url, headers).await
}

async fn exchange<S>(
    stream: S,
    url: &HttpUrl,
    headers: &[(&str, String)],
) -> Result<Response, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let mut req = Request::get(url.path.as_str())
        .header("host", url.authority())
        .header("user-agent", "chaosd-probe");
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("sending the request: {e}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| format!("reading the response: {e}"))?
            .to_bytes();
        Ok(Response { status, body })
    }
    .await;
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = HttpUrl::parse("http://127.0.0.1:9090/api?x=1").unwrap();
        assert_eq!(
            (u.https, u.port, u.path.as_str()),
            (false, 9090, "/api?x=1")
        );
        let u = HttpUrl::parse("https://example.invalid").unwrap();
        assert_eq!((u.https, u.port, u.path.as_str()), (true, 443, "/"));
        let u = HttpUrl::parse("http://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", 80));
        assert!(
            HttpUrl::parse("ftp://x")
                .unwrap_err()
                .contains("not an HTTP URL")
        );
        assert!(
            HttpUrl::parse("http://:80/")
                .unwrap_err()
                .contains("no host")
        );
        assert!(HttpUrl::parse("http://h:0/").unwrap_err().contains("port"));
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let e = Tls::new(Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .unwrap();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
