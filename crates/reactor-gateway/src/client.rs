//! The gateway's HTTP/1.1 client, for the providers `reactor.toml` declares.
//!
//! A request is written, and its answer read, from the task that serves the caller: a
//! kept-alive connection is taken from a pool per origin, used in place, and put back when
//! the answer's body has been read to its end. A general client (reqwest over hyper) drives
//! each connection from a task of its own and hands the request, the answer and the body
//! between tasks through channels; on two cores every hand-over is a wake-up, and those were
//! most of what forwarding one answer cost (bench/README.md, gateway). The gateway only ever
//! POSTs a JSON body to a URL fixed when the manifest is loaded, so the client stays small:
//! no redirects, no HTTP/2, no compression. It goes through the HTTP proxy the environment
//! names (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), as curl and reqwest do.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// Opening a connection (TCP and TLS) that takes longer fails the attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle connection older than this is closed rather than reused: providers close theirs
/// after a minute or so, and a request sent on a socket being closed is a failed attempt.
const IDLE_FOR: Duration = Duration::from_secs(50);
/// Idle connections kept per origin; more than this are closed when their answer ends.
const IDLE_PER_ORIGIN: usize = 256;
/// An answer's head (status line and headers) larger than this is refused.
const MAX_HEAD: usize = 64 * 1024;
/// How much is read from a socket at a time.
const READ_SIZE: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect ({0})")]
    Connect(io::Error),
    #[error("did not connect in time")]
    ConnectTimeout,
    #[error("TLS failed ({0})")]
    Tls(io::Error),
    #[error("the connection failed ({0})")]
    Io(#[from] io::Error),
    #[error("the connection closed before the answer ended")]
    Closed,
    #[error("a broken answer ({0})")]
    Protocol(String),
    #[error("the proxy refused the tunnel ({0})")]
    Proxy(String),
    #[error("{0}; the request is not sent without the proxy")]
    ProxySetting(String),
    /// A header that would break the request's framing (a line break in it); the request is
    /// not sent.
    #[error("the header `{0}` holds a line break")]
    LineBreak(String),
}

/// One endpoint of one provider, parsed once, when the manifest is loaded.
#[derive(Debug, Clone)]
pub struct Address {
    origin: Origin,
    /// The `Host` header: the URL's host and port as written.
    authority: String,
    /// Path and query, as the request line says them.
    path: String,
}

impl Address {
    pub fn parse(url: &str) -> Result<Address, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("the URL must start with http:// or https://".into()),
        };
        let authority = uri.authority().ok_or("the URL has no host")?;
        if authority.as_str().contains('@') {
            return Err("a URL with credentials in it: name the key's secret instead".into());
        }
        Ok(Address {
            origin: Origin {
                tls,
                host: bare(authority.host()).into(),
                port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            },
            authority: authority.as_str().into(),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).into(),
        })
    }
}

/// The HTTP proxies between the gateway and the providers.
///
/// A proxy setting that cannot be used is kept as its reason: the requests it would carry
/// fail with it, and are never sent around the proxy instead.
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    /// For http:// upstreams: requests go to it with the whole URL.
    http: Option<Result<Proxy, String>>,
    /// For https:// upstreams: a `CONNECT` tunnel through it, TLS inside.
    https: Option<Result<Proxy, String>>,
    /// Hosts reached directly: names, domains (`example.com` covers its subdomains), `*`.
    direct: Vec<String>,
}

#[derive(Debug, Clone)]
struct Proxy {
    host: String,
    port: u16,
    /// `Basic …`, when the proxy's URL carries a user.
    authorization: Option<String>,
}

impl Proxies {
    /// As curl reads them: `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY`, the lower-case form
    /// first.
    pub fn from_env() -> Proxies {
        let var = |name: &str| {
            std::env::var(name.to_ascii_lowercase())
                .or_else(|_| std::env::var(name))
                .ok()
                .filter(|v| !v.trim().is_empty())
        };
        Proxies::new(
            var("HTTP_PROXY").as_deref(),
            var("HTTPS_PROXY").as_deref(),
            var("NO_PROXY").as_deref(),
        )
    }

