//! Transport drivers shared by the router and the messaging server.
#![warn(missing_docs)]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use boxless_sip::{Frame, frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A connection closes after this long without a byte.
pub const TCP_IDLE: Duration = Duration::from_secs(300);

/// An untrusted peer's connection gets this long to send its one message (answered `403`)
/// before it is closed: a stranger cannot hold connections open.
pub const UNTRUSTED_TCP_GRACE: Duration = Duration::from_secs(2);

/// SIP-over-TCP connections one listener holds at once; past it, accepting waits.
pub const MAX_TCP_CONNECTIONS: usize = 4096;

/// A TLS handshake must finish within this, or the connection is closed.
pub const TLS_HANDSHAKE: Duration = Duration::from_secs(5);

/// Bounds the connections of one listener: each accepted connection holds a permit.
#[derive(Debug, Clone)]
pub struct ConnLimit(std::sync::Arc<tokio::sync::Semaphore>);

impl ConnLimit {
    /// At most `n` connections at once.
    pub fn new(n: usize) -> ConnLimit {
        ConnLimit(std::sync::Arc::new(tokio::sync::Semaphore::new(n)))
    }

    /// Waits for room for one more connection; the permit frees it when dropped.
    pub async fn acquire(&self) -> tokio::sync::OwnedSemaphorePermit {
        // The semaphore is never closed, so acquiring cannot fail.
        self.0
            .clone()
            .acquire_owned()
            .await
            .expect("connection semaphore is never closed")
    }
}

/// One SIP connection over TCP or TLS (RFC 3261 §18.3, RFC 5630): a writer task fed by a
/// bounded queue, and a reader that hands out whole messages.
pub struct TcpSip {
    /// Queue of bytes to write; a full queue drops (the peer is not reading).
    pub writer: mpsc::Sender<Vec<u8>>,
    /// True over TLS.
    pub tls: bool,
    reader: Box<dyn AsyncRead + Send + Unpin>,
    buf: Vec<u8>,
    max: usize,
    idle: Duration,
}

impl std::fmt::Debug for TcpSip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpSip")
            .field("tls", &self.tls)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl TcpSip {
    /// Splits `stream` and starts its writer task; messages above `max` bytes close it.
    pub fn new(stream: TcpStream, max: usize) -> TcpSip {
        TcpSip::over(stream, max, false)
    }

    /// [`TcpSip::new`] over any byte stream (a TLS session).
    pub fn over<S>(stream: S, max: usize, tls: bool) -> TcpSip
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, mut wr) = tokio::io::split(stream);
        let (writer, mut queue) = mpsc::channel::<Vec<u8>>(64);
        tokio::spawn(async move {
            while let Some(b) = queue.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
            }
        });
        TcpSip {
            writer,
            tls,
            reader: Box::new(reader),
            buf: Vec::with_capacity(8192),
            max,
            idle: TCP_IDLE,
        }
    }

    /// Closes the connection after `d` without a byte (default [`TCP_IDLE`]).
    pub fn set_idle(&mut self, d: Duration) {
        self.idle = d;
    }

    /// The next whole message; None when the peer closed, went idle, or sent a stream that
    /// cannot be framed (missing, repeated or bad Content-Length; too large), which closes it.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        let mut chunk = [0u8; 8192];
        loop {
            match frame(&self.buf, self.max) {
                Frame::Complete { skip, len } => {
                    let msg = self.buf[skip..skip + len].to_vec();
                    self.buf.drain(..skip + len);
                    return Some(msg);
                }
                Frame::Incomplete { .. } => {}
                Frame::Invalid => {
                    metrics::counter!("boxless_sip_dropped_total", "reason" => "bad_framing")
                        .increment(1);
                    return None;
                }
            }
            match tokio::time::timeout(self.idle, self.reader.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Accepts SIP connections on `l`, over TLS when `tls` is set, at most
/// [`MAX_TCP_CONNECTIONS`] at once, and runs `conn(connection, peer, trusted)` in a task of
/// its own for each. `trusted` tells whether the peer may reach call handling: a stranger
/// over TCP gets [`UNTRUSTED_TCP_GRACE`] to send its one message (the caller answers it
/// `403`), a stranger over TLS is closed before the handshake (no CPU spent on it); a
/// handshake that takes longer than [`TLS_HANDSHAKE`] is dropped.
pub async fn accept_sip<F, Fut>(
    l: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max: usize,
    trusted: impl Fn(IpAddr) -> bool,
    conn: F,
) where
    F: Fn(TcpSip, SocketAddr, bool) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = ConnLimit::new(MAX_TCP_CONNECTIONS);
    loop {
        let permit = limit.acquire().await;
        let Ok((s, peer)) = l.accept().await else {
            continue;
        };
        let ok = trusted(peer.ip());
        let Some(acceptor) = tls.clone() else {
            let mut c = TcpSip::new(s, max);
            if !ok {
                c.set_idle(UNTRUSTED_TCP_GRACE);
            }
            let task = conn(c, peer, ok);
            tokio::spawn(async move {
                task.await;
                drop(permit);
            });
            continue;
        };
        if !ok {
            metrics::counter!("boxless_sip_refused_total", "reason" => "untrusted").increment(1);
            continue;
        }
        // The handshake runs in the connection's own task: a slow one holds no one up.
        let conn = conn.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(s)).await {
                Ok(Ok(stream)) => conn(TcpSip::over(stream, max, true), peer, true).await,
                _ => metrics::counter!("boxless_sip_dropped_total", "reason" => "tls_handshake")
                    .increment(1),
            }
            drop(permit);
        });
    }
}

