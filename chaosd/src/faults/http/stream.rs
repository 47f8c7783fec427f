//! The HTTP layer of one proxied connection: between the connection's TCP toxics (the client
//! side) and the server. One half reads the client's requests (head with `httparse`, then the
//! body by its framing: Content-Length or chunked), applies the faults and forwards the
//! request or queues chaosd's own answer; the other half passes the server's responses back
//! (interim 1xx ones, then the final one and its body) in request order, so keep-alive and
//! pipelining work. Whatever is not HTTP/1.x (a TLS ClientHello, a server that speaks first,
//! a tunnel after CONNECT or an Upgrade) is passed through as bytes from there on.

use std::{io, sync::Arc, sync::atomic::Ordering, time::Duration};

use chaosd_common::net::PPM_ONE;
use httparse::Status;
use rand::Rng as _;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
    sync::mpsc,
};

use super::{Action, HttpFault};

/// Read size; also the buffer's reserve.
const READ_CHUNK: usize = 32 * 1024;
/// The largest request or response head chaosd parses; a longer one passes through unparsed.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
/// Requests read ahead of their responses (how deep a pipeline is followed before the client
/// side waits).
const QUEUE: usize = 32;
/// How long the first request's head may stay incomplete before the connection is taken for
/// another protocol and passed through (a client that waits for the server to speak).
const FIRST_HEAD_WAIT: Duration = Duration::from_secs(2);

/// Carries one connection through the HTTP layer: `client` is the toxics' side, `upstream`
/// the server. `on_reset` is called when an `http.abort --reset` ends the connection (the
/// proxy then resets the client's socket once what was written before has reached it).
pub(crate) async fn serve<C>(
    client: C,
    upstream: TcpStream,
    faults: Vec<Arc<HttpFault>>,
    on_reset: impl FnOnce(),
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (cr, cw) = tokio::io::split(client);
    let (ur, uw) = upstream.into_split();
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::join!(
        requests(Input::new(cr), uw, &faults, tx),
        responses(Input::new(ur), cw, rx, on_reset),
    );
}

/// What the response half sends the client for one request, in request order.
enum Slot {
    /// The server's response to a forwarded request. `head`: to a HEAD request (no body);
    /// `connect`: to a CONNECT; `tunnel`: after it the connection passes through unparsed.
    Upstream {
        head: bool,
        connect: bool,
        tunnel: bool,
    },
    /// chaosd's answer, whole; `close`: the connection ends after it.
    Answer { bytes: Vec<u8>, close: bool },
    /// No response: the connection ends (reset or closed).
    Abort { reset: bool },
    /// What follows is not HTTP: pass the server's bytes through.
    Raw,
}

/// A read half with what was read of it and not consumed yet.
struct Input<R> {
    r: R,
    buf: Vec<u8>,
    start: usize,
}

