//! The router's tokio driver: one task for the UDP socket, one per TCP connection.

use std::net::SocketAddr;
use std::sync::Arc;

use boxless_core::{Rng, RouterMode, now_ms};
use std::time::Instant;

use boxless_sip::{Message, response_target};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use crate::decide::{Admission, RouterCore, Verdict};
use crate::proxy::{self, Output, Proxy, ProxySettings};

/// Router settings beyond the decision logic.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// SIP OPTIONS probes of the servers (None: off).
    pub probe: Option<crate::probe::ProbeSettings>,
    /// UDP and TCP address.
    pub listen: SocketAddr,
    /// Largest SIP message accepted.
    pub max_message: usize,
    /// RNG seed (0: from the OS).
    pub rng_seed: u64,
    /// Proxy timers.
    pub proxy: proxy::ProxySettings,
    /// SIP over TLS: its address and certificate.
    pub tls: Option<(SocketAddr, Arc<tokio_rustls::rustls::ServerConfig>)>,
}

/// Binds UDP and TCP on `settings.listen` and serves until the process ends.
///
/// Redirect mode answers UDP from one dedicated OS thread with a blocking socket: the
/// per-call work is two `recvfrom` and one `sendto` with no runtime in between, which is
/// what keeps the router's CPU per call low. Proxy mode needs timers and runs as a task.
pub async fn start(core: Arc<RouterCore>, settings: RouterSettings) -> std::io::Result<SocketAddr> {
    let std_udp = std::net::UdpSocket::bind(settings.listen)?;
    let local = std_udp.local_addr()?;
    let tcp = TcpListener::bind(local).await?;
    let rng = |salt: u64| {
        if settings.rng_seed == 0 {
            Rng::from_entropy()
        } else {
            Rng::seeded(settings.rng_seed ^ salt)
        }
    };
    let proxy_tx = if core.mode == RouterMode::Proxy {
        std_udp.set_nonblocking(true)?;
        let udp = Arc::new(UdpSocket::from_std(std_udp)?);
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run_proxy(
            core.clone(),
            udp,
            rx,
            rng(1),
            settings.proxy.clone(),
            local,
            settings.max_message,
        ));
        Some(tx)
    } else {
        let (core, max, rng) = (core.clone(), settings.max_message, rng(2));
        std::thread::Builder::new()
            .name("router-udp".into())
            .spawn(move || redirect_udp(core, std_udp, max, rng))?;
        None
    };
    if let Some(p) = settings.probe {
        let sock = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?;
        tokio::spawn(probe_servers(core.board.clone(), sock, p));
    }
    if let Some((addr, cfg)) = settings.tls.clone() {
        let l = TcpListener::bind(addr).await?;
        tokio::spawn(stream_accept(
            core.clone(),
            l,
            Some(tokio_rustls::TlsAcceptor::from(cfg)),
            settings.max_message,
            settings.rng_seed ^ 0x7715,
            proxy_tx.clone(),
        ));
        tracing::info!(sip_tls = %addr, "router: SIP over TLS");
    }
    tokio::spawn(stream_accept(
        core,
        tcp,
        None,
        settings.max_message,
        settings.rng_seed,
        proxy_tx,
    ));
    tracing::info!(%local, "router up");
    Ok(local)
}

