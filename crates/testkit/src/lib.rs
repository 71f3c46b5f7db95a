//! Test support for Boxless: a fake SMSC speaking enough SMPP 3.4 to bind, take submit_sm
//! and answer enquire_link (and to refuse or throttle on demand), free loopback ports, a
//! tiny HTTP GET, speech-like test audio, and nats-server on loopback (`nats`).
#![warn(missing_docs)]

pub mod nats;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One SMS the fake SMSC accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sms {
    /// source_addr.
    pub source: String,
    /// source_addr_ton.
    pub source_ton: u8,
    /// destination_addr.
    pub destination: String,
    /// data_coding.
    pub data_coding: u8,
    /// esm_class (0x40: the message starts with a user data header).
    pub esm_class: u8,
    /// registered_delivery.
    pub registered_delivery: u8,
    /// short_message as sent (a UDH included).
    pub octets: Vec<u8>,
    /// The optional parameters: (tag, value).
    pub tlvs: Vec<(u16, Vec<u8>)>,
    /// Decoded text.
    pub text: String,
}

/// How the fake SMSC answers submit_sm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// ESME_ROK.
    Accept,
    /// ESME_RSYSERR.
    Refuse,
    /// ESME_RTHROTTLED.
    Throttle,
}

#[derive(Debug)]
struct Inner {
    accepted: Vec<Sms>,
    mode: Mode,
    submits: u64,
}

/// A fake SMSC on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct FakeSmsc {
    /// Where it listens.
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl FakeSmsc {
    /// Starts listening on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<FakeSmsc> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let inner = Arc::new(Mutex::new(Inner {
            accepted: Vec::new(),
            mode: Mode::Accept,
            submits: 0,
        }));
        let i2 = inner.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(conn(s, i2.clone()));
            }
        });
        Ok(FakeSmsc { addr, inner })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes how submit_sm is answered.
    pub fn set_mode(&self, m: Mode) {
        self.lock().mode = m;
    }

    /// The SMS accepted so far.
    pub fn accepted(&self) -> Vec<Sms> {
        self.lock().accepted.clone()
    }

    /// submit_sm PDUs seen (accepted or not).
    pub fn submits(&self) -> u64 {
        self.lock().submits
    }

    /// Waits until `n` SMS were accepted, or `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Sms> {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let a = self.accepted();
            if a.len() >= n || tokio::time::Instant::now() >= end {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn conn(mut s: TcpStream, inner: Arc<Mutex<Inner>>) {
    let mut head = [0u8; 16];
    let mut msg_id = 0u64;
    loop {
        if s.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let id = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let seq = [head[12], head[13], head[14], head[15]];
        if !(16..=65_536).contains(&len) {
            return;
        }
        let mut body = vec![0u8; len - 16];
        if s.read_exact(&mut body).await.is_err() {
            return;
        }
        let (status, resp_body): (u32, Vec<u8>) = match id {
            0x0000_0009 | 0x0000_0002 | 0x0000_0001 => (0, b"fakesmsc\0".to_vec()),
            0x0000_0015 => (0, Vec::new()),
            0x0000_0006 => {
                let _ = s.write_all(&pdu(0x8000_0006, 0, seq, &[])).await;
                return;
            }
            0x0000_0004 => {
                let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
                g.submits += 1;
                match g.mode {
                    Mode::Refuse => (0x08, Vec::new()),
                    Mode::Throttle => (0x58, Vec::new()),
                    Mode::Accept => match parse_submit(&body) {
                        Some(sms) => {
                            g.accepted.push(sms);
                            msg_id += 1;
                            (0, format!("m{msg_id}\0").into_bytes())
                        }
                        None => (0x01, Vec::new()),
                    },
                }
            }
            0x8000_0000..=0xffff_ffff => continue,
            _ => (0x03, Vec::new()),
        };
        if s.write_all(&pdu(id | 0x8000_0000, status, seq, &resp_body))
            .await
            .is_err()
        {
            return;
        }
    }
}

fn pdu(id: u32, status: u32, seq: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + body.len());
    v.extend_from_slice(&((16 + body.len()) as u32).to_be_bytes());
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&status.to_be_bytes());
    v.extend_from_slice(&seq);
    v.extend_from_slice(body);
    v
}