impl<R: AsyncRead + Unpin> Input<R> {
    fn new(r: R) -> Self {
        Input {
            r,
            buf: Vec::new(),
            start: 0,
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads more; `Ok(0)` at the end of the stream. Cancel-safe (`read_buf`), so it can wait
    /// in a `select!`.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_CHUNK);
        self.r.read_buf(&mut self.buf).await
    }

    /// Writes the first `n` buffered bytes to `out` and consumes them.
    async fn pass<W: AsyncWrite + Unpin>(&mut self, n: usize, out: &mut W) -> io::Result<()> {
        out.write_all(&self.data()[..n]).await?;
        self.consume(n);
        Ok(())
    }

    /// Passes what is buffered and then the rest of the stream to `out`.
    async fn pass_rest<W: AsyncWrite + Unpin>(&mut self, out: &mut W) -> io::Result<()> {
        let n = self.data().len();
        self.pass(n, out).await?;
        tokio::io::copy(&mut self.r, out).await.map(drop)
    }

    /// Passes exactly `n` bytes; false when the stream ended first.
    async fn pass_exact<W: AsyncWrite + Unpin>(
        &mut self,
        mut n: u64,
        out: &mut W,
    ) -> io::Result<bool> {
        while n > 0 {
            if self.data().is_empty() && self.fill().await? == 0 {
                return Ok(false);
            }
            let take = usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(self.data().len());
            self.pass(take, out).await?;
            n -= take as u64;
        }
        Ok(true)
    }

    /// Passes a message body framed as `body`; false when the stream ended inside it.
    async fn pass_body<W: AsyncWrite + Unpin>(
        &mut self,
        body: Body,
        out: &mut W,
    ) -> io::Result<bool> {
        match body {
            Body::Empty => Ok(true),
            Body::Length(n) => self.pass_exact(n, out).await,
            Body::UntilClose => self.pass_rest(out).await.map(|()| true),
            Body::Chunked => self.pass_chunked(out).await,
        }
    }

    /// A chunked body: size lines, data and CRLFs, the last chunk and the trailers, as sent.
    async fn pass_chunked<W: AsyncWrite + Unpin>(&mut self, out: &mut W) -> io::Result<bool> {
        loop {
            let (line, size) = loop {
                match httparse::parse_chunk_size(self.data()) {
                    Ok(Status::Complete(found)) => break found,
                    Ok(Status::Partial) if self.data().len() < MAX_HEAD => {
                        if self.fill().await? == 0 {
                            return Ok(false);
                        }
                    }
                    _ => return Err(invalid("a bad chunk size line")),
                }
            };
            self.pass(line, out).await?;
            if size == 0 {
                return self.pass_trailers(out).await;
            }
            if !self.pass_exact(size, out).await? {
                return Ok(false);
            }
            while self.data().len() < 2 {
                if self.fill().await? == 0 {
                    return Ok(false);
                }
            }
            if &self.data()[..2] != b"\r\n" {
                return Err(invalid("no CRLF after a chunk"));
            }
            self.pass(2, out).await?;
        }
    }

    /// The trailer fields after the last chunk and the blank line that ends them.
    async fn pass_trailers<W: AsyncWrite + Unpin>(&mut self, out: &mut W) -> io::Result<bool> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::parse_headers(self.data(), &mut fields) {
                Ok(Status::Complete((n, _))) => {
                    self.pass(n, out).await?;
                    return Ok(true);
                }
                Ok(Status::Partial) if self.data().len() < MAX_HEAD => {
                    if self.fill().await? == 0 {
                        return Ok(false);
                    }
                }
                _ => return Err(invalid("bad trailer fields")),
            }
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// How a message's body ends (RFC 9112 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    Empty,
    Length(u64),
    Chunked,
    /// A response without a length: its body ends when the server closes.
    UntilClose,
}

/// A request head, owned; `len` bytes of the input.
struct RequestHead {
    len: usize,
    method: String,
    target: String,
    /// HTTP/1.`minor`.
    minor: u8,
    /// Names in lower case.
    headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    fn parse(buf: &[u8]) -> Result<Option<RequestHead>, httparse::Error> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut fields);
        let Status::Complete(len) = req.parse(buf)? else {
            return Ok(None);
        };
        Ok(Some(RequestHead {
            len,
            method: req.method.unwrap_or_default().to_string(),
            target: req.path.unwrap_or_default().to_string(),
            minor: req.version.unwrap_or(1),
            headers: owned(req.headers),
        }))
    }

    fn header_tokens(&self, name: &str) -> Vec<String> {
        tokens(&self.headers, name)
    }

    /// The request's body framing; None when it cannot be told (a transfer coding other than
    /// chunked last, conflicting lengths): the connection then passes through.
    fn body(&self) -> Option<Body> {
        let codings = self.header_tokens("transfer-encoding");
        if let Some(last) = codings.last() {
            return (last == "chunked").then_some(Body::Chunked);
        }
        match content_length(&self.headers)? {
            Some(n) => Some(Body::Length(n)),
            None => Some(Body::Empty),
        }
    }

    /// Whether the connection ends after this request's response.
    fn closes(&self) -> bool {
        let conn = self.header_tokens("connection");
        conn.iter().any(|t| t == "close")
            || (self.minor == 0 && !conn.iter().any(|t| t == "keep-alive"))
    }

    /// CONNECT, or an Upgrade request: after its response the bytes are another protocol's.
    fn tunnels(&self) -> bool {
        self.method == "CONNECT"
            || self.headers.iter().any(|(n, _)| n == "upgrade")
                && self
                    .header_tokens("connection")
                    .iter()
                    .any(|t| t == "upgrade")
    }

    /// The path the faults' globs match: the target without query or fragment (for an
    /// absolute-form target, without scheme and authority).
    fn path(&self) -> &str {
        let t = self.target.as_str();
        let t = match t.find("://") {
            Some(at) if !t.starts_with('/') => {
                let rest = &t[at + 3..];
                rest.find('/').map_or("/", |p| &rest[p..])
            }
            _ => t,
        };
        t.split(['?', '#']).next().unwrap_or(t)
    }
}

/// A response head's length and what its body framing depends on.
struct ResponseHead {
    len: usize,
    code: u16,
    headers: Vec<(String, Vec<u8>)>,
}