/// Probes every server with SIP OPTIONS and takes dead ones out before their status goes
/// stale (see [`crate::probe`]).
async fn probe_servers(
    board: Arc<boxless_core::StatusBoard>,
    sock: UdpSocket,
    s: crate::probe::ProbeSettings,
) {
    let local = match sock.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut p = crate::probe::Prober::new(std::time::Instant::now(), board.slots.len(), s);
    let mut buf = vec![0u8; 8192];
    loop {
        let now = std::time::Instant::now();
        p.handle_timeout(now);
        while let Some((i, seq)) = p.poll_probe(now) {
            let to = board.slots[i].sip;
            let req = format!(
                "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKprobe{seq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:router@{local}>;tag=probe\r\nTo: <sip:{to}>\r\nCall-ID: probe-{seq}@{local}\r\nCSeq: {} OPTIONS\r\nContent-Length: 0\r\n\r\n",
                seq % (1 << 31)
            );
            if let Err(e) = sock.send_to(req.as_bytes(), to).await {
                tracing::debug!(error = %e, %to, "probe not sent");
            }
        }
        while let Some(v) = p.poll_change() {
            let slot = &board.slots[v.server];
            slot.set_probe_down(v.down);
            if v.down {
                tracing::warn!(server = %slot.id, "server does not answer OPTIONS: taken out");
            } else {
                tracing::info!(server = %slot.id, "server answers OPTIONS again");
            }
        }
        let wake = p.poll_timeout().unwrap_or(now + s.interval);
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                // Only our servers answer probes; anything else on this port is noise.
                let ours = |a: SocketAddr| {
                    a.port() == from.port() && (a.ip() == from.ip() || a.ip().is_unspecified())
                };
                if !board.slots.iter().any(|s| ours(s.sip)) {
                    continue;
                }
                let Ok(m) = Message::parse(&buf[..n], false) else { continue };
                let (Some(code), Some(seq)) = (m.status(), m.call_id.strip_prefix("probe-").and_then(|r| r.split('@').next()).and_then(|s| s.parse().ok())) else {
                    continue;
                };
                if code >= 200 {
                    p.answered(seq, crate::probe::alive(code));
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// Counters resolved once, so the hot path does no registry look-up.
pub(crate) struct Counters {
    deposit: metrics::Counter,
    retrieval: metrics::Counter,
    pub(crate) too_large: metrics::Counter,
    pub(crate) unparseable: metrics::Counter,
    untrusted: metrics::Counter,
    flood: metrics::Counter,
}

impl Counters {
    pub(crate) fn new() -> Counters {
        Counters {
            deposit: metrics::counter!("boxless_router_calls_total", "kind" => "deposit"),
            retrieval: metrics::counter!("boxless_router_calls_total", "kind" => "retrieval"),
            too_large: metrics::counter!("boxless_router_dropped_total", "reason" => "too_large"),
            unparseable: metrics::counter!("boxless_router_dropped_total", "reason" => "unparseable"),
            untrusted: metrics::counter!("boxless_sip_refused_total", "reason" => "untrusted"),
            flood: metrics::counter!("boxless_sip_refused_total", "reason" => "flood"),
        }
    }

    /// Asks the trust boundary about `msg` from `src`: None when it goes on, else the
    /// refusal to write for it (counted; `Absorb` when nothing is to be answered).
    pub(crate) fn gate(
        &self,
        core: &RouterCore,
        msg: &Message<'_>,
        src: std::net::IpAddr,
        now: u64,
    ) -> Option<Verdict> {
        let a = core.admit(msg, src, now);
        match a {
            Admission::Pass => return None,
            Admission::Flood => {
                self.flood.increment(1);
                tracing::debug!(%src, "INVITE over the peer's rate: 503");
            }
            Admission::Forbidden | Admission::Drop => {
                self.untrusted.increment(1);
                tracing::debug!(%src, "untrusted source refused");
            }
        }
        Some(RouterCore::refuse(a))
    }

    fn count(&self, v: &Verdict) {
        match v {
            Verdict::Route {
                retrieval: false, ..
            } => self.deposit.increment(1),
            Verdict::Route {
                retrieval: true, ..
            } => self.retrieval.increment(1),
            Verdict::Respond { code, .. } if *code >= 300 => {
                metrics::counter!("boxless_router_rejected_total", "code" => code.to_string())
                    .increment(1)
            }
            _ => {}
        }
    }
}

/// The redirect hot path: one blocking thread per UDP socket, taking what waits in it by
/// one system call and sending the replies to it by another
/// ([`boxless_net::batch::Datagrams`]).
fn redirect_udp(core: Arc<RouterCore>, sock: std::net::UdpSocket, max: usize, mut rng: Rng) {
    let counters = Counters::new();
    let mut io = boxless_net::batch::Datagrams::new(max);
    let mut out = Vec::with_capacity(2048);
    let mut scratch = String::with_capacity(256);
    loop {
        let n = match io.recv(&sock) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive");
                continue;
            }
        };
        for i in 0..n {
            let (bytes, src) = io.get(i);
            let Some(src) = src else { continue };
            if bytes.len() > max {
                counters.too_large.increment(1);
                continue;
            }
            if is_ack(bytes) {
                // Whatever else it holds, an ACK is never answered (RFC 3261 §17.2.1)
                // and changes nothing here: a stateless redirect has no transaction
                // for it to end. Half of a redirected call's requests are these, so
                // they are not parsed; a stranger's is still counted as refused.
                if !core.gate.peers.allows(src.ip()) {
                    counters.untrusted.increment(1);
                }
                continue;
            }
            let Ok(msg) = Message::parse(bytes, false) else {
                counters.unparseable.increment(1);
                continue;
            };
            let Some(target) = msg.reply_via().map(|v| response_target(&v, src)) else {
                continue;
            };
            let now = now_ms();
            let v = counters
                .gate(&core, &msg, src.ip(), now)
                .unwrap_or_else(|| core.decide(&msg, now, &mut rng));
            counters.count(&v);
            if core.write(&msg, v, &mut scratch, &mut out) {
                io.queue(&sock, &out, target);
            }
        }
        io.flush(&sock);
    }
}

/// A request line that starts `ACK ` (methods are case-sensitive, RFC 3261 §7.1).
fn is_ack(datagram: &[u8]) -> bool {
    datagram.starts_with(b"ACK ")
}

async fn stream_accept(
    core: Arc<RouterCore>,
    l: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max: usize,
    seed: u64,
    proxy: Option<mpsc::Sender<ProxyInput>>,
) {
    let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let gate = core.clone();
    boxless_net::accept_sip(
        l,
        tls,
        max,
        move |ip| gate.gate.peers.allows(ip),
        move |conn, peer, trusted| {
            let k = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let rng = if seed == 0 {
                Rng::from_entropy()
            } else {
                Rng::seeded(seed ^ (k << 8))
            };
            stream_conn(core.clone(), conn, peer, trusted, rng, proxy.clone())
        },
    )
    .await;
}

async fn stream_conn(
    core: Arc<RouterCore>,
    mut conn: boxless_net::TcpSip,
    peer: SocketAddr,
    trusted: bool,
    mut rng: Rng,
    proxy: Option<mpsc::Sender<ProxyInput>>,
) {
    let mut out = Vec::with_capacity(2048);
    let mut scratch = String::new();
    let counters = Counters::new();
    while let Some(bytes) = conn.next().await {
        // A trusted peer's messages go to the proxy task unparsed: it parses each once
        // and runs the flood guard there.
        if trusted && let Some(p) = &proxy {
            let _ = p.try_send(ProxyInput::Datagram {
                bytes,
                src: peer,
                reply: Some(conn.writer.clone()),
            });
            continue;
        }
        let Ok(msg) = Message::parse(&bytes, true) else {
            counters.unparseable.increment(1);
            continue;
        };
        let now = now_ms();
        if let Some(refusal) = counters.gate(&core, &msg, peer.ip(), now) {
            if core.write(&msg, refusal, &mut scratch, &mut out) {
                let _ = conn.writer.try_send(out.clone());
            }
            if !trusted {
                break; // one answer, then the connection closes
            }
            continue;
        }
        let v = core.decide(&msg, now, &mut rng);
        counters.count(&v);
        if core.write(&msg, v, &mut scratch, &mut out) {
            let _ = conn.writer.try_send(out.clone());
        }
    }
}

/// Where the proxy answers a caller.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Over the router's UDP socket to this address.
    Udp(SocketAddr),
    /// Over this TCP connection.
    Tcp(mpsc::Sender<Vec<u8>>),
}