fn parse_submit(b: &[u8]) -> Option<Sms> {
    let mut i = 0;
    let cstr = |i: &mut usize| -> Option<String> {
        let end = b[*i..].iter().position(|&c| c == 0)? + *i;
        let s = String::from_utf8_lossy(&b[*i..end]).into_owned();
        *i = end + 1;
        Some(s)
    };
    let _service = cstr(&mut i)?;
    let source_ton = *b.get(i)?;
    i += 2;
    let source = cstr(&mut i)?;
    i += 2;
    let destination = cstr(&mut i)?;
    let esm_class = *b.get(i)?;
    i += 3; // esm_class, protocol_id, priority_flag
    let _sched = cstr(&mut i)?;
    let _validity = cstr(&mut i)?;
    let registered_delivery = *b.get(i)?;
    i += 2; // registered_delivery, replace_if_present
    let data_coding = *b.get(i)?;
    i += 2; // data_coding, sm_default_msg_id
    let len = *b.get(i)? as usize;
    i += 1;
    let octets = b.get(i..i + len)?;
    let mut tlvs = Vec::new();
    let mut t = i + len;
    while let Some(h) = b.get(t..t + 4) {
        let (tag, n) = (
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[2], h[3]]) as usize,
        );
        tlvs.push((tag, b.get(t + 4..t + 4 + n)?.to_vec()));
        t += 4 + n;
    }
    let text = match data_coding {
        8 => String::from_utf16_lossy(
            &octets
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect::<Vec<_>>(),
        ),
        _ => octets.iter().map(|&c| gsm_char(c)).collect(),
    };
    Some(Sms {
        source,
        source_ton,
        destination,
        data_coding,
        esm_class,
        registered_delivery,
        octets: octets.to_vec(),
        tlvs,
        text,
    })
}

fn gsm_char(c: u8) -> char {
    match c {
        0x00 => '@',
        0x02 => '$',
        0x0a => '\n',
        0x0d => '\r',
        0x11 => '_',
        0x20..=0x3f | 0x41..=0x5a | 0x61..=0x7a => c as char,
        _ => '?',
    }
}

/// A loopback port that was free a moment ago (for configs that need fixed addresses).
///
/// From below the kernel's ephemeral range (32768-60999 on Linux by default): a port the
/// kernel hands out for a bind to port 0 is one it also hands to outgoing connections,
/// which can take it between this choice and the server's bind. The tests' RTP ranges
/// start at 30000.
pub fn free_port() -> u16 {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    for _ in 0..1000 {
        // A fresh RandomState is seeded from the OS: a different sequence per process.
        let draw = std::collections::hash_map::RandomState::new()
            .hash_one(DRAWS.fetch_add(1, Ordering::Relaxed));
        let port = 10_000 + (draw % 10_000) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.contains(&port) {
            continue;
        }
        // Both UDP and TCP: the servers bind both.
        let free = std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in 10000-19999 on 127.0.0.1");
}

/// `GET path` over HTTP/1.1; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http(addr, "GET", path).await
}

/// A bodiless request; returns (status, body). Handles chunked bodies.
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_with_body(addr, method, path, "").await
}

/// An HTTP/1.1 request with a JSON body.
pub async fn http_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_string()
    };
    Ok((code, body))
}

/// An HTTP/1.1 request with a binary body (a WAV upload); returns (status, body bytes).
/// The answer must not be chunked (the API's audio never is).
pub async fn http_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    // A refusal may come before the whole body is read (413): not an error here.
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP answer"))?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, buf[end + 4..].to_vec()))
}

/// Speech-like test audio at 8 kHz: a gliding, amplitude-modulated harmonic tone with
/// pauses, distinct for each `seed`, `ms` long.
pub fn voice(ms: u32, seed: u32) -> Vec<i16> {
    let n = ms as usize * 8;
    let f0 = 110.0 + (seed % 7) as f64 * 23.0;
    (0..n)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let f = f0 * (1.0 + 0.3 * (2.0 * std::f64::consts::PI * 0.7 * t).sin());
            let syll = (2.0 * std::f64::consts::PI * 3.1 * t).sin().max(0.0);
            let mut v = 0.0;
            for h in 1..6 {
                v += (2.0 * std::f64::consts::PI * f * h as f64 * t + seed as f64).sin() / h as f64;
            }
            (v * syll * 6000.0) as i16
        })
        .collect()
}
