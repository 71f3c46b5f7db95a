//! The router's tokio driver: one task for the UDP socket, one per TCP connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use boxless_core::{Rng, RouterMode, now_ms};
use boxless_sip::{Frame, Message, frame, response_target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Binds UDP and TCP on `settings.listen` and serves until the runtime stops.
pub async fn start(core: Arc<RouterCore>, settings: RouterSettings) -> std::io::Result<SocketAddr> {
    let udp = Arc::new(UdpSocket::bind(settings.listen).await?);
    let tcp = TcpListener::bind(udp.local_addr()?).await?;
    let local = udp.local_addr()?;
    let rng = |salt: u64| {
        if settings.rng_seed == 0 {
            Rng::from_entropy()
        } else {
            Rng::seeded(settings.rng_seed ^ salt)
        }
    };
    let proxy_tx = if core.mode == RouterMode::Proxy {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(proxy::run(
            core.clone(),
            udp.clone(),
            rx,
            rng(1),
            settings.proxy.clone(),
            local,
        ));
        Some(tx)
    } else {
        None
    };
    tokio::spawn(udp_loop(
        core.clone(),
        udp,
        settings.max_message,
        rng(2),
        proxy_tx.clone(),
    ));
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

async fn udp_loop(
    core: Arc<RouterCore>,
    sock: Arc<UdpSocket>,
    max: usize,
    mut rng: Rng,
    proxy: Option<mpsc::Sender<ProxyInput>>,
) {
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(2048);
    let mut scratch = String::with_capacity(256);
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive");
                continue;
            }
        };
        if n > max {
            metrics::counter!("boxless_router_dropped_total", "reason" => "too_large").increment(1);
            continue;
        }
        let Ok(msg) = Message::parse(&buf[..n], false) else {
            metrics::counter!("boxless_router_dropped_total", "reason" => "unparseable")
                .increment(1);
            continue;
        };
        if let Some(p) = &proxy {
            let _ = p.try_send(ProxyInput::Datagram {
                bytes: buf[..n].to_vec(),
                src,
                reply: None,
            });
            continue;
        }
        let Some(target) = msg.reply_via().map(|v| response_target(&v, src)) else {
            continue;
        };
        let v = core.decide(&msg, now_ms(), &mut rng);
        count(&v);
        if core.write(&msg, v, &mut scratch, &mut out) {
            let _ = sock.send_to(&out, target).await;
        }
    }
}

fn count(v: &Verdict) {
    match v {
        Verdict::Route {
            retrieval: false, ..
        } => metrics::counter!("boxless_router_calls_total", "kind" => "deposit").increment(1),
        Verdict::Route {
            retrieval: true, ..
        } => metrics::counter!("boxless_router_calls_total", "kind" => "retrieval").increment(1),
        Verdict::Respond { code, .. } if *code >= 300 => {
            metrics::counter!("boxless_router_rejected_total", "code" => code.to_string())
                .increment(1)
        }
        _ => {}
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
    let (mut rd, mut wr) = s.into_split();
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(64);
    tokio::spawn(async move {
        while let Some(b) = wrx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 8192];
    let mut out = Vec::with_capacity(2048);
    let mut scratch = String::new();
    loop {
        match frame(&buf, max) {
            Frame::Complete { skip, len } => {
                let bytes = &buf[skip..skip + len];
                if let Ok(msg) = Message::parse(bytes, true) {
                    if let Some(p) = &proxy {
                        let _ = p.try_send(ProxyInput::Datagram {
                            bytes: bytes.to_vec(),
                            src: peer,
                            reply: Some(wtx.clone()),
                        });
                    } else {
                        let v = core.decide(&msg, now_ms(), &mut rng);
                        count(&v);
                        if core.write(&msg, v, &mut scratch, &mut out) {
                            let _ = wtx.try_send(out.clone());
                        }
                    }
                }
                buf.drain(..skip + len);
                continue;
            }
            Frame::Incomplete { .. } => {}
            Frame::Invalid => {
                metrics::counter!("boxless_router_dropped_total", "reason" => "bad_framing")
                    .increment(1);
                return;
            }
        }
        match tokio::time::timeout(Duration::from_secs(300), rd.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