/// Input for the proxy task.
#[derive(Debug)]
pub enum ProxyInput {
    /// A message received on a TCP connection (`reply`: its writer queue; None answers
    /// over UDP to `src`). UDP itself is read by the proxy task.
    Datagram {
        /// The bytes.
        bytes: Vec<u8>,
        /// Who sent it.
        src: SocketAddr,
        /// The TCP connection it came on.
        reply: Option<mpsc::Sender<Vec<u8>>>,
    },
}

/// The proxy task: owns the transactions, sends through the router's UDP socket.
async fn run_proxy(
    core: Arc<RouterCore>,
    sock: Arc<UdpSocket>,
    mut rx: mpsc::Receiver<ProxyInput>,
    rng: Rng,
    s: ProxySettings,
    local: SocketAddr,
    max_message: usize,
) {
    let mut p: Proxy<Reply> = Proxy::new(core.clone(), local, s, rng);
    // UDP is read here, in the task that owns the transactions: no copy, no hand-off.
    let mut buf = vec![0u8; 65_536];
    let mut refusal = Vec::with_capacity(512);
    let mut scratch = String::new();
    let transactions = metrics::gauge!("boxless_router_transactions");
    let counters = Counters::new();
    let mut conns = Streams::default();
    loop {
        let deadline = p.poll_timeout();
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, src) = match r {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!(error = %e, "UDP receive");
                        continue;
                    }
                };
                if n > max_message {
                    counters.too_large.increment(1);
                    continue;
                }
                let bytes = &buf[..n];
                let Ok(msg) = Message::parse(bytes, false) else {
                    counters.unparseable.increment(1);
                    continue;
                };
                // Responses are matched by branch; requests answer per §18.2.2.
                let target = msg.reply_via().map_or(src, |v| response_target(&v, src));
                let now = now_ms();
                match counters.gate(&core, &msg, src.ip(), now) {
                    None => p.handle_parsed(Instant::now(), now, &msg, bytes, Reply::Udp(target)),
                    Some(v) => {
                        refusal.clear();
                        if core.write(&msg, v, &mut scratch, &mut refusal) {
                            let _ = sock.send_to(&refusal, target).await;
                        }
                    }
                }
            }
            input = rx.recv() => {
                // Streams (TCP connections) hand their messages over with a reply queue.
                let Some(ProxyInput::Datagram { bytes, src, reply }) = input else { return };
                let Ok(msg) = Message::parse(&bytes, reply.is_some()) else {
                    counters.unparseable.increment(1);
                    continue;
                };
                let now = now_ms();
                if let Some(v) = counters.gate(&core, &msg, src.ip(), now) {
                    refusal.clear();
                    if let Some(tx) = &reply
                        && core.write(&msg, v, &mut scratch, &mut refusal)
                    {
                        let _ = tx.try_send(refusal.clone());
                    }
                    continue;
                }
                let reply = match reply {
                    Some(tx) => {
                        conns.learn(&msg, src, &tx);
                        Reply::Tcp(tx)
                    }
                    None => Reply::Udp(src),
                };
                p.handle_parsed(Instant::now(), now, &msg, &bytes, reply);
            }
            _ = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                p.handle_timeout(Instant::now(), now_ms());
            }
        }
        for o in p.drain() {
            match o {
                Output::ToCaller {
                    bytes,
                    reply: Reply::Udp(a),
                } => {
                    let _ = sock.send_to(&bytes, a).await;
                }
                Output::ToCaller {
                    bytes,
                    reply: Reply::Tcp(tx),
                } => {
                    let _ = tx.try_send(bytes);
                }
                Output::ToServer { bytes, addr } => {
                    let _ = sock.send_to(&bytes, addr).await;
                }
                Output::Relay { bytes, addr } => match conns.get(addr) {
                    // A peer on TCP or TLS is reached on its connection (RFC 5923's reuse).
                    Some(tx) => {
                        let _ = tx.try_send(bytes);
                    }
                    None => {
                        let _ = sock.send_to(&bytes, addr).await;
                    }
                },
            }
        }
        transactions.set(p.len() as f64);
    }
}