impl ResponseHead {
    fn parse(buf: &[u8]) -> Result<Option<ResponseHead>, httparse::Error> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut fields);
        let Status::Complete(len) = resp.parse(buf)? else {
            return Ok(None);
        };
        Ok(Some(ResponseHead {
            len,
            code: resp.code.unwrap_or_default(),
            headers: owned(resp.headers),
        }))
    }

    /// RFC 9112 §6.3: no body after HEAD and for 1xx, 204, 304; then chunked, a length, or
    /// until the server closes.
    fn body(&self, to_head: bool) -> Body {
        if to_head || (100..200).contains(&self.code) || matches!(self.code, 204 | 304) {
            return Body::Empty;
        }
        let codings = tokens(&self.headers, "transfer-encoding");
        if let Some(last) = codings.last() {
            return if last == "chunked" {
                Body::Chunked
            } else {
                Body::UntilClose
            };
        }
        match content_length(&self.headers) {
            Some(Some(n)) => Body::Length(n),
            _ => Body::UntilClose,
        }
    }
}

fn owned(fields: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    fields
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect()
}

/// The comma-separated, lower-cased tokens of every `name` field.
fn tokens(headers: &[(String, Vec<u8>)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .to_ascii_lowercase()
                .split(',')
                .map(|t| t.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// The Content-Length: `Some(None)` without one, None when the values are bad or disagree.
fn content_length(headers: &[(String, Vec<u8>)]) -> Option<Option<u64>> {
    let mut found = None;
    for value in tokens(headers, "content-length") {
        let n: u64 = value.parse().ok()?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    Some(found)
}

/// What the faults make of one request.
struct Decision<'a> {
    delay: Duration,
    act: Option<&'a Action>,
}

/// Every live fault whose filters match counts the request as seen and rolls its dice; the
/// delays that hit add up; the first abort or answer that hits (oldest fault first) acts.
fn decide<'a>(faults: &'a [Arc<HttpFault>], req: &RequestHead) -> Decision<'a> {
    let mut decision = Decision {
        delay: Duration::ZERO,
        act: None,
    };
    let path = req.path();
    let mut rng = rand::rng();
    for f in faults {
        if !f.live() || !f.select.matches(&req.method, path, &req.headers) {
            continue;
        }
        f.seen.fetch_add(1, Ordering::Relaxed);
        let hit = f.select.ppm >= PPM_ONE || rng.random_range(0..PPM_ONE) < f.select.ppm;
        if !hit {
            continue;
        }
        match &f.action {
            Action::Delay { delay, jitter } => {
                f.affected.fetch_add(1, Ordering::Relaxed);
                let spread = jitter.as_nanos() as u64;
                let offset = Duration::from_nanos(rng.random_range(0..=2 * spread));
                decision.delay += (*delay + offset).saturating_sub(*jitter);
            }
            other if decision.act.is_none() => {
                f.affected.fetch_add(1, Ordering::Relaxed);
                decision.act = Some(other);
            }
            _ => {}
        }
    }
    decision
}

/// What the next request head read gave.
enum Next {
    Request(RequestHead),
    /// The client closed between requests.
    End,
    /// Not HTTP/1.x (or a head too long): what is buffered and what follows passes through.
    NotHttp,
}

async fn next_request<R: AsyncRead + Unpin>(input: &mut Input<R>, first: bool) -> Next {
    loop {
        if !input.data().is_empty() {
            match RequestHead::parse(input.data()) {
                Ok(Some(head)) => return Next::Request(head),
                Ok(None) if input.data().len() < MAX_HEAD => {}
                _ => return Next::NotHttp,
            }
        }
        let more = if first && !input.data().is_empty() {
            match tokio::time::timeout(FIRST_HEAD_WAIT, input.fill()).await {
                Ok(read) => read,
                Err(_) => return Next::NotHttp,
            }
        } else {
            input.fill().await
        };
        match more {
            Ok(0) if input.data().is_empty() => return Next::End,
            Ok(0) => return Next::NotHttp,
            Ok(_) => {}
            Err(_) => return Next::End,
        }
    }
}

/// The client's half: requests in, to the server or to the response half's queue.
async fn requests<R, W>(
    mut input: Input<R>,
    mut up: W,
    faults: &[Arc<HttpFault>],
    tx: mpsc::Sender<Slot>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut first = true;
    loop {
        let next = next_request(&mut input, first).await;
        first = false;
        let (head, body) = match next {
            Next::Request(head) => match head.body() {
                Some(body) => (head, body),
                None => break pass_through(&mut input, &mut up, &tx).await,
            },
            Next::End => break,
            Next::NotHttp => break pass_through(&mut input, &mut up, &tx).await,
        };
        let decision = decide(faults, &head);
        if !decision.delay.is_zero() {
            tokio::time::sleep(decision.delay).await;
        }
        match decision.act {
            None | Some(Action::Delay { .. }) => {
                let tunnel = head.tunnels();
                let slot = Slot::Upstream {
                    head: head.method == "HEAD",
                    connect: head.method == "CONNECT",
                    tunnel,
                };
                if tx.send(slot).await.is_err()
                    || input.pass(head.len, &mut up).await.is_err()
                    || !input.pass_body(body, &mut up).await.unwrap_or(false)
                {
                    return;
                }
                if tunnel {
                    let _ = input.pass_rest(&mut up).await;
                    break;
                }
            }
            Some(Action::Abort { reset }) => {
                let _ = tx.send(Slot::Abort { reset: *reset }).await;
                return;
            }
            Some(Action::Answer {
                head: answer,
                body: content,
            }) => {
                // The client may hold the body back for a 100 Continue that never comes:
                // the connection ends after the answer rather than guess where it ends.
                let waits = head
                    .header_tokens("expect")
                    .iter()
                    .any(|t| t == "100-continue")
                    && body != Body::Empty;
                let close = head.closes() || waits;
                let bytes = answer_bytes(answer, content, &head, close);
                if tx.send(Slot::Answer { bytes, close }).await.is_err() || close {
                    return;
                }
                input.consume(head.len);
                if !input
                    .pass_body(body, &mut tokio::io::sink())
                    .await
                    .unwrap_or(false)
                {
                    return;
                }
            }
        }
    }
    let _ = up.shutdown().await;
}

/// From here on the client's bytes are not HTTP: the response half is told, then they pass.
async fn pass_through<R, W>(input: &mut Input<R>, up: &mut W, tx: &mpsc::Sender<Slot>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if tx.send(Slot::Raw).await.is_ok() {
        let _ = input.pass_rest(up).await;
    }
}

/// chaosd's answer to `req`: the fault's head, the connection's fate, the body (none to HEAD).
fn answer_bytes(head: &str, body: &[u8], req: &RequestHead, close: bool) -> Vec<u8> {
    let mut out = head.as_bytes().to_vec();
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if req.minor == 0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if req.method != "HEAD" {
        out.extend_from_slice(body);
    }
    out
}

/// What passing one response gave.
enum Passed {
    Response,
    /// The connection passes through from here (a tunnel, or the server sent no HTTP).
    Raw,
    /// The server closed (or the client went away).
    End,
}

/// Passes the server's response to one request: interim 1xx responses, then the final one.
async fn pass_response<R, W>(
    input: &mut Input<R>,
    down: &mut W,
    head: bool,
    connect: bool,
) -> Passed
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let resp = loop {
            if !input.data().is_empty() {
                match ResponseHead::parse(input.data()) {
                    Ok(Some(resp)) => break resp,
                    Ok(None) if input.data().len() < MAX_HEAD => {}
                    _ => return Passed::Raw,
                }
            }
            match input.fill().await {
                Ok(0) if input.data().is_empty() => return Passed::End,
                Ok(0) => return Passed::Raw,
                Ok(_) => {}
                Err(_) => return Passed::End,
            }
        };
        if input.pass(resp.len, down).await.is_err() {
            return Passed::End;
        }
        if resp.code == 101 || (connect && (200..300).contains(&resp.code)) {
            return Passed::Raw;
        }
        if (100..200).contains(&resp.code) {
            continue;
        }
        return match input.pass_body(resp.body(head), down).await {
            Ok(true) => Passed::Response,
            _ => Passed::End,
        };
    }
}

