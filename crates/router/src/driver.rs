//! The router's tokio driver: one task for the UDP socket, one per TCP connection.

use std::net::SocketAddr;
use std::sync::Arc;

use boxless_core::{Rng, RouterMode, now_ms};
use boxless_sip::{Message, response_target};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::decide::{RouterCore, Verdict};
use crate::proxy::{self, ProxyInput};

/// Router settings beyond the decision logic.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// UDP and TCP address.
    pub listen: SocketAddr,
    /// Largest SIP message accepted.
    pub max_message: usize,
    /// RNG seed (0: from the OS).
    pub rng_seed: u64,
    /// Proxy timers.
    pub proxy: proxy::ProxySettings,
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
        tokio::spawn(proxy::run(
            core.clone(),
            udp.clone(),
            rx,
            rng(1),
            settings.proxy.clone(),
            local,
        ));
        tokio::spawn(udp_to_proxy(udp, settings.max_message, tx.clone()));
        Some(tx)
    } else {
        let (core, max, rng) = (core.clone(), settings.max_message, rng(2));
        std::thread::Builder::new()
            .name("router-udp".into())
            .spawn(move || redirect_udp(core, std_udp, max, rng))?;
        None
    };
    tokio::spawn(tcp_accept(
        core,
        tcp,
        settings.max_message,
        settings.rng_seed,
        proxy_tx,
    ));
    tracing::info!(%local, "router up");
    Ok(local)
}

/// Counters resolved once, so the hot path does no registry look-up.
struct Counters {
    deposit: metrics::Counter,
    retrieval: metrics::Counter,
    too_large: metrics::Counter,
    unparseable: metrics::Counter,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            deposit: metrics::counter!("boxless_router_calls_total", "kind" => "deposit"),
            retrieval: metrics::counter!("boxless_router_calls_total", "kind" => "retrieval"),
            too_large: metrics::counter!("boxless_router_dropped_total", "reason" => "too_large"),
            unparseable: metrics::counter!("boxless_router_dropped_total", "reason" => "unparseable"),
        }
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

/// The redirect hot path: one blocking thread per UDP socket.
fn redirect_udp(core: Arc<RouterCore>, sock: std::net::UdpSocket, max: usize, mut rng: Rng) {
    let counters = Counters::new();
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(2048);
    let mut scratch = String::with_capacity(256);
    loop {
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive");
                continue;
            }
        };
        if n > max {
            counters.too_large.increment(1);
            continue;
        }
        let Ok(msg) = Message::parse(&buf[..n], false) else {
            counters.unparseable.increment(1);
            continue;
        };
        let Some(target) = msg.reply_via().map(|v| response_target(&v, src)) else {
            continue;
        };
        let v = core.decide(&msg, now_ms(), &mut rng);
        counters.count(&v);
        if core.write(&msg, v, &mut scratch, &mut out) {
            let _ = sock.send_to(&out, target);
        }
    }
}

/// Proxy mode: the UDP socket's reader feeds the proxy task.
async fn udp_to_proxy(sock: Arc<UdpSocket>, max: usize, proxy: mpsc::Sender<ProxyInput>) {
    let counters = Counters::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive");
                continue;
            }
        };
        if n > max {
            counters.too_large.increment(1);
            continue;
        }
        if proxy
            .try_send(ProxyInput::Datagram {
                bytes: buf[..n].to_vec(),
                src,
                reply: None,
            })
            .is_err()
        {
            metrics::counter!("boxless_router_dropped_total", "reason" => "proxy_busy")
                .increment(1);
        }
    }
}

async fn tcp_accept(
    core: Arc<RouterCore>,
    l: TcpListener,
    max: usize,
    seed: u64,
    proxy: Option<mpsc::Sender<ProxyInput>>,
) {
    let mut n = 0u64;
    loop {
        let Ok((s, peer)) = l.accept().await else {
            continue;
        };
        n += 1;
        let rng = if seed == 0 {
            Rng::from_entropy()
        } else {
            Rng::seeded(seed ^ (n << 8))
        };
        tokio::spawn(tcp_conn(core.clone(), s, peer, max, rng, proxy.clone()));
    }
}

async fn tcp_conn(
    core: Arc<RouterCore>,
    s: TcpStream,
    peer: SocketAddr,
    max: usize,
    mut rng: Rng,
    proxy: Option<mpsc::Sender<ProxyInput>>,
) {
    let mut conn = boxless_net::TcpSip::new(s, max);
    let mut out = Vec::with_capacity(2048);
    let mut scratch = String::new();
    let counters = Counters::new();
    while let Some(bytes) = conn.next().await {
        if let Some(p) = &proxy {
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
        let v = core.decide(&msg, now_ms(), &mut rng);
        counters.count(&v);
        if core.write(&msg, v, &mut scratch, &mut out) {
            let _ = conn.writer.try_send(out.clone());
        }
    }
}