/// The proxy task's table of open TCP/TLS connections by the addresses a peer is known
/// by: its source, its top Via's sent-by and its Contact (IP literals). Requests and
/// responses loose-routed to one of those go on that connection, not over UDP. Bounded;
/// closed connections are pruned when it fills.
#[derive(Debug, Default)]
struct Streams(std::collections::HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>);

impl Streams {
    const MAX: usize = 3 * boxless_net::MAX_TCP_CONNECTIONS;

    fn learn(&mut self, msg: &Message<'_>, src: SocketAddr, tx: &mpsc::Sender<Vec<u8>>) {
        let via = msg.top_via().and_then(|v| {
            let ip = v
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()?;
            Some(SocketAddr::new(ip, v.port.unwrap_or(5060)))
        });
        let contact = msg
            .header_values("contact")
            .next()
            .and_then(boxless_sip::NameAddr::parse)
            .and_then(|n| boxless_sip::Uri::parse(n.uri))
            .and_then(|u| u.ip_addr());
        for addr in [Some(src), via, contact].into_iter().flatten() {
            if self.0.get(&addr).is_some_and(|t| t.same_channel(tx)) {
                continue;
            }
            if self.0.len() >= Self::MAX {
                self.0.retain(|_, t| !t.is_closed());
                if self.0.len() >= Self::MAX {
                    return;
                }
            }
            self.0.insert(addr, tx.clone());
        }
    }

    fn get(&self, addr: SocketAddr) -> Option<&mpsc::Sender<Vec<u8>>> {
        self.0.get(&addr).filter(|t| !t.is_closed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(from: SocketAddr) -> Vec<u8> {
        format!(
            "OPTIONS sip:r@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS {from};branch=z9hG4bK1\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:r@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\
Contact: <sip:a@{from};transport=tls>\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn the_connection_table_is_bounded_and_forgets_closed_connections() {
        let mut t = Streams::default();
        let mut live = Vec::new();
        for i in 0..Streams::MAX as u32 {
            let src = SocketAddr::from(([127, 0, (i >> 8) as u8, i as u8], 6000));
            let (tx, rx) = mpsc::channel(1);
            live.push(rx);
            // Via and Contact name the same address as the source: one entry each.
            t.learn(&Message::parse(&options(src), true).unwrap(), src, &tx);
        }
        assert_eq!(t.0.len(), Streams::MAX);
        let extra: SocketAddr = "127.1.0.1:6000".parse().unwrap();
        let (tx, _rx) = mpsc::channel(1);
        t.learn(&Message::parse(&options(extra), true).unwrap(), extra, &tx);
        assert_eq!(
            t.0.len(),
            Streams::MAX,
            "full of live connections: not added"
        );
        assert!(t.get(extra).is_none());
        // The peers hang up: their entries go when room is needed.
        drop(live);
        t.learn(&Message::parse(&options(extra), true).unwrap(), extra, &tx);
        assert_eq!(t.0.len(), 1);
        assert!(t.get(extra).is_some());
    }
}
