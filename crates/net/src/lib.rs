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

pub mod batch;
pub mod rtp;
pub mod tls;

/// The HTTP/1.1 client of the Boxless APIs (a router's API asking its servers, webhooks,
/// `boxless status`): hyper's, over a TCP or TLS stream we open ourselves, so that the
/// address is the one given (no name resolution but a webhook URL's host) and HTTPS checks
/// the certificate we say. One request per connection; no redirects; the whole exchange
/// within a time limit, the answer's body at most [`MAX_BODY`].
pub mod http {
    use std::net::SocketAddr;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, Limited};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpStream;

    /// The largest answer body read: more than any message's audio (180 s of 16 kHz
    /// 16-bit PCM is 5.8 MB).
    pub const MAX_BODY: usize = 64 * 1024 * 1024;

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

    /// Sends `METHOD path` with `headers` (a name or value that is not a valid header,
    /// one with a line break for instance, is refused, so nothing can be smuggled) and
    /// `body`, and reads the whole answer, all within `limit`.
    pub async fn send(
        target: &Target,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        limit: Duration,
    ) -> std::io::Result<Answer> {
        let addr = target.addr;
        let req = build(method, path, &addr.to_string(), headers, body)?;
        within(limit, async {
            let s = TcpStream::connect(addr).await?;
            match &target.tls {
                None => exchange(s, req, MAX_BODY).await,
                Some(cfg) => {
                    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                    let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(name, s)
                        .await?;
                    exchange(tls, req, MAX_BODY).await
                }
            }
        })
        .await
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

    /// POSTs `body` to `url` with `headers` (valid header names and values only) and
    /// reads the answer, all within `limit`. HTTPS checks the server's certificate against
    /// `tls` (its roots) and the URL's host.
    pub async fn post(
        url: &Url,
        headers: &[(&str, &str)],
        body: &[u8],
        tls: &std::sync::Arc<rustls::ClientConfig>,
        limit: Duration,
    ) -> std::io::Result<Answer> {
        post_bounded(url, headers, body, tls, limit, MAX_BODY).await
    }

    /// [`post`] reading at most `max_body` bytes of the answer (more is an error): for a
    /// peer whose answers are small, so that a hostile one cannot make us hold megabytes.
    pub async fn post_bounded(
        url: &Url,
        headers: &[(&str, &str)],
        body: &[u8],
        tls: &std::sync::Arc<rustls::ClientConfig>,
        limit: Duration,
        max_body: usize,
    ) -> std::io::Result<Answer> {
        let host = if url.host.contains(':') {
            format!("[{}]:{}", url.host, url.port)
        } else {
            format!("{}:{}", url.host, url.port)
        };
        let req = build("POST", &url.path, &host, headers, body)?;
        within(limit, async {
            let s = TcpStream::connect((url.host.as_str(), url.port)).await?;
            if url.https {
                let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                    .map_err(|e| std::io::Error::other(format!("host {}: {e}", url.host)))?;
                let tls = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, s)
                    .await?;
                exchange(tls, req, max_body).await
            } else {
                exchange(s, req, max_body).await
            }
        })
        .await
    }

    /// A request with `Host: host`, `Connection: close` and the caller's headers; a body's
    /// length is sent whenever there is a body or the method carries one.
    fn build(
        method: &str,
        path: &str,
        host: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<hyper::Request<Full<Bytes>>> {
        let bad = |e: hyper::http::Error| std::io::Error::other(format!("bad request: {e}"));
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .header("connection", "close");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
            b = b.header("content-length", body.len());
        }
        b.body(Full::new(Bytes::copy_from_slice(body))).map_err(bad)
    }

    async fn within<T>(
        limit: Duration,
        f: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> std::io::Result<T> {
        tokio::time::timeout(limit, f).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP request timed out")
        })?
    }

    /// One request on a fresh connection, and its whole answer.
    async fn exchange<S>(
        io: S,
        req: hyper::Request<Full<Bytes>>,
        max_body: usize,
    ) -> std::io::Result<Answer>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let err = |e: hyper::Error| std::io::Error::other(format!("HTTP: {e}"));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(err)?;
        // The connection is driven here, beside the request, not in a task of its own: a
        // peer that stalls is dropped with this future when the caller's time runs out.
        let answer = async {
            let resp = sender.send_request(req).await.map_err(err)?;
            let status = resp.status().as_u16();
            let headers: Vec<(String, String)> = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).trim().to_string(),
                    )
                })
                .collect();
            let body = Limited::new(resp.into_body(), max_body)
                .collect()
                .await
                .map_err(|e| std::io::Error::other(format!("HTTP body: {e}")))?
                .to_bytes()
                .to_vec();
            Ok::<_, std::io::Error>((status, headers, body))
        };
        tokio::pin!(answer, conn);
        let (status, headers, body) = tokio::select! {
            biased;
            a = &mut answer => a?,
            c = &mut conn => {
                c.map_err(err)?;
                // Closed (Connection: close): what it sent is the answer, or its error.
                answer.await?
            }
        };
        let content_type = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone());
        Ok(Answer {
            status,
            content_type,
            headers,
            body,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        /// A server that answers one connection with `answer`, and what it was sent.
        async fn one_answer(
            answer: &'static [u8],
        ) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let h = tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                let mut got = vec![0u8; 4096];
                let n = s.read(&mut got).await.unwrap();
                s.write_all(answer).await.unwrap();
                s.shutdown().await.unwrap();
                got.truncate(n);
                got
            });
            (addr, h)
        }

        #[tokio::test]
        async fn plain_and_chunked_answers() {
            let (addr, sent) = one_answer(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]",
            )
            .await;
            let a = request_with(
                &Target::plain(addr),
                "GET",
                "/api/v1/servers",
                Some("Bearer t"),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
            assert_eq!(
                (a.status, a.content_type.as_deref(), a.body.as_slice()),
                (200, Some("application/json"), &b"[]"[..])
            );
            let sent = String::from_utf8(sent.await.unwrap()).unwrap();
            assert!(
                sent.starts_with("GET /api/v1/servers HTTP/1.1\r\n"),
                "{sent}"
            );
            assert!(sent.contains("authorization: Bearer t\r\n"), "{sent}");
            let (addr, _) = one_answer(
                b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            )
            .await;
            let a = request(addr, "GET", "/x", Duration::from_secs(2))
                .await
                .unwrap();
            assert_eq!((a.status, a.body.as_slice()), (404, &b"abcde"[..]));
            let (addr, _) = one_answer(b"garbage").await;
            assert!(
                request(addr, "GET", "/x", Duration::from_secs(2))
                    .await
                    .is_err()
            );
        }

        #[tokio::test]
        async fn a_peer_that_stalls_mid_answer_times_out() {
            // Headers promising 10 bytes, then nothing, the connection held open.
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let held = tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                let mut got = vec![0u8; 4096];
                let _ = s.read(&mut got).await;
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
            let t = std::time::Instant::now();
            let e = request(addr, "GET", "/", Duration::from_millis(300))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
            assert!(t.elapsed() < Duration::from_secs(2));
            held.abort();
        }

        #[tokio::test]
        async fn a_header_with_a_line_break_is_refused_before_anything_is_sent() {
            let t = Target::plain("127.0.0.1:9".parse().unwrap());
            let smuggle = [("X-Test", "a\r\nX-Evil: 1")];
            let e = send(&t, "GET", "/", &smuggle, &[], Duration::from_secs(1))
                .await
                .unwrap_err();
            assert!(e.to_string().contains("bad request"), "{e}");
        }
    }
}