/// The server's half: responses and chaosd's answers back to the client, in request order.
async fn responses<R, W>(
    mut input: Input<R>,
    mut down: W,
    mut rx: mpsc::Receiver<Slot>,
    on_reset: impl FnOnce(),
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut on_reset = Some(on_reset);
    loop {
        // While no request waits, the server may close an idle connection (passed on) or
        // speak first (not HTTP: passed through).
        let slot = if input.data().is_empty() {
            tokio::select! {
                biased;
                slot = rx.recv() => slot,
                read = input.fill() => match read {
                    Ok(n) if n > 0 => Some(Slot::Raw),
                    _ => break,
                },
            }
        } else {
            rx.recv().await
        };
        match slot {
            Some(Slot::Upstream {
                head,
                connect,
                tunnel,
            }) => match pass_response(&mut input, &mut down, head, connect).await {
                Passed::Response if !tunnel => {}
                Passed::Response | Passed::Raw => {
                    drop(rx);
                    let _ = input.pass_rest(&mut down).await;
                    break;
                }
                Passed::End => break,
            },
            Some(Slot::Answer { bytes, close }) => {
                if down.write_all(&bytes).await.is_err() || close {
                    break;
                }
            }
            Some(Slot::Abort { reset }) => {
                if reset && let Some(f) = on_reset.take() {
                    f();
                }
                break;
            }
            // The client's side ended (or is not HTTP): the rest passes (a late close, a
            // body until close).
            Some(Slot::Raw) | None => {
                drop(rx);
                let _ = input.pass_rest(&mut down).await;
                break;
            }
        }
    }
    let _ = down.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::http::{HttpFault, Select};
    use tokio::io::duplex;

    fn head(text: &str) -> RequestHead {
        RequestHead::parse(text.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn paths_leave_out_query_and_authority() {
        assert_eq!(head("GET /api/x?y=1 HTTP/1.1\r\n\r\n").path(), "/api/x");
        assert_eq!(head("GET http://h:8/a/b?c HTTP/1.1\r\n\r\n").path(), "/a/b");
        assert_eq!(head("GET http://h:8 HTTP/1.1\r\n\r\n").path(), "/");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let chunked = head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(chunked.body(), Some(Body::Chunked));
        let length = head("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(length.body(), Some(Body::Length(5)));
        let clash = head("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        assert_eq!(clash.body(), None);
        assert!(head("GET / HTTP/1.0\r\n\r\n").closes());
        assert!(!head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").closes());
        let resp = ResponseHead::parse(b"HTTP/1.1 200 OK\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(resp.body(false), Body::UntilClose);
        assert_eq!(resp.body(true), Body::Empty);
    }

    /// A fake server that answers each request it reads with its path, and a client that
    /// pipelines three requests (one chunked) through the layer under a status fault on one.
    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let (r, mut w) = conn.into_split();
            let mut input = Input::new(r);
            while let Next::Request(h) = next_request(&mut input, false).await {
                let body = h.body().unwrap();
                input.consume(h.len);
                let mut seen = Vec::new();
                assert!(input.pass_body(body, &mut seen).await.unwrap());
                let text = format!("{} {}", h.path(), seen.len());
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                    text.len()
                );
                w.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        let upstream = TcpStream::connect(addr).await.unwrap();
        let answer = Action::Answer {
            head: "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n".into(),
            body: b"down".to_vec(),
        };
        let select = Select {
            path: Some(
                "/api/*"
                    .parse::<crate::api::Written<crate::api::PathGlob>>()
                    .unwrap()
                    .value()
                    .clone(),
            ),
            ppm: PPM_ONE,
            ..Select::default()
        };
        let fault = Arc::new(HttpFault::new(select, answer));
        let (mut near, far) = duplex(64 * 1024);
        let layer = tokio::spawn(serve(far, upstream, vec![Arc::clone(&fault)], || {}));
        near.write_all(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /api/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
              POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nhi\r\n0\r\nT: 1\r\n\r\n",
        )
        .await
        .unwrap();
        near.shutdown().await.unwrap();
        let mut got = String::new();
        near.read_to_string(&mut got).await.unwrap();
        let bodies: Vec<&str> = got
            .split("\r\n\r\n")
            .skip(1)
            .map(|p| p.split("HTTP/1.1").next().unwrap())
            .collect();
        // The server counts the chunked body as sent: size lines, data, last chunk, trailer.
        assert_eq!(bodies, ["/a 0", "down", "/b 22"], "{got}");
        assert_eq!(fault.seen.load(Ordering::Relaxed), 1);
        assert_eq!(fault.affected.load(Ordering::Relaxed), 1);
        layer.await.unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_tls_client_hello_passes_through_untouched() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            conn.write_all(b"\x16\x03\x03reply").await.unwrap();
            got
        });
        let upstream = TcpStream::connect(addr).await.unwrap();
        let fault = Arc::new(HttpFault::new(
            Select {
                ppm: PPM_ONE,
                ..Select::default()
            },
            Action::Abort { reset: false },
        ));
        let (mut near, far) = duplex(64 * 1024);
        let layer = tokio::spawn(serve(far, upstream, vec![Arc::clone(&fault)], || {}));
        near.write_all(b"\x16\x03\x01\x00\x05hello").await.unwrap();
        near.shutdown().await.unwrap();
        let mut back = Vec::new();
        near.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"\x16\x03\x03reply");
        assert_eq!(server.await.unwrap(), b"\x16\x03\x01\x00\x05hello");
        assert_eq!(fault.seen.load(Ordering::Relaxed), 0);
        layer.await.unwrap();
    }
}