    pub fn new(http: Option<&str>, https: Option<&str>, no_proxy: Option<&str>) -> Proxies {
        let parse =
            |variable: &str, url: &str| Proxy::parse(url).map_err(|e| format!("{variable}: {e}"));
        Proxies {
            http: http.map(|url| parse("HTTP_PROXY", url)),
            https: https.map(|url| parse("HTTPS_PROXY", url)),
            direct: no_proxy
                .unwrap_or_default()
                .split(',')
                .map(|d| d.trim().trim_start_matches('.').to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .collect(),
        }
    }

    /// Why a proxy setting cannot be used, for each that cannot (to say once, at start).
    pub fn unusable(&self) -> impl Iterator<Item = &str> {
        [&self.http, &self.https]
            .into_iter()
            .filter_map(|p| p.as_ref()?.as_ref().err().map(String::as_str))
    }

    /// The proxy to reach `origin` through: none, or one that cannot be used (an error).
    fn for_origin(&self, origin: &Origin) -> Result<Option<&Proxy>, ClientError> {
        let setting = if origin.tls { &self.https } else { &self.http };
        let Some(setting) = setting else {
            return Ok(None);
        };
        let host = origin.host.to_ascii_lowercase();
        let direct = self.direct.iter().any(|d| {
            d == "*"
                || host == *d
                || host
                    .strip_suffix(d.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        });
        match setting {
            _ if direct => Ok(None),
            Ok(proxy) => Ok(Some(proxy)),
            Err(e) => Err(ClientError::ProxySetting(e.clone())),
        }
    }
}

impl Proxy {
    /// `http://[user:password@]host[:port]`, or `host:port`. Errors never repeat the URL,
    /// which may hold a password.
    fn parse(url: &str) -> Result<Proxy, String> {
        let url = url.trim();
        let url = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| "the proxy is not a URL (http://host:port)".to_string())?;
        if uri.scheme_str() != Some("http") {
            return Err("the proxy must be an http:// URL".into());
        }
        let authority = uri
            .authority()
            .ok_or_else(|| "the proxy URL has no host".to_string())?;
        let authorization = authority.as_str().rsplit_once('@').map(|(user, _)| {
            use base64::Engine;
            let user = percent_decoded(user);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(user)
            )
        });
        Ok(Proxy {
            host: bare(authority.host()).into(),
            port: authority.port_u16().unwrap_or(80),
            authorization,
        })
    }
}

/// `user:p%40ss` as the bytes it stands for.
fn percent_decoded(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// A URL's host without the brackets of an IPv6 address.
fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    tls: bool,
    host: String,
    port: u16,
}

/// An upstream's answer: its status and headers read, its body still on the wire.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: AnswerBody,
}

#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

struct Shared {
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
    tls: tokio_rustls::TlsConnector,
    proxies: Proxies,
    user_agent: &'static str,
}

struct Idle {
    stream: Conn,
    since: Instant,
}

