//! The remote listener's transport: TCP with mutual TLS (rustls: this host's certificate, and
//! client certificates checked against `remote.client_ca` during the handshake, so a client
//! without one never reaches HTTP), or plain TCP on a loopback address, served only to local
//! users that may use the Unix socket (by the uid owning the client's socket). Handshakes run in
//! their own tasks, so one slow client holds up no other.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{extract::connect_info::Connected, serve::IncomingStream};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::config::RemoteTls;

/// A client that does not finish its handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the listener cannot start; each names the file or address at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("remote.{field} {}: {reason}", path.display())]
    File {
        field: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("remote TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("remote.client_ca: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("binding remote.listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

fn certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let file_error = |reason: String| TlsSetupError::File {
        field,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// The rustls configuration: this host's chain and key, client certificates required and
/// verified against the client CA.
pub fn server_config(tls: &RemoteTls) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs("cert", &tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| TlsSetupError::File {
        field: "key",
        path: tls.key.clone(),
        reason: e.to_string(),
    })?;
    let mut roots = RootCertStore::empty();
    for ca in certs("client_ca", &tls.client_ca)? {
        roots.add(ca).map_err(|e| TlsSetupError::File {
            field: "client_ca",
            path: tls.client_ca.clone(),
            reason: e.to_string(),
        })?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Who is on the other end of a remote connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemotePeer {
    pub addr: SocketAddr,
    /// The client certificate's subject (RFC 4514 order: `CN=..,O=..`); None over plain HTTP.
    pub subject: Option<String>,
    /// Over plain HTTP on loopback: the uid owning the client's socket.
    pub uid: Option<u32>,
}

impl RemotePeer {
    /// How the audit trail names it: `CN=chaos-mesh from 10.0.0.5:41234`.
    pub fn describe(&self) -> String {
        match (&self.subject, self.uid) {
            (Some(s), _) => format!("{s} from {}", self.addr),
            (None, Some(uid)) => format!("uid {uid} over plain HTTP from {}", self.addr),
            (None, None) => format!("plain HTTP from {}", self.addr),
        }
    }
}

/// Who may use a plain-HTTP (loopback) listener, by the uid owning the client's socket.
pub type PlainAccess = Arc<dyn Fn(u32) -> bool + Send + Sync>;

/// `/proc/net/tcp` spelling of an address: each 32-bit word of the address as the kernel
/// prints it (host order, hex), then the port.
fn proc_net_addr(a: SocketAddr) -> String {
    let words: Vec<String> = match a.ip() {
        std::net::IpAddr::V4(ip) => vec![format!("{:08X}", u32::from_le_bytes(ip.octets()))],
        std::net::IpAddr::V6(ip) => ip
            .octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
    };
    format!("{}:{:04X}", words.concat(), a.port())
}

/// The uid owning the loopback TCP socket at `peer` that is connected to `local` (this
/// listener's side), from `/proc/net/tcp` and `/proc/net/tcp6`: a loopback client is a
/// local process, so the same user check as the Unix socket applies to it.
pub fn loopback_peer_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (want_local, want_remote) = (proc_net_addr(peer), proc_net_addr(local));
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 7 && f[1] == want_local && f[2] == want_remote {
                return f[7].parse().ok();
            }
        }
    }
    None
}

/// A served connection: TLS, or plain TCP on loopback.
pub enum RemoteStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for RemoteStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RemoteStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            RemoteStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RemoteStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            RemoteStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            RemoteStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RemoteStream::Plain(s) => Pin::new(s).poll_flush(cx),
            RemoteStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RemoteStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            RemoteStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepted, handshaken connections for `axum::serve`.
pub struct RemoteListener {
    ready: mpsc::Receiver<(RemoteStream, RemotePeer)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl Drop for RemoteListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl RemoteListener {
    /// Binds `addr`; with `tls`, every connection must complete a mutual-TLS handshake first.
    pub async fn bind(
        addr: SocketAddr,
        tls: Option<Arc<ServerConfig>>,
        plain_access: PlainAccess,
    ) -> Result<RemoteListener, TlsSetupError> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| TlsSetupError::Bind { addr, source })?;
        let local = tcp
            .local_addr()
            .map_err(|source| TlsSetupError::Bind { addr, source })?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_forever(
            tcp,
            tls.map(TlsAcceptor::from),
            plain_access,
            tx,
        ));
        Ok(RemoteListener {
            ready,
            local,
            acceptor,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

async fn accept_forever(
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    plain_access: PlainAccess,
    ready: mpsc::Sender<(RemoteStream, RemotePeer)>,
) {
    loop {
        let (stream, addr) = match tcp.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!("remote listener: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = tls.clone() else {
            // Plain HTTP (loopback only): the client is a local process; serve it only if its
            // user may use the Unix socket.
            let uid = stream
                .local_addr()
                .ok()
                .and_then(|local| loopback_peer_uid(addr, local));
            if !uid.is_some_and(|u| plain_access(u)) {
                tracing::warn!(peer = %addr, uid = ?uid, "remote listener: refused a local client whose user may not use chaosd");
                continue;
            }
            let peer = RemotePeer {
                addr,
                subject: None,
                uid,
            };
            if ready
                .send((RemoteStream::Plain(stream), peer))
                .await
                .is_err()
            {
                return;
            }
            continue;
        };
        let ready = ready.clone();
        tokio::spawn(async move {
            let shaken = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await;
            let stream = match shaken {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(peer = %addr, "remote listener: refused a TLS client: {e}");
                    return;
                }
                Err(_) => {
                    tracing::warn!(peer = %addr, "remote listener: TLS handshake timed out");
                    return;
                }
            };
            let subject = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| subject_of(c).unwrap_or_else(|| "(unreadable subject)".into()));
            let peer = RemotePeer {
                addr,
                subject,
                uid: None,
            };
            let _ = ready
                .send((RemoteStream::Tls(Box::new(stream)), peer))
                .await;
        });
    }
}

impl axum::serve::Listener for RemoteListener {
    type Io = RemoteStream;
    type Addr = RemotePeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The acceptor is gone (aborted at shutdown): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(RemotePeer {
            addr: self.local,
            subject: None,
            uid: None,
        })
    }
}

impl Connected<IncomingStream<'_, RemoteListener>> for RemotePeer {
    fn connect_info(stream: IncomingStream<'_, RemoteListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// One DER element: tag, contents, and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |l, &b| (l << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Dotted OID text from its DER contents.
fn oid_text(bytes: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc = 0u64;
    for (i, &b) in bytes.iter().enumerate() {
        acc = (acc << 7) | (b & 0x7f) as u64;
        if b & 0x80 == 0 {
            if i == 0 || arcs.is_empty() {
                let (a, b) = if acc < 80 {
                    (acc / 40, acc % 40)
                } else {
                    (2, acc - 80)
                };
                arcs.extend([a, b]);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn attribute_name(oid: &str) -> String {
    match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        other => other,
    }
    .to_string()
}

/// RFC 4514 escaping of an attribute value.
fn escape(value: &str) -> String {
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, ' ' | '#'));
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The subject of a DER certificate as RFC 4514 text (`CN=chaos-mesh,O=example`), read with
/// a minimal DER walk: tbsCertificate's sixth field after the optional version.
pub fn subject_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert, _) = der(cert.as_ref())?;
    let (_, tbs, _) = der(cert)?;
    let mut rest = tbs;
    let (tag, _, after) = der(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    // serial, signature algorithm, issuer, validity; then the subject.
    for _ in 0..4 {
        rest = der(rest)?.2;
    }
    let (tag, mut rdns, _) = der(rest)?;
    if tag != 0x30 {
        return None;
    }
    let mut parts: Vec<String> = Vec::new();
    while !rdns.is_empty() {
        let (_, mut set, next) = der(rdns)?;
        rdns = next;
        let mut same: Vec<String> = Vec::new();
        while !set.is_empty() {
            let (_, atv, next) = der(set)?;
            set = next;
            let (_, oid, value) = der(atv)?;
            let (vtag, value, _) = der(value)?;
            let text = match vtag {
                // BMPString: UTF-16BE.
                0x1e => String::from_utf16_lossy(
                    &value
                        .chunks(2)
                        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                        .collect::<Vec<_>>(),
                ),
                _ => String::from_utf8_lossy(value).into_owned(),
            };
            same.push(format!(
                "{}={}",
                attribute_name(&oid_text(oid)),
                escape(&text)
            ));
        }
        parts.push(same.join("+"));
    }
    // RFC 4514 writes the last RDN first.
    parts.reverse();
    Some(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_read_as_rfc4514_text() {
        let mut params = rcgen::CertificateParams::new(vec!["client.test".into()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "NL");
        dn.push(rcgen::DnType::OrganizationName, "Example, Inc");
        dn.push(rcgen::DnType::CommonName, "chaos-mesh");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_of(cert.der()).as_deref(),
            Some("CN=chaos-mesh,O=Example\\, Inc,C=NL")
        );
        assert_eq!(
            subject_of(&CertificateDer::from(vec![0x30, 0x03, 1, 2])),
            None
        );
    }

    #[test]
    fn a_loopback_peer_s_uid_is_found_in_proc_net_tcp() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let uid = loopback_peer_uid(peer, server.local_addr().unwrap());
        assert_eq!(uid, Some(nix::unistd::getuid().as_raw()));
        drop(client);
        assert_eq!(
            proc_net_addr("127.0.0.1:8080".parse().unwrap()),
            "0100007F:1F90"
        );
    }

    #[test]
    fn missing_files_are_named() {
        let e = server_config(&RemoteTls {
            cert: "/nonexistent/server.crt".into(),
            key: "/nonexistent/server.key".into(),
            client_ca: "/nonexistent/ca.crt".into(),
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("remote.cert /nonexistent/server.crt"), "{e}");
    }
}