pub mod rtp;
pub mod tls;

/// A minimal HTTP/1.1 client for the Boxless APIs (loopback and LAN; HTTPS with a
/// configured CA; no redirects).
pub mod http {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// An HTTP answer.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Answer {
        /// Status code.
        pub status: u16,
        /// Content-Type, if any.
        pub content_type: Option<String>,
        /// Every header field, names lower-cased.
        pub headers: Vec<(String, String)>,
        /// The body (de-chunked).
        pub body: Vec<u8>,
    }

    impl Answer {
        /// The value of header `name` (lower case).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// Sends `METHOD path` to `addr` and reads the whole answer, all within `limit`.
    pub async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        limit: Duration,
    ) -> std::io::Result<Answer> {
        request_with(&Target::plain(addr), method, path, None, limit).await
    }

    /// Where a request goes: an address, over TLS when a client configuration is given
    /// (the server's certificate must name the address's IP).
    #[derive(Debug, Clone)]
    pub struct Target {
        /// The API's address.
        pub addr: SocketAddr,
        /// HTTPS with this configuration.
        pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    }

    impl Target {
        /// Plain HTTP.
        pub fn plain(addr: SocketAddr) -> Target {
            Target { addr, tls: None }
        }
    }

    /// Sends `METHOD path` with an optional `Authorization` value and reads the whole
    /// answer, all within `limit`.
    pub async fn request_with(
        target: &Target,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        limit: Duration,
    ) -> std::io::Result<Answer> {
        let auth: Vec<(&str, &str)> = authorization
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        send(target, method, path, &auth, &[], limit).await
    }

    /// Sends `METHOD path` with `headers` (a name or value with a line break is refused,
    /// so nothing can be smuggled) and `body` (with its Content-Length when not empty or
    /// not a GET), and reads the whole answer, all within `limit`.
    pub async fn send(
        target: &Target,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        limit: Duration,
    ) -> std::io::Result<Answer> {
        let addr = target.addr;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            if k.bytes().chain(v.bytes()).any(|b| b == b'\r' || b == b'\n') {
                return Err(std::io::Error::other(format!("bad {k} value")));
            }
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut msg = head.into_bytes();
        msg.extend_from_slice(body);
        tokio::time::timeout(limit, async {
            let s = TcpStream::connect(addr).await?;
            let mut buf = Vec::new();
            match &target.tls {
                None => exchange(s, &msg, &mut buf).await?,
                Some(cfg) => {
                    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                    let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(name, s)
                        .await?;
                    exchange(tls, &msg, &mut buf).await?
                }
            }
            parse(&buf).ok_or_else(|| std::io::Error::other("malformed HTTP answer"))
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP request timed out"))?
    }

    /// An `http://` or `https://` URL, parsed once.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Url {
        /// TLS.
        pub https: bool,
        /// A host name or an IP address (without brackets).
        pub host: String,
        /// The port (80/443 when not given).
        pub port: u16,
        /// Path and query, from `/`.
        pub path: String,
    }

    impl Url {
        /// Parses `s`; None for anything but a plain http(s) URL without user info.
        pub fn parse(s: &str) -> Option<Url> {
            let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
                (true, r)
            } else {
                (false, s.strip_prefix("http://")?)
            };
            let (authority, path) = match rest.find(['/', '?']) {
                Some(i) => (&rest[..i], rest[i..].to_string()),
                None => (rest, "/".to_string()),
            };
            let path = if path.starts_with('?') {
                format!("/{path}")
            } else {
                path
            };
            if authority.is_empty()
                || authority.contains('@')
                || path.contains('#')
                || s.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return None;
            }
            let default = if https { 443 } else { 80 };
            let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
                let (h, after) = v6.split_once(']')?;
                let port = match after.strip_prefix(':') {
                    Some(p) => p.parse().ok()?,
                    None if after.is_empty() => default,
                    None => return None,
                };
                (h.to_string(), port)
            } else {
                match authority.rsplit_once(':') {
                    Some((h, p)) => (h.to_string(), p.parse().ok()?),
                    None => (authority.to_string(), default),
                }
            };
            (!host.is_empty()).then_some(Url {
                https,
                host,
                port,
                path,
            })
        }
    }

    /// POSTs `body` to `url` with `headers` (names and values without line breaks) and
    /// reads the answer, all within `limit`. HTTPS checks the server's certificate against
    /// `tls` (its roots) and the URL's host.
    pub async fn post(
        url: &Url,
        headers: &[(&str, &str)],
        body: &[u8],
        tls: &std::sync::Arc<rustls::ClientConfig>,
        limit: Duration,
    ) -> std::io::Result<Answer> {
        let host_header = if url.host.contains(':') {
            format!("[{}]:{}", url.host, url.port)
        } else {
            format!("{}:{}", url.host, url.port)
        };
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\nContent-Length: {}\r\n",
            url.path,
            body.len()
        );
        for (k, v) in headers {
            if format!("{k}{v}").bytes().any(|b| b == b'\r' || b == b'\n') {
                return Err(std::io::Error::other("a header with a line break"));
            }
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut msg = head.into_bytes();
        msg.extend_from_slice(body);
        tokio::time::timeout(limit, async {
            let s = TcpStream::connect((url.host.as_str(), url.port)).await?;
            let mut buf = Vec::new();
            if url.https {
                let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                    .map_err(|e| std::io::Error::other(format!("host {}: {e}", url.host)))?;
                let tls = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, s)
                    .await?;
                exchange(tls, &msg, &mut buf).await?;
            } else {
                exchange(s, &msg, &mut buf).await?;
            }
            parse(&buf).ok_or_else(|| std::io::Error::other("malformed HTTP answer"))
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP request timed out"))?
    }

    async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        mut s: S,
        head: &[u8],
        buf: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        s.write_all(head).await?;
        s.flush().await?;
        match s.read_to_end(buf).await {
            Ok(_) => Ok(()),
            // A TLS peer that closes without close_notify after a complete answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn parse(buf: &[u8]) -> Option<Answer> {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&buf[..end]).ok()?;
        let body = &buf[end + 4..];
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let mut content_type = None;
        let mut chunked = false;
        let mut headers = Vec::new();
        for line in head.lines().skip(1) {
            let (k, v) = line.split_once(':')?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            if k.eq_ignore_ascii_case("content-type") {
                content_type = Some(v.trim().to_string());
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
        }
        let body = if chunked {
            dechunk(body)?
        } else {
            body.to_vec()
        };
        Some(Answer {
            status,
            content_type,
            headers,
            body,
        })
    }

    fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let nl = b.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(
                std::str::from_utf8(&b[..nl])
                    .ok()?
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            b = &b[nl + 2..];
            if size == 0 {
                return Some(out);
            }
            out.extend_from_slice(b.get(..size)?);
            b = b.get(size + 2..)?;
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn plain_and_chunked_answers() {
            let a = parse(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]",
            )
            .unwrap();
            assert_eq!(
                (a.status, a.content_type.as_deref(), a.body.as_slice()),
                (200, Some("application/json"), &b"[]"[..])
            );
            let a = parse(b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
            assert_eq!((a.status, a.body.as_slice()), (404, &b"abcde"[..]));
            assert!(parse(b"garbage").is_none());
        }
    }
}