impl Client {
    /// A client trusting the Mozilla root certificates, and those of `extra_roots` (PEM)
    /// when given: a company's own CA in front of a self-hosted model.
    pub fn new(
        user_agent: &'static str,
        extra_roots: Option<&[u8]>,
        proxies: Proxies,
    ) -> Result<Client, String> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(pem) = extra_roots {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("not a PEM file of certificates: {e}"))?;
            // A system bundle may hold a certificate rustls cannot use; the rest still count.
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err("no CA certificate in it (a PEM file is expected)".into());
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            shared: Arc::new(Shared {
                idle: Mutex::default(),
                tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
                proxies,
                user_agent,
            }),
        })
    }

    /// `POST`s `body` (JSON) to `to` with `headers`, and reads the answer's head.
    pub async fn post(
        &self,
        to: &Address,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, ClientError> {
        // Headers are written as they are: a line break would end one and start another.
        let breaks = |t: &str| t.bytes().any(|b| b == b'\r' || b == b'\n');
        if let Some((name, _)) = headers.iter().find(|(n, v)| breaks(n) || breaks(v)) {
            return Err(ClientError::LineBreak(name.to_string()));
        }
        let message = self.message(to, headers, body);
        // A kept-alive connection may have been closed by the upstream since it was last
        // used; when it answers nothing at all, the request goes once more on a new one.
        if let Some(conn) = self.checkout(&to.origin) {
            match self.exchange(conn, &to.origin, &message).await {
                Ok(answer) => return Ok(answer),
                Err(Exchange::Unanswered(_)) => {}
                Err(Exchange::Failed(e)) => return Err(e),
            }
        }
        let conn = self.connect(&to.origin).await?;
        match self.exchange(conn, &to.origin, &message).await {
            Ok(answer) => Ok(answer),
            Err(Exchange::Unanswered(e) | Exchange::Failed(e)) => Err(e),
        }
    }

    /// The request line, the headers and the body, in one buffer: one write.
    fn message(&self, to: &Address, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(256 + body.len());
        let mut line = |parts: &[&str]| {
            for part in parts {
                m.extend_from_slice(part.as_bytes());
            }
            m.extend_from_slice(b"\r\n");
        };
        // Through a proxy, a plain-HTTP request names the whole URL (and the proxy's user).
        match self.shared.proxies.for_origin(&to.origin) {
            Ok(Some(proxy)) if !to.origin.tls => {
                line(&["POST http://", &to.authority, &to.path, " HTTP/1.1"]);
                if let Some(authorization) = &proxy.authorization {
                    line(&["proxy-authorization: ", authorization]);
                }
            }
            _ => line(&["POST ", &to.path, " HTTP/1.1"]),
        }
        line(&["host: ", &to.authority]);
        line(&["user-agent: ", self.shared.user_agent]);
        line(&["content-type: application/json"]);
        line(&["accept: */*"]);
        line(&["content-length: ", &body.len().to_string()]);
        for (name, value) in headers {
            line(&[name, ": ", value]);
        }
        line(&[]);
        m.extend_from_slice(body);
        m
    }

    fn checkout(&self, origin: &Origin) -> Option<Conn> {
        let mut idle = self.shared.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(origin)?;
        while let Some(Idle { stream, since }) = list.pop() {
            if since.elapsed() < IDLE_FOR && stream.still_open() {
                return Some(stream);
            }
        }
        None
    }

    async fn connect(&self, origin: &Origin) -> Result<Conn, ClientError> {
        let proxy = self.shared.proxies.for_origin(origin)?;
        let open = async {
            let (host, port) = match proxy {
                Some(p) => (p.host.as_str(), p.port),
                None => (origin.host.as_str(), origin.port),
            };
            let mut tcp = TcpStream::connect((host, port))
                .await
                .map_err(ClientError::Connect)?;
            tcp.set_nodelay(true).map_err(ClientError::Connect)?;
            if !origin.tls {
                return Ok(Conn::Plain(tcp));
            }
            if let Some(proxy) = proxy {
                tunnel(&mut tcp, origin, proxy).await?;
            }
            let name = rustls::pki_types::ServerName::try_from(origin.host.clone())
                .map_err(|e| ClientError::Tls(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
            let tls = self
                .shared
                .tls
                .connect(name, tcp)
                .await
                .map_err(ClientError::Tls)?;
            Ok(Conn::Tls(Box::new(tls)))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .map_err(|_| ClientError::ConnectTimeout)?
    }

    /// Writes `message` on `conn` and reads the answer's head.
    async fn exchange(
        &self,
        mut conn: Conn,
        origin: &Origin,
        message: &[u8],
    ) -> Result<Answer, Exchange> {
        if let Err(e) = write(&mut conn, message).await {
            return Err(Exchange::Unanswered(e.into()));
        }
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let mut answered = false;
        loop {
            match parse_head(&buf) {
                Ok(Some(head)) => {
                    buf.advance(head.length);
                    // An interim answer (100 Continue, 103 Early Hints) precedes the real one.
                    if head.status.is_informational() {
                        continue;
                    }
                    let mut body = AnswerBody {
                        conn: Some(conn),
                        buf,
                        framing: head.framing,
                        pool: head
                            .keep_alive
                            .then(|| (self.shared.clone(), origin.clone())),
                    };
                    body.release_if_done();
                    return Ok(Answer {
                        status: head.status,
                        headers: head.headers,
                        body,
                    });
                }
                Ok(None) if buf.len() > MAX_HEAD => {
                    return Err(Exchange::Failed(ClientError::Protocol(
                        "its head is too large".into(),
                    )));
                }
                Ok(None) => {}
                Err(e) => return Err(Exchange::Failed(e)),
            }
            if buf.capacity() - buf.len() < READ_SIZE / 4 {
                buf.reserve(READ_SIZE);
            }
            match conn.read_buf(&mut buf).await {
                Ok(0) if !answered => return Err(Exchange::Unanswered(ClientError::Closed)),
                Ok(0) => return Err(Exchange::Failed(ClientError::Closed)),
                Ok(_) => answered = true,
                Err(e) if !answered => return Err(Exchange::Unanswered(e.into())),
                Err(e) => return Err(Exchange::Failed(e.into())),
            }
        }
    }
}

enum Exchange {
    /// Nothing came back: the request may go again on another connection.
    Unanswered(ClientError),
    Failed(ClientError),
}

/// Asks `proxy`, on `tcp`, for a tunnel to `origin`.
async fn tunnel(tcp: &mut TcpStream, origin: &Origin, proxy: &Proxy) -> Result<(), ClientError> {
    let target = if origin.host.contains(':') {
        format!("[{}]:{}", origin.host, origin.port)
    } else {
        format!("{}:{}", origin.host, origin.port)
    };
    let mut ask = format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n");
    if let Some(authorization) = &proxy.authorization {
        ask.push_str("proxy-authorization: ");
        ask.push_str(authorization);
        ask.push_str("\r\n");
    }
    ask.push_str("\r\n");
    tcp.write_all(ask.as_bytes())
        .await
        .map_err(ClientError::Connect)?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if tcp.read_buf(&mut buf).await.map_err(ClientError::Connect)? == 0 {
            return Err(ClientError::Proxy("it closed the connection".into()));
        }
        // The proxy's answer is read as an upstream's head is; only its status matters.
        match parse_head(&buf) {
            Ok(Some(head)) if head.status.is_success() => return Ok(()),
            Ok(Some(head)) => {
                return Err(ClientError::Proxy(format!(
                    "it answered {}",
                    head.status.as_u16()
                )));
            }
            Ok(None) if buf.len() < MAX_HEAD => {}
            Ok(None) => return Err(ClientError::Proxy("its answer is too large".into())),
            Err(ClientError::Protocol(e)) => return Err(ClientError::Proxy(e)),
            Err(e) => return Err(e),
        }
    }
}

async fn write(conn: &mut Conn, message: &[u8]) -> io::Result<()> {
    conn.write_all(message).await?;
    conn.flush().await
}

struct Head {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
    /// The head's length in bytes, up to and including its blank line.
    length: usize,
}

/// The answer's head when `buf` holds all of it.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ClientError> {
    let mut slots = [httparse::EMPTY_HEADER; 100];
    let mut response = httparse::Response::new(&mut slots);
    let length = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ClientError::Protocol(e.to_string())),
    };
    let status = response
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| ClientError::Protocol("no status".into()))?;
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    let mut close = response.version != Some(1);
    let mut chunked = false;
    let mut encoded = false;
    let mut length_header: Option<u64> = None;
    for h in response.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            continue;
        };
        if name == axum::http::header::CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ClientError::Protocol("a bad content-length".into()))?;
            if length_header.is_some_and(|m| m != n) {
                return Err(ClientError::Protocol("two content-lengths".into()));
            }
            length_header = Some(n);
        } else if name == axum::http::header::TRANSFER_ENCODING {
            encoded = true;
            chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == axum::http::header::CONNECTION {
            close |= h
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
        headers.append(name, value);
    }
    let framing = if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else if encoded {
        // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3); an encoding other
        // than chunked last means the body runs to the connection's end.
        if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::UntilClose
        }
    } else {
        match length_header {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let keep_alive = !close && !matches!(framing, Framing::UntilClose);
    Ok(Some(Head {
        status,
        headers,
        framing,
        keep_alive,
        length,
    }))
}

/// A connection, plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether an idle connection can be used: nothing to read on it (neither the end of
    /// the stream nor a TLS close_notify), so the upstream has not closed it. Looks at the
    /// socket's readiness without waiting for it.
    fn still_open(&self) -> bool {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        self.tcp().poll_peek(&mut cx, &mut buf).is_pending()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How an answer's body ends (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// The body is whatever comes until the upstream closes the connection.
    UntilClose,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of chunk data are left.
    Data(u64),
    /// The CRLF closing a chunk's data is next.
    DataEnd,
    /// Trailer lines, up to a blank one, are next.
    Trailers,
}

/// What the bytes read so far give.
enum Step {
    Data(Bytes),
    End,
    NeedMore,
}

/// An answer's body, read from its connection as it is polled. Read to its end, the
/// connection goes back to the pool; dropped before, the connection is closed.
pub struct AnswerBody {
    conn: Option<Conn>,
    /// Read from the connection, not yet handed out.
    buf: BytesMut,
    framing: Framing,
    /// Where the connection goes when the body ends, when it may be kept alive.
    pool: Option<(Arc<Shared>, Origin)>,
}

impl std::fmt::Debug for AnswerBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerBody")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl AnswerBody {
    /// The whole body.
    pub async fn bytes(mut self) -> Result<Bytes, ClientError> {
        let mut all = BytesMut::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut self).poll_frame(cx)).await
        {
            if let Ok(data) = frame?.into_data() {
                all.extend_from_slice(&data);
            }
        }
        Ok(all.freeze())
    }

    /// The body as a stream of its pieces, as they arrive.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, ClientError>> + Send {
        futures_util::stream::unfold(self, |mut body| async move {
            loop {
                let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await?;
                match frame.map(Frame::into_data) {
                    Ok(Ok(data)) => return Some((Ok(data), body)),
                    Ok(Err(_trailers)) => continue,
                    Err(e) => return Some((Err(e), body)),
                }
            }
        })
    }

    /// The next piece of body in what has been read, if there is one.
    fn step(&mut self) -> Result<Step, ClientError> {
        loop {
            match self.framing {
                Framing::Done => return Ok(Step::End),
                Framing::Length(0) => self.framing = Framing::Done,
                Framing::Length(left) => {
                    let Some(data) = take(&mut self.buf, left) else {
                        return Ok(Step::NeedMore);
                    };
                    self.framing = Framing::Length(left - data.len() as u64);
                    return Ok(Step::Data(data));
                }
                Framing::UntilClose => {
                    if self.buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Data(self.buf.split().freeze()));
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    let Some(data) = take(&mut self.buf, left) else {
                        return Ok(Step::NeedMore);
                    };
                    let left = left - data.len() as u64;
                    self.framing = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Step::Data(data));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if self.buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(ClientError::Protocol("a chunk without its CRLF".into()));
                    }
                    self.buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(line) = self.line()? else {
                        return Ok(Step::NeedMore);
                    };
                    // `size [; extensions]`: the extensions mean nothing here.
                    let size = line.split(|b| *b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(size.trim_ascii())
                        .ok()
                        .and_then(|s| u64::from_str_radix(s, 16).ok())
                        .ok_or_else(|| ClientError::Protocol("a bad chunk size".into()))?;
                    self.framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let Some(line) = self.line()? else {
                        return Ok(Step::NeedMore);
                    };
                    if line.is_empty() {
                        self.framing = Framing::Done;
                    }
                }
            }
        }
    }

    /// The next CRLF-ended line of `buf`, without its CRLF, when all of it has been read.
    fn line(&mut self) -> Result<Option<Bytes>, ClientError> {
        match self.buf.windows(2).position(|w| w == b"\r\n") {
            Some(at) => {
                let line = self.buf.split_to(at).freeze();
                self.buf.advance(2);
                Ok(Some(line))
            }
            None if self.buf.len() > MAX_HEAD => {
                Err(ClientError::Protocol("a chunk line is too long".into()))
            }
            None => Ok(None),
        }
    }

    /// The body has been read to its end: its connection goes back to the pool when it can
    /// carry another request (nothing read past the end, kept alive), or is closed.
    fn release_if_done(&mut self) {
        if self.framing == Framing::Length(0) {
            self.framing = Framing::Done;
        }
        if self.framing != Framing::Done {
            return;
        }
        let (Some(conn), Some((shared, origin))) = (self.conn.take(), self.pool.take()) else {
            return;
        };
        if !self.buf.is_empty() {
            return;
        }
        let mut idle = shared.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(origin).or_default();
        if list.len() < IDLE_PER_ORIGIN {
            list.push(Idle {
                stream: conn,
                since: Instant::now(),
            });
        }
    }
}

