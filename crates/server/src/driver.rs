//! The messaging server's socket driver: one task per SIP socket (UDP, and one per TCP or
//! TLS connection). Each message is parsed and handed to the sans-IO [`Endpoint`];
//! this file only acts on its [`Dispatch`]. Nothing here waits on the store: a new call's
//! task loads what the call needs itself ([`crate::task`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use boxless_core::now_ms;
use boxless_media::RtpSender;
use boxless_sip::parties::Target;
use boxless_sip::{Dialog, Local, Message, OwnedMessage};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use crate::admission::{self, Admitted, Context, Refusal};
use crate::endpoint::{Dispatch, Dropped};
use crate::leg::LegSetup;
use crate::server::MessagingServer;
use crate::task::Start;
use crate::wire::{CallEvent, SipTx, refuse, respond};

impl MessagingServer {
    pub(crate) async fn udp_loop(self: Arc<Self>, sock: Arc<UdpSocket>) {
        let tx = SipTx::Udp(sock.clone());
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, src) = match sock.recv_from(&mut buf).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive");
                    continue;
                }
            };
            if n > self.max_message {
                metrics::counter!("boxless_sip_dropped_total", "reason" => "too_large")
                    .increment(1);
                continue;
            }
            self.on_message(&buf[..n], src, &tx, false).await;
        }
    }

    pub(crate) async fn stream_accept(
        self: Arc<Self>,
        l: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) {
        let gate = self.clone();
        boxless_net::accept_sip(
            l,
            tls,
            self.max_message,
            move |ip| gate.peers.allows(ip),
            move |conn, peer, trusted| self.clone().stream_conn(conn, peer, trusted),
        )
        .await;
    }

    async fn stream_conn(
        self: Arc<Self>,
        mut conn: boxless_net::TcpSip,
        peer: SocketAddr,
        trusted: bool,
    ) {
        let tx = SipTx::Stream(conn.writer.clone(), conn.tls);
        while let Some(msg) = conn.next().await {
            self.on_message(&msg, peer, &tx, true).await;
            if !trusted {
                break; // one answer (403), then the connection closes
            }
        }
    }

    /// Parses one message, asks the endpoint, and does what it says. Awaits nothing but a
    /// send on the SIP socket the message came from.
    async fn on_message(self: &Arc<Self>, bytes: &[u8], src: SocketAddr, tx: &SipTx, stream: bool) {
        let Ok(msg) = Message::parse(bytes, stream) else {
            metrics::counter!("boxless_sip_dropped_total", "reason" => "unparseable").increment(1);
            return;
        };
        let dispatch = {
            let slot = &self.board.slots[self.slot];
            let view = slot.view();
            let ctx = Context {
                draining: self.draining.load(Ordering::Relaxed),
                active: view.active,
                capacity: view.capacity,
                numbering: &self.numbering,
                links: crate::admission::Links::Board {
                    board: &self.board,
                    me: self.slot,
                },
                min_se: boxless_sip::session::MIN_SE,
            };
            self.lock_endpoint().handle(now_ms(), src, &msg, &ctx)
        };
        match dispatch {
            Dispatch::Reply(r) => {
                if let Some(why) = r.refused {
                    metrics::counter!("boxless_sip_refused_total", "reason" => why).increment(1);
                }
                respond(tx, &msg, r.code, r.reason, r.to, r.extra.as_bytes()).await;
            }
            Dispatch::ToCall { call, reply_to } => {
                let Some(msg) = OwnedMessage::copy_of(&msg, bytes) else {
                    return;
                };
                let ev = CallEvent { msg, reply_to };
                if call.try_send(ev).is_err() {
                    metrics::counter!("boxless_sip_dropped_total", "reason" => "call_busy")
                        .increment(1);
                }
            }
            Dispatch::Admit { admitted, reply_to } => {
                self.start_call(&msg, bytes, admitted, src, reply_to, tx, stream)
                    .await;
            }
            Dispatch::Drop(d) => count_drop(d),
        }
    }

    /// Starts the task of an admitted call: binds its RTP socket, makes its dialog, enters
    /// it in the endpoint's table. The task loads the rest and answers the INVITE.
    #[allow(clippy::too_many_arguments)]
    async fn start_call(
        self: &Arc<Self>,
        msg: &Message<'_>,
        bytes: &[u8],
        admitted: Admitted,
        src: SocketAddr,
        reply_to: SocketAddr,
        tx: &SipTx,
        reliable: bool,
    ) {
        let Some((rtp, port)) = self.bind_rtp() else {
            return refuse(tx, msg, reply_to, admission::busy()).await;
        };
        let user = match admitted.target {
            Target::Retrieval(link) => link,
            Target::Deposit(recipient) => recipient,
        };
        let (tag, branch, ssrc, seq, ts, sess) = {
            let mut r = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            (
                format!("{:x}", r.next_u64()),
                format!("z9hG4bK{:x}", r.next_u64()),
                r.next_u64() as u32,
                r.next_u64() as u16,
                r.next_u64() as u32,
                r.next_u64() >> 33,
            )
        };
        // Over TLS our Contact and Via name the TLS listener (RFC 5630: `transport=tls`,
        // `sips:` when the caller asked for it).
        let (contact, sent_by) = match (tx.is_tls(), self.tls_listen) {
            (true, Some(t)) => {
                let sips = msg.request_uri().is_some_and(|u| u.starts_with("sips:"));
                let scheme = if sips { "sips" } else { "sip" };
                (format!("{scheme}:{user}@{t};transport=tls"), t.to_string())
            }
            _ => (
                format!("sip:{user}@{}", self.listen),
                self.listen.to_string(),
            ),
        };
        let local = Local {
            tag,
            contact,
            transport: tx.via_transport(),
            sent_by,
            branch_prefix: branch,
        };
        let dialog = match Dialog::uas(msg, local) {
            Ok(d) => d,
            Err(e) => {
                // Admission checked what a dialog needs; this is the belt to its braces.
                self.release_port(port);
                let r = Refusal {
                    code: 400,
                    reason: "Bad Request",
                    extra: format!("Warning: 399 boxless \"{e}\"\r\n"),
                };
                return refuse(tx, msg, reply_to, r).await;
            }
        };
        let (events_tx, events) = mpsc::channel(32);
        if !self
            .lock_endpoint()
            .insert(msg.call_id, dialog.id().clone(), events_tx)
        {
            self.release_port(port);
            return;
        }
        self.board.slots[self.slot].call_started();
        metrics::counter!("boxless_calls_total", "server" => self.id.clone()).increment(1);
        if admitted.offer.is_none() {
            metrics::counter!("boxless_late_offers_total").increment(1);
        }
        let Some(invite) = OwnedMessage::copy_of(msg, bytes) else {
            self.release_port(port);
            return;
        };
        let start = Start {
            server: self.clone(),
            call_id: msg.call_id.to_string(),
            invite,
            admitted,
            dialog,
            leg: LegSetup {
                reply_to,
                fallback_hop: src,
                reliable,
                media: SocketAddr::new(self.listen.ip(), port),
                session_id: sess,
                timers: self.timers,
                min_se: boxless_sip::session::MIN_SE,
            },
            rtp_tx: RtpSender::new(boxless_media::Codec::Pcmu, 0, ssrc, seq, ts),
            sip: tx.clone(),
            rtp,
            port,
            events,
        };
        let span = tracing::info_span!("call", call_id = %msg.call_id, server = %self.id, recipient = %user);
        self.shards
            .spawn(port, tracing::Instrument::instrument(start.run(), span));
    }
}

fn count_drop(d: Dropped) {
    let (name, reason) = match d {
        Dropped::NoVia => ("boxless_sip_dropped_total", "no_via"),
        Dropped::Untrusted => ("boxless_sip_refused_total", "untrusted"),
        Dropped::NotInDialog => ("boxless_sip_refused_total", "no_dialog"),
        Dropped::Absorbed => return,
    };
    metrics::counter!(name, "reason" => reason).increment(1);
}