/// Up to `left` bytes from the front of `buf`; none when `buf` is empty.
fn take(buf: &mut BytesMut, left: u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
    Some(buf.split_to(n).freeze())
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = ClientError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientError>>> {
        let this = self.get_mut();
        loop {
            match this.step() {
                Ok(Step::Data(data)) => {
                    // The last bytes: the connection is free before they are even sent on.
                    this.release_if_done();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::End) => {
                    this.release_if_done();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if this.buf.capacity() - this.buf.len() < READ_SIZE / 4 {
                this.buf.reserve(READ_SIZE);
            }
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(conn),
                cx,
                &mut this.buf
            ));
            match read {
                Ok(0) if this.framing == Framing::UntilClose => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(ClientError::Closed)));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What the test server does with the `n`th request (from 0) of a connection to `path`:
    /// write these pieces (a pause between them, so they arrive apart) and then close the
    /// connection or keep it; nothing at all closes it without an answer.
    type Script = fn(path: &str, n: usize) -> Option<(Vec<&'static [u8]>, bool)>;

    /// What a test server saw.
    #[derive(Default)]
    struct Seen {
        connections: AtomicUsize,
        requests: AtomicUsize,
        /// Each request's head.
        heads: Mutex<Vec<String>>,
    }

    impl Seen {
        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }

        fn last_head(&self) -> String {
            self.heads
                .lock()
                .expect("lock")
                .last()
                .cloned()
                .unwrap_or_default()
        }
    }

    /// A loopback HTTP/1.1 server playing `script`, over TLS when given an acceptor.
    async fn serve(
        script: Script,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> (SocketAddr, Arc<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let r = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                r.connections.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(tcp).await {
                                play(s, script, r).await;
                            }
                        }
                        None => play(tcp, script, r).await,
                    }
                });
            }
        });
        (addr, seen)
    }

    async fn play<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, script: Script, seen: Arc<Seen>) {
        let mut buf = Vec::new();
        for n in 0.. {
            // One request: its head, then its Content-Length of body.
            let (path, body_at, length) = loop {
                let mut slots = [httparse::EMPTY_HEADER; 32];
                let mut req = httparse::Request::new(&mut slots);
                if let Ok(httparse::Status::Complete(at)) = req.parse(&buf) {
                    let length = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                        .unwrap_or(0);
                    break (req.path.unwrap_or("/").to_string(), at, length);
                }
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            };
            while buf.len() < body_at + length {
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            let head = String::from_utf8_lossy(&buf[..body_at]).into_owned();
            seen.heads.lock().expect("lock").push(head);
            buf.drain(..body_at + length);
            seen.requests.fetch_add(1, Ordering::SeqCst);
            let Some((pieces, close)) = script(&path, n) else {
                return;
            };
            for piece in pieces {
                if s.write_all(piece).await.is_err() || s.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if close {
                let _ = s.shutdown().await;
                return;
            }
        }
    }

    fn client() -> Client {
        Client::new("test", None, Proxies::default()).expect("client")
    }

    fn at(addr: SocketAddr, path: &str) -> Address {
        Address::parse(&format!("http://{addr}{path}")).expect("address")
    }

    async fn answer(client: &Client, to: &Address) -> Result<(u16, HeaderMap, Bytes), ClientError> {
        let a = client.post(to, &[("x-test", "1")], b"{}").await?;
        let body = a.body.bytes().await?;
        Ok((a.status.as_u16(), a.headers, body))
    }

    fn framings(path: &str, _n: usize) -> Option<(Vec<&'static [u8]>, bool)> {
        // Through a proxy the path is a whole URL: its last segment says what to answer.
        let path = &path[path.rfind('/').unwrap_or_default()..];
        Some(match path {
            "/length" => (
                vec![b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"a\":", b"\"bcd\"}"],
                false,
            ),
            "/chunked" => (
                vec![
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n",
                    b"1",
                    b"1\r\n, world, and more\r\n0\r\nx-trailer: t\r\n\r\n",
                ],
                false,
            ),
            "/continue" => (
                vec![b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"],
                false,
            ),
            "/empty" => (vec![b"HTTP/1.1 204 No Content\r\n\r\n"], false),
            "/until-close" => (vec![b"HTTP/1.1 200 OK\r\n\r\nall of ", b"it"], true),
            "/closing" => (
                vec![b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye"],
                true,
            ),
            "/short" => (vec![b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this"], true),
            "/bad-chunk" => (
                vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"],
                false,
            ),
            "/not-http" => (vec![b"SSH-2.0-OpenSSH\r\n\r\n"], true),
            _ => (vec![b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"], false),
        })
    }

    #[tokio::test]
    async fn every_framing_is_read_and_a_kept_alive_connection_serves_the_next_request() {
        let (addr, seen) = serve(framings, None).await;
        let client = client();

        let (status, headers, body) = answer(&client, &at(addr, "/length")).await.expect("length");
        assert_eq!((status, &body[..]), (200, &b"{\"a\":\"bcd\"}"[..]));
        assert_eq!(headers["content-type"], "application/json");
        let (status, _, body) = answer(&client, &at(addr, "/chunked"))
            .await
            .expect("chunked");
        assert_eq!((status, &body[..]), (200, &b"hello, world, and more"[..]));
        let (status, _, body) = answer(&client, &at(addr, "/continue")).await.expect("100");
        assert_eq!((status, &body[..]), (201, &b"ok"[..]));
        let (status, _, body) = answer(&client, &at(addr, "/empty")).await.expect("204");
        assert_eq!((status, body.len()), (204, 0));
        // Four answers, each read to its end, over one connection.
        assert_eq!(seen.connections(), 1);
        assert_eq!(seen.requests(), 4);

        // Answers that end the connection: the next request opens another.
        let (_, _, body) = answer(&client, &at(addr, "/until-close"))
            .await
            .expect("eof");
        assert_eq!(&body[..], b"all of it");
        let (_, _, body) = answer(&client, &at(addr, "/closing")).await.expect("close");
        assert_eq!(&body[..], b"bye");
        answer(&client, &at(addr, "/length")).await.expect("again");
        assert_eq!(seen.connections(), 3);

        // A length-framed body streams with its length known, so it goes on with it.
        let a = client
            .post(&at(addr, "/length"), &[], b"{}")
            .await
            .expect("post");
        assert_eq!(a.body.size_hint().exact(), Some(11));
        // Dropped before its end, the body takes its connection with it.
        drop(a);
        answer(&client, &at(addr, "/length"))
            .await
            .expect("after a drop");
        assert_eq!(seen.connections(), 4);
    }

    #[tokio::test]
    async fn a_header_with_a_line_break_is_never_sent() {
        let (addr, seen) = serve(framings, None).await;
        let client = client();
        let injected = client
            .post(
                &at(addr, "/length"),
                &[("x-api-key", "sk\r\nx-evil: 1")],
                b"{}",
            )
            .await;
        assert!(
            matches!(&injected, Err(ClientError::LineBreak(name)) if name == "x-api-key"),
            "{injected:?}"
        );
        assert_eq!((seen.connections(), seen.requests()), (0, 0));
    }

    #[tokio::test]
    async fn broken_answers_are_errors_not_bodies() {
        let (addr, _) = serve(framings, None).await;
        let client = client();
        let short = answer(&client, &at(addr, "/short")).await;
        assert!(matches!(short, Err(ClientError::Closed)), "{short:?}");
        let bad = answer(&client, &at(addr, "/bad-chunk")).await;
        assert!(
            matches!(&bad, Err(ClientError::Protocol(m)) if m.contains("chunk size")),
            "{bad:?}"
        );
        let not_http = answer(&client, &at(addr, "/not-http")).await;
        assert!(
            matches!(not_http, Err(ClientError::Protocol(_))),
            "{not_http:?}"
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let refused = answer(&client, &at(SocketAddr::from(([127, 0, 0, 1], port)), "/")).await;
        assert!(
            matches!(refused, Err(ClientError::Connect(_))),
            "{refused:?}"
        );
    }

    /// Every connection's second request is read and dropped without an answer, the way an
    /// upstream closing an idle connection races a request sent on it.
    fn drops_the_second(_path: &str, n: usize) -> Option<(Vec<&'static [u8]>, bool)> {
        (n == 0).then(|| {
            (
                vec![&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..]],
                false,
            )
        })
    }

    /// Answers, then closes the connection without saying so.
    fn closes_quietly(_path: &str, _n: usize) -> Option<(Vec<&'static [u8]>, bool)> {
        Some((
            vec![&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..]],
            true,
        ))
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_a_failed_request() {
        // Closed while idle: seen before use, a new connection is opened.
        let (addr, seen) = serve(closes_quietly, None).await;
        let client = client();
        for _ in 0..3 {
            let (status, _, _) = answer(&client, &at(addr, "/")).await.expect("answer");
            assert_eq!(status, 200);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen.connections(), 3);
        assert_eq!(seen.requests(), 3);

        // Closed as the request arrives: nothing came back, so it goes again, once.
        let (addr, seen) = serve(drops_the_second, None).await;
        answer(&client, &at(addr, "/")).await.expect("first");
        let (status, _, body) = answer(&client, &at(addr, "/")).await.expect("second");
        assert_eq!((status, &body[..]), (200, &b"ok"[..]));
        assert_eq!(seen.connections(), 2);
        assert_eq!(seen.requests(), 3);
    }

    /// A CA made for these tests (valid for 100 years), and the key of its certificate for
    /// `localhost` and `127.0.0.1`.
    const CA: &[u8] = include_bytes!("../tests/fixtures/ca.pem");

    /// The test server over TLS, with the certificate the test CA signed.
    async fn serve_tls(script: Script) -> (SocketAddr, Arc<Seen>) {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain =
            CertificateDer::pem_slice_iter(include_bytes!("../tests/fixtures/upstream.pem"))
                .collect::<Result<Vec<_>, _>>()
                .expect("chain");
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("../tests/fixtures/upstream.key"))
            .expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
        serve(
            script,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    #[tokio::test]
    async fn tls_upstreams_are_checked_against_the_roots() {
        let (addr, seen) = serve_tls(framings).await;
        let trusting = Client::new("test", Some(CA), Proxies::default()).expect("client");
        for host in ["localhost", "127.0.0.1"] {
            let to = Address::parse(&format!("https://{host}:{}/chunked", addr.port()))
                .expect("address");
            let (status, _, body) = answer(&trusting, &to).await.expect("over TLS");
            assert_eq!((status, &body[..]), (200, &b"hello, world, and more"[..]));
            answer(&trusting, &to).await.expect("again");
        }
        // One connection per host name, each kept alive for its second request.
        assert_eq!(seen.connections(), 2);

        let to =
            Address::parse(&format!("https://localhost:{}/length", addr.port())).expect("address");
        let untrusting = client();
        let refused = answer(&untrusting, &to).await;
        assert!(matches!(refused, Err(ClientError::Tls(_))), "{refused:?}");

        assert!(Client::new("test", Some(b"not a certificate"), Proxies::default()).is_err());
    }

    /// A proxy that opens `CONNECT` tunnels (or refuses them with a 407); the heads it read.
    async fn tunnel_proxy(refuse: bool) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if client.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    seen.lock().expect("lock").push(head);
                    if refuse {
                        let no = b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n";
                        let _ = client.write_all(no).await;
                        return;
                    }
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let yes = b"HTTP/1.1 200 Connection established\r\n\r\n";
                    if client.write_all(yes).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        (addr, heads)
    }

    #[tokio::test]
    async fn upstreams_are_reached_through_the_proxies_the_environment_names() {
        // Plain HTTP: the request goes to the proxy, naming the whole URL and the user.
        let (proxy, seen) = serve(framings, None).await;
        let proxies = Proxies::new(Some(&format!("http://us%40er:p%3Ass@{proxy}")), None, None);
        let client = Client::new("test", None, proxies).expect("client");
        let to = Address::parse("http://provider.invalid:81/v1/length").expect("address");
        let (status, _, body) = answer(&client, &to).await.expect("through the proxy");
        assert_eq!((status, &body[..]), (200, &b"{\"a\":\"bcd\"}"[..]));
        let head = seen.last_head();
        assert!(
            head.starts_with("POST http://provider.invalid:81/v1/length HTTP/1.1\r\n"),
            "{head}"
        );
        // base64("us@er:p:ss")
        assert!(
            head.contains("proxy-authorization: Basic dXNAZXI6cDpzcw==\r\n"),
            "{head}"
        );
        assert!(head.contains("host: provider.invalid:81\r\n"), "{head}");

        // HTTPS: a tunnel through the proxy, the upstream's certificate checked inside it.
        let (upstream, _) = serve_tls(framings).await;
        let to = Address::parse(&format!("https://localhost:{}/chunked", upstream.port()))
            .expect("address");
        let (proxy, tunnels) = tunnel_proxy(false).await;
        let proxies = Proxies::new(None, Some(&proxy.to_string()), None);
        let client = Client::new("test", Some(CA), proxies).expect("client");
        let (_, _, body) = answer(&client, &to).await.expect("through the tunnel");
        assert_eq!(&body[..], b"hello, world, and more");
        let asked = tunnels.lock().expect("lock").clone();
        assert_eq!(asked.len(), 1);
        assert!(
            asked[0].starts_with(&format!(
                "CONNECT localhost:{} HTTP/1.1\r\n",
                upstream.port()
            )),
            "{asked:?}"
        );

        // NO_PROXY's hosts are reached directly.
        let proxies = Proxies::new(
            None,
            Some(&proxy.to_string()),
            Some("example.com, localhost"),
        );
        let client = Client::new("test", Some(CA), proxies).expect("client");
        answer(&client, &to).await.expect("directly");
        assert_eq!(tunnels.lock().expect("lock").len(), 1);

        // A proxy that refuses the tunnel fails the request, saying so.
        let (refusing, _) = tunnel_proxy(true).await;
        let proxies = Proxies::new(None, Some(&refusing.to_string()), None);
        let client = Client::new("test", Some(CA), proxies).expect("client");
        let refused = answer(&client, &to).await;
        assert!(
            matches!(&refused, Err(ClientError::Proxy(m)) if m.contains("407")),
            "{refused:?}"
        );
    }

    #[test]
    fn proxy_settings_are_read_as_curl_reads_them() {
        let proxies = Proxies::new(
            Some("proxy:3128"),
            Some("http://proxy:3128"),
            Some(".example.com,*.x, local"),
        );
        assert_eq!(proxies.unusable().count(), 0);
        let origin = |host: &str| Origin {
            tls: true,
            host: host.into(),
            port: 443,
        };
        let proxied = |proxies: &Proxies, host: &str| {
            proxies.for_origin(&origin(host)).expect("usable").is_some()
        };
        for (host, direct) in [
            ("api.example.com", true),
            ("example.com", true),
            ("EXAMPLE.com", true),
            ("notexample.com", false),
            ("local", true),
            ("api.openai.com", false),
        ] {
            assert_eq!(!proxied(&proxies, host), direct, "{host}");
        }
        let all = Proxies::new(None, Some("proxy:3128"), Some("*"));
        assert!(!proxied(&all, "api.openai.com"));
        let http = Proxies::new(Some("proxy:3128"), None, None);
        assert!(!proxied(&http, "api.openai.com"), "https has its own");

        // A setting that cannot be used is said, and fails what it would carry: never a
        // request sent around the proxy, never the proxy's password repeated.
        for bad in [
            "socks5://user:secret@proxy:1080",
            "https://user:secret@proxy",
            "http://",
        ] {
            let proxies = Proxies::new(None, Some(bad), Some("localhost"));
            let said: Vec<&str> = proxies.unusable().collect();
            assert_eq!(said.len(), 1, "{bad}");
            assert!(said[0].starts_with("HTTPS_PROXY: "), "{said:?}");
            assert!(!said[0].contains("secret"), "{said:?}");
            let refused = proxies.for_origin(&origin("api.openai.com"));
            assert!(
                matches!(&refused, Err(ClientError::ProxySetting(m)) if !m.contains("secret")),
                "{refused:?}"
            );
            assert!(
                !proxied(&proxies, "localhost"),
                "NO_PROXY still goes direct"
            );
        }
    }

    #[test]
    fn addresses_are_http_or_https_with_a_host() {
        let a = Address::parse("https://api.openai.com/v1/chat/completions").expect("https");
        assert_eq!(
            (a.origin.tls, a.origin.host.as_str(), a.origin.port),
            (true, "api.openai.com", 443)
        );
        assert_eq!(a.path, "/v1/chat/completions");
        let a = Address::parse("http://[::1]:8080/v1/embeddings").expect("ipv6");
        assert_eq!((a.origin.host.as_str(), a.origin.port), ("::1", 8080));
        assert_eq!(a.authority, "[::1]:8080");
        assert_eq!(Address::parse("http://localhost").expect("bare").path, "/");
        for bad in [
            "ftp://example.com/v1",
            "http://user:pw@example.com/v1",
            "not a url",
            "/v1/chat",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }
}
