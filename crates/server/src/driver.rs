//! The messaging server's tokio driver: one task per SIP socket (UDP, and one per TCP
//! connection), one task per call owning its RTP socket and its sans-IO [`CallFlow`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxless_core::config::{AccessCodePolicy, AudioFormat, Greeting, TrustCallerId};
use boxless_core::recipient::{Channel, Language, Languages};
use boxless_core::{
    Admission, Checked, Gate, Numbering, PhoneNumber, Rng, ServerSpec, ServerState, StatusBoard,
    now_ms,
};
use boxless_media::{Prompts, RtpSender};
use boxless_net::rtp::RtpSocket;
use boxless_notify::NotifierHandle;
use boxless_notify::{email, text, webhook};
use boxless_sip::parties::Target;
use boxless_sip::{
    Dialog, DialogId, Local, Message, Method, NameAddr, SipTimers, response_target, write_response,
};
use boxless_store::{Arrival, Directory, MessageState, Recording, Retention, Store};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use crate::admission::{self, Context, Refusal};
use crate::call::{
    Answer, CallFlow, CallSettings, Deposit, EndReason, Output, Retrieval, RetrievalSetup,
};
use crate::intake::{DRAIN_MAX, Tape, drain_due, drain_period};
use crate::leg::{ALLOW, LegSetup};
use crate::menu::{Mark, Menu, MenuMessage, MenuSettings};
use crate::shard::Shards;

/// Where SIP bytes for a peer go out.
#[derive(Debug, Clone)]
pub enum SipTx {
    /// The server's UDP socket.
    Udp(Arc<UdpSocket>),
    /// One TCP or TLS connection's writer (`true`: TLS).
    Stream(mpsc::Sender<Vec<u8>>, bool),
}

impl SipTx {
    async fn send(&self, bytes: &[u8], to: SocketAddr) {
        match self {
            SipTx::Udp(s) => {
                if let Err(e) = s.send_to(bytes, to).await {
                    tracing::debug!(error = %e, %to, "SIP send failed");
                }
            }
            SipTx::Stream(tx, _) => {
                let _ = tx.try_send(bytes.to_vec());
            }
        }
    }

    fn via_transport(&self) -> &'static str {
        match self {
            SipTx::Udp(_) => "UDP",
            SipTx::Stream(_, false) => "TCP",
            SipTx::Stream(_, true) => "TLS",
        }
    }

    fn is_tls(&self) -> bool {
        matches!(self, SipTx::Stream(_, true))
    }
}

/// A call as the SIP socket tasks see it: where its messages go, and the identity an
/// in-dialog message must carry to reach it ([`DialogId::matches`]).
#[derive(Debug)]
struct CallEntry {
    tx: mpsc::Sender<CallEvent>,
    id: DialogId,
}

/// A SIP message for a call task.
#[derive(Debug)]
struct CallEvent {
    bytes: Vec<u8>,
    reply_to: SocketAddr,
    stream: bool,
}

/// One running messaging server.
#[derive(Debug)]
pub struct MessagingServer {
    id: String,
    listen: SocketAddr,
    tls_listen: Option<SocketAddr>,
    slot: usize,
    board: Arc<StatusBoard>,
    numbering: Numbering,
    store: Arc<Store>,
    directory: Arc<Directory>,
    notifier: Arc<NotifierHandle>,
    prompts: Arc<Prompts>,
    tone: Arc<[i16]>,
    greeting: Greeting,
    settings: CallSettings,
    timers: SipTimers,
    policy: AccessCodePolicy,
    utc_offset: i32,
    languages: Languages,
    max_message: usize,
    calls: Mutex<HashMap<String, CallEntry>>,
    ports: Mutex<Vec<u16>>,
    /// The threads the calls run on ([`Shards`]).
    shards: Arc<Shards>,
    rng: Mutex<Rng>,
    draining: AtomicBool,
    stopped: AtomicBool,
    ttl: Duration,
    max_wrong_codes: u32,
    max_wrong_codes_per_link: u32,
    lockout_ms: u64,
    trust_caller_id: TrustCallerId,
    gate: Gate,
    missed_call_merge_ms: u64,
    fallback_after_ms: u64,
    /// `[email] smtp` is set.
    email_on: bool,
    /// A webhook key signs notices to recipients' own webhooks.
    webhook_on: bool,
}

impl MessagingServer {
    /// The language of `n`'s texts: its entry's, else its country's (blocking: reads the
    /// recipients' copy).
    fn language(&self, n: PhoneNumber) -> Language {
        let prefs = self.directory.get(n).ok().flatten();
        self.languages.for_number(n, prefs.as_ref())
    }

    /// [`Self::language`] off the async threads.
    async fn language_async(self: &Arc<Self>, n: PhoneNumber) -> Language {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.language(n))
            .await
            .unwrap_or_default()
    }

    /// Binds the server's SIP sockets and starts its tasks (SIP, heartbeat).
    pub async fn start(
        cfg: &Checked,
        spec: &ServerSpec,
        board: Arc<StatusBoard>,
        store: Arc<Store>,
        directory: Arc<Directory>,
        notifier: Arc<NotifierHandle>,
        prompts: Arc<Prompts>,
    ) -> std::io::Result<Arc<MessagingServer>> {
        let c = &cfg.config;
        let slot = board
            .slots
            .iter()
            .position(|s| s.id == spec.config.id)
            .ok_or_else(|| std::io::Error::other("server missing from the status board"))?;
        let ports: Vec<u16> = (spec.rtp_ports.0..=spec.rtp_ports.1)
            .filter(|p| p % 2 == 0)
            .rev()
            .collect();
        let server = Arc::new(MessagingServer {
            id: spec.config.id.clone(),
            listen: spec.config.listen,
            tls_listen: spec.config.tls_listen,
            slot,
            board,
            numbering: cfg.numbering.clone(),
            store,
            directory,
            notifier,
            tone: prompts.tone().into(),
            prompts,
            greeting: c.messages.greeting,
            timers: SipTimers {
                t1: Duration::from_millis(c.sip.t1_ms),
                t2: Duration::from_millis(c.sip.t2_ms),
            },
            settings: CallSettings {
                max_samples: c.messages.max_seconds as usize * 8000,
                min_samples: c.messages.min_seconds as usize * 8000,
                silence: Duration::from_secs(c.messages.silence_seconds as u64),
                voice_rms: 300.0,
                keep_g711: c.messages.audio_format == AudioFormat::G711,
            },
            policy: c.retrieval.access_code,
            utc_offset: c.sms.utc_offset_minutes,
            languages: cfg.languages.clone(),
            max_message: c.sip.max_message_bytes,
            calls: Mutex::new(HashMap::new()),
            ports: Mutex::new(ports),
            shards: Shards::process()?,
            rng: Mutex::new(Rng::from_entropy()),
            draining: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            ttl: Duration::from_secs(c.control.ttl_seconds),
            max_wrong_codes: c.retrieval.max_wrong_codes,
            max_wrong_codes_per_link: c.retrieval.max_wrong_codes_per_link,
            lockout_ms: u64::from(c.retrieval.lockout_minutes) * 60_000,
            trust_caller_id: c.retrieval.trust_caller_id,
            gate: Gate::new(
                cfg.peers.clone(),
                c.sip.max_invites_per_second_per_peer,
                Rng::from_entropy().next_u64(),
            ),
            missed_call_merge_ms: u64::from(c.sms.missed_call_merge_minutes) * 60_000,
            fallback_after_ms: c.sms.fallback_after_seconds.saturating_mul(1000),
            email_on: !c.email.smtp.trim().is_empty(),
            webhook_on: cfg.secrets.webhook_secret.is_some(),
        });
        let udp = Arc::new(UdpSocket::bind(spec.config.listen).await?);
        let tcp = TcpListener::bind(spec.config.listen).await?;
        tokio::spawn(server.clone().udp_loop(udp));
        tokio::spawn(server.clone().stream_accept(tcp, None));
        if let Some(addr) = spec.config.tls_listen {
            let tls = boxless_net::tls::sip_server_config(
                std::path::Path::new(&c.sip.tls_cert),
                std::path::Path::new(&c.sip.tls_key),
            )
            .map_err(|e| std::io::Error::other(format!("sip.tls_cert: {e}")))?;
            let l = TcpListener::bind(addr).await?;
            tokio::spawn(
                server
                    .clone()
                    .stream_accept(l, Some(tokio_rustls::TlsAcceptor::from(tls))),
            );
            tracing::info!(server = %server.id, sip_tls = %addr, "SIP over TLS");
        }
        let me = server.clone();
        tokio::task::spawn_blocking(move || me.recover())
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(server.clone().heartbeat());
        tokio::spawn(server.clone().retention(Retention::days(
            c.messages.keep_heard_days,
            c.messages.keep_unheard_days,
        )));
        server.report();
        tracing::info!(server = %server.id, sip = %server.listen, "messaging server up");
        Ok(server)
    }

    /// Stores a finished recording as a message and queues its notices to the
    /// recipient's channels (blocking).
    fn deposit(&self, rec: Recording, keep: u64) -> bool {
        let recipient = rec.arrival().recipient;
        let (policy, offset) = (self.policy, self.utc_offset);
        // The recipient's entry says who gets the SMS; the copy answers even while
        // NATS is away, and no entry means the recipient alone.
        let prefs = self
            .directory
            .get(recipient)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "recipients' copy unreadable: SMS to the recipient only");
                None
            })
            .unwrap_or_default();
        let routes = prefs.routes(recipient, |c| match c {
            Channel::Sms => true,
            Channel::Email => self.email_on,
            Channel::Webhook => self.webhook_on,
        });
        if routes.len() < prefs.channels.len() {
            tracing::warn!(%recipient, "a channel of the recipient's entry is not configured on this server ([email] smtp, webhook.secret_file): left out");
        }
        let lang = self.languages.for_number(recipient, Some(&prefs));
        let render = |f: &boxless_store::SmsFacts<'_>, c: Channel| match c {
            Channel::Sms => text::message_sms(f, policy, offset, lang),
            Channel::Email => email::message_email(f, policy, offset, lang),
            Channel::Webhook => webhook::notice_body(f, &self.id),
        };
        match self
            .store
            .deposit_recording(rec, keep, &routes, self.fallback_after_ms, render)
        {
            Ok(m) => {
                tracing::info!(id = %m.id, duration_ms = m.duration_ms, link = %m.link_number, "message stored");
                metrics::counter!("boxless_messages_stored_total", "server" => self.id.clone())
                    .increment(1);
                self.notifier.wake.notify_one();
                self.notifier.wake_others.notify_one();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "message NOT stored");
                metrics::counter!("boxless_store_errors_total").increment(1);
                false
            }
        }
    }

    /// Queues a missed-call alert and drops the call's recording, if any (blocking).
    fn missed_call(&self, a: Arrival, rec: Option<Recording>) -> bool {
        let (recipient, caller, at) = (a.recipient, a.caller, a.received_at_ms);
        let offset = self.utc_offset;
        let lang = self.language(recipient);
        let render = |calls| text::missed_call_sms(caller, calls, at, offset, lang);
        let queued =
            self.store
                .missed_call(recipient, caller, at, self.missed_call_merge_ms, render);
        // Dropped only once the alert is durable: a crash in between alerts again (the
        // alerts of one caller merge), never not at all.
        if let Some(rec) = rec
            && let Err(e) = self.store.discard_recording(rec)
        {
            tracing::error!(error = %e, "a short recording's file NOT removed");
        }
        match queued {
            Ok(queued) => {
                metrics::counter!("boxless_missed_calls_total").increment(1);
                if queued {
                    self.notifier.wake.notify_one();
                } else {
                    metrics::counter!("boxless_sms_merged_total", "reason" => "missed_call_burst")
                        .increment(1);
                    tracing::info!(%recipient, "missed-call alert merged: the same caller's alert went out just now");
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "missed-call alert NOT stored");
                false
            }
        }
    }

    /// Deposits what a crash (or a stop) cut short: each recording long enough is a
    /// message, notified as any other; a shorter one a missed call (blocking).
    fn recover(&self) {
        let found = match self.store.interrupted() {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(server = %self.id, error = %e, "interrupted recordings NOT recovered");
                return;
            }
        };
        for rec in found {
            self.salvage(rec);
        }
    }

    /// Keeps a recording its call did not store: a message when long enough, else a
    /// missed call (blocking).
    fn salvage(&self, rec: Recording) {
        let min = self.settings.min_samples as u64 * u64::from(rec.rate()) / 8000;
        tracing::warn!(server = %self.id, id = %rec.id(), duration_ms = rec.duration_ms(), "keeping a recording cut short");
        metrics::counter!("boxless_recordings_recovered_total").increment(1);
        if rec.samples() >= min {
            self.deposit(rec, u64::MAX);
        } else {
            self.missed_call(rec.arrival(), Some(rec));
        }
    }

    /// The server's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.lock_calls().len()
    }

    /// Stops taking new calls (SIGTERM); calls in progress go on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.report();
    }

    /// Drained and about to exit: reports itself down so that routers forget it at once.
    pub fn stop(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.stopped.store(true, Ordering::Relaxed);
        self.report();
    }

    fn lock_calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, CallEntry>> {
        // Poisoning only follows a panic elsewhere; the map itself is always consistent.
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn report(&self) {
        let state = if self.stopped.load(Ordering::Relaxed) {
            ServerState::Down
        } else if self.draining.load(Ordering::Relaxed) {
            ServerState::Draining
        } else {
            ServerState::Up
        };
        let notifier_ok = self.notifier.healthy.load(Ordering::Relaxed);
        self.board.slots[self.slot].heartbeat(state, self.store.free_disk(), notifier_ok, now_ms());
    }

    async fn heartbeat(self: Arc<Self>) {
        let every = (self.ttl / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            let s = self.clone();
            let _ = tokio::task::spawn_blocking(move || s.report()).await;
        }
    }

    /// Applies retention once a minute: reminders before expiry, deletion after it.
    async fn retention(self: Arc<Self>, policy: Retention) {
        loop {
            let s = self.clone();
            let res = tokio::task::spawn_blocking(move || {
                let offset = s.utc_offset;
                let now = now_ms();
                if let Err(e) = s.store.prune_outbox(now) {
                    tracing::error!(error = %e, "pruning finished notifications failed");
                }
                s.store.sweep(now, &policy, |m, expires| {
                    let lang = s.language(m.recipient);
                    text::reminder_sms(m.caller, m.link_number, expires, offset, lang)
                })
            })
            .await;
            match res {
                Ok(Ok(done)) if done.deleted + done.reminded > 0 => {
                    tracing::info!(
                        deleted = done.deleted,
                        reminded = done.reminded,
                        "retention sweep"
                    );
                    if done.reminded > 0 {
                        self.notifier.wake.notify_one();
                    }
                }
                Ok(Err(e)) => tracing::error!(error = %e, "retention sweep failed"),
                _ => {}
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }

    async fn udp_loop(self: Arc<Self>, sock: Arc<UdpSocket>) {
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

    async fn stream_accept(
        self: Arc<Self>,
        l: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) {
        let gate = self.clone();
        boxless_net::accept_sip(
            l,
            tls,
            self.max_message,
            move |ip| gate.gate.peers.allows(ip),
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

    async fn on_message(self: &Arc<Self>, bytes: &[u8], src: SocketAddr, tx: &SipTx, stream: bool) {
        let msg = match Message::parse(bytes, stream) {
            Ok(m) => m,
            Err(_) => {
                metrics::counter!("boxless_sip_dropped_total", "reason" => "unparseable")
                    .increment(1);
                return;
            }
        };
        let Some(method) = msg.method() else {
            // Responses belong to a call (our BYE) or to nobody; only trusted peers' count.
            if msg.defect.is_none() && self.gate.response(src.ip()) == Admission::Pass {
                self.forward(&msg, bytes, src, stream, tx).await;
            }
            return;
        };
        let Some(via) = msg.reply_via() else {
            metrics::counter!("boxless_sip_dropped_total", "reason" => "no_via").increment(1);
            return;
        };
        let reply_to = response_target(&via, src);
        // The trust boundary first: strangers reach nothing, not even a parse error.
        let initial_invite =
            method == Method::Invite && NameAddr::parse(msg.to).and_then(|n| n.tag()).is_none();
        match self
            .gate
            .request(src.ip(), method == Method::Ack, initial_invite, now_ms())
        {
            Admission::Pass => {}
            Admission::Forbidden => {
                metrics::counter!("boxless_sip_refused_total", "reason" => "untrusted")
                    .increment(1);
                return self
                    .respond(tx, &msg, 403, "Forbidden", reply_to, b"")
                    .await;
            }
            Admission::Drop => {
                metrics::counter!("boxless_sip_refused_total", "reason" => "untrusted")
                    .increment(1);
                return;
            }
            Admission::Flood => {
                metrics::counter!("boxless_sip_refused_total", "reason" => "flood").increment(1);
                return self
                    .respond(
                        tx,
                        &msg,
                        503,
                        "Service Unavailable",
                        reply_to,
                        b"Retry-After: 1\r\n",
                    )
                    .await;
            }
        }
        if let Some(d) = msg.defect {
            self.respond(tx, &msg, d.code, d.reason, reply_to, b"")
                .await;
            return;
        }
        if self.forward(&msg, bytes, reply_to, stream, tx).await {
            return;
        }
        let options = format!("{ALLOW}Supported: timer\r\nAccept: application/sdp\r\n");
        let (code, reason, extra): (u16, &str, &[u8]) = match method {
            Method::Invite => return self.new_call(&msg, src, reply_to, tx, stream).await,
            Method::Ack => return,
            Method::Options => (200, "OK", options.as_bytes()),
            Method::Bye | Method::Cancel | Method::Update | Method::Info => {
                (481, "Call/Transaction Does Not Exist", b"")
            }
            Method::Register => (405, "Method Not Allowed", ALLOW.as_bytes()),
            Method::Other(_) => (501, "Not Implemented", b""),
        };
        self.respond(tx, &msg, code, reason, reply_to, extra).await;
    }

    /// Hands a message to its call; false if no call has that Call-ID. A message with a
    /// call's Call-ID that does not match its dialog changes nothing: a request gets `481`
    /// (`482` for an INVITE that would merge into it), an ACK or a response is dropped.
    async fn forward(
        &self,
        msg: &Message<'_>,
        bytes: &[u8],
        reply_to: SocketAddr,
        stream: bool,
        sip: &SipTx,
    ) -> bool {
        let found = self
            .lock_calls()
            .get(msg.call_id)
            .map(|c| (c.id.matches(msg), c.tx.clone()));
        let Some((matches, tx)) = found else {
            return false;
        };
        if !matches {
            metrics::counter!("boxless_sip_refused_total", "reason" => "no_dialog").increment(1);
            match msg.method() {
                None | Some(Method::Ack) => {}
                Some(Method::Invite) => {
                    self.respond(sip, msg, 482, "Loop Detected", reply_to, b"")
                        .await
                }
                Some(_) => {
                    self.respond(
                        sip,
                        msg,
                        481,
                        "Call/Transaction Does Not Exist",
                        reply_to,
                        b"",
                    )
                    .await
                }
            }
            return true;
        }
        let ev = CallEvent {
            bytes: bytes.to_vec(),
            reply_to,
            stream,
        };
        if tx.try_send(ev).is_err() {
            metrics::counter!("boxless_sip_dropped_total", "reason" => "call_busy").increment(1);
        }
        true
    }

    async fn respond(
        &self,
        tx: &SipTx,
        msg: &Message<'_>,
        code: u16,
        reason: &str,
        to: SocketAddr,
        extra: &[u8],
    ) {
        let tag = format!("{:x}", boxless_sip::stateless_tag(msg));
        let mut b = Vec::with_capacity(512);
        let tag_ref: Option<&dyn std::fmt::Display> = if code >= 200 { Some(&tag) } else { None };
        write_response(&mut b, msg, code, reason, tag_ref, None, extra, None);
        tx.send(&b, to).await;
    }

    async fn refuse(&self, tx: &SipTx, msg: &Message<'_>, reply_to: SocketAddr, r: Refusal) {
        self.respond(tx, msg, r.code, r.reason, reply_to, r.extra.as_bytes())
            .await
    }

    async fn new_call(
        self: &Arc<Self>,
        msg: &Message<'_>,
        src: SocketAddr,
        reply_to: SocketAddr,
        tx: &SipTx,
        reliable: bool,
    ) {
        let slot = &self.board.slots[self.slot];
        let view = slot.view();
        let ctx = Context {
            draining: self.draining.load(Ordering::Relaxed),
            active: view.active,
            capacity: view.capacity,
            numbering: &self.numbering,
            pool: &slot.pool,
            min_se: boxless_sip::session::MIN_SE,
        };
        let admitted = match admission::admit(msg, &ctx) {
            Ok(a) => a,
            Err(r) => return self.refuse(tx, msg, reply_to, r).await,
        };
        let (recipient, retrieval) = match admitted.target {
            Target::Retrieval(link) => {
                match self
                    .retrieval_setup(link, admitted.caller, admitted.verified)
                    .await
                {
                    Some(setup) => (link, Some(setup)),
                    None => {
                        let r = Refusal {
                            code: 500,
                            reason: "Server Internal Error",
                            extra: "Retry-After: 5\r\n".into(),
                        };
                        return self.refuse(tx, msg, reply_to, r).await;
                    }
                }
            }
            Target::Deposit(r) => (r, None),
        };
        let link = retrieval.is_some().then_some(recipient);
        let Some((rtp, port)) = self.bind_rtp() else {
            return self.refuse(tx, msg, reply_to, admission::busy()).await;
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
                (
                    format!("{scheme}:{recipient}@{t};transport=tls"),
                    t.to_string(),
                )
            }
            _ => (
                format!("sip:{}@{}", recipient, self.listen),
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
                return self.refuse(tx, msg, reply_to, r).await;
            }
        };
        let (events_tx, events_rx) = mpsc::channel(32);
        {
            let mut calls = self.lock_calls();
            if calls.contains_key(msg.call_id) {
                self.release_port(port);
                return;
            }
            let entry = CallEntry {
                tx: events_tx,
                id: dialog.id().clone(),
            };
            calls.insert(msg.call_id.to_string(), entry);
        }
        slot.call_started();
        metrics::counter!("boxless_calls_total", "server" => self.id.clone()).increment(1);
        if admitted.offer.is_none() {
            metrics::counter!("boxless_late_offers_total").increment(1);
        }
        let answer = Answer {
            invite: msg,
            dialog,
            setup: LegSetup {
                reply_to,
                fallback_hop: src,
                reliable,
                media: SocketAddr::new(self.listen.ip(), port),
                session_id: sess,
                timers: self.timers,
                min_se: boxless_sip::session::MIN_SE,
            },
            offer: admitted.offer,
            timer: admitted.timer,
            tx: RtpSender::new(boxless_media::Codec::Pcmu, 0, ssrc, seq, ts),
        };
        let now = Instant::now();
        let machine = match retrieval {
            Some(setup) => CallFlow::Retrieval(Box::new(Retrieval::new(now, answer, setup))),
            None => {
                let greeting: Arc<[i16]> = match self.greeting {
                    Greeting::Digits => {
                        let lang = self.language_async(recipient).await;
                        self.prompts.greeting(lang, &recipient.digits()).into()
                    }
                    Greeting::Tone => self.tone.clone(),
                };
                CallFlow::Deposit(Box::new(Deposit::new(
                    now,
                    self.settings.clone(),
                    answer,
                    greeting,
                )))
            }
        };
        let call = Call {
            server: self.clone(),
            call_id: msg.call_id.to_string(),
            machine,
            tx: tx.clone(),
            rtp,
            port,
            media_peer: None,
            latched: None,
            recipient,
            caller: admitted.caller,
            link,
            answered_ms: now_ms(),
            events: events_rx,
            tape: Tape::default(),
        };
        let span =
            tracing::info_span!("call", call_id = %msg.call_id, server = %self.id, %recipient);
        self.shards
            .spawn(port, tracing::Instrument::instrument(call.run(), span));
    }

    /// Loads what a call to `link` from `caller` may hear and starts its menu.
    /// `verified`: the caller's identity carries STIR/SHAKEN's `TN-Validation-Passed`.
    async fn retrieval_setup(
        self: &Arc<Self>,
        link: PhoneNumber,
        caller: Option<PhoneNumber>,
        verified: bool,
    ) -> Option<RetrievalSetup> {
        let (store, dir) = (self.store.clone(), self.directory.clone());
        let now = now_ms();
        let me = self.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let (msgs, matched) = store.for_link(link, caller, |c, r| dir.stands_for(c, r))?;
            // Prompts in the language of whom the messages are for (else the caller's).
            let lang = me.language(
                msgs.first()
                    .and_then(|m| m.recipient)
                    .or(caller)
                    .unwrap_or(link),
            );
            let locked = store.link_locked(link, now)?;
            let mut audio = HashMap::new();
            for m in &msgs {
                let (rate, samples) = store.audio(&m.id)?;
                audio.insert(m.id.clone(), (rate, Arc::<[i16]>::from(samples)));
            }
            Ok::<_, boxless_store::Error>((msgs, matched, locked, audio, lang))
        })
        .await;
        let (msgs, matched, locked, audio, language) = match loaded {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::error!(error = %e, %link, "cannot load messages for retrieval");
                return None;
            }
            Err(_) => return None,
        };
        // Caller-ID may stand in for the code only as far as the operator trusts it.
        let trusted_id = matched
            && match self.trust_caller_id {
                TrustCallerId::TrustedPeer => true,
                TrustCallerId::Verified => verified,
            };
        let code_required = match self.policy {
            AccessCodePolicy::Never => false,
            AccessCodePolicy::WhenCallerIdMismatch => !trusted_id,
            AccessCodePolicy::Always => true,
        };
        let menu_msgs = msgs
            .into_iter()
            .map(|m| MenuMessage {
                id: m.id,
                caller: m.caller,
                received_at_ms: m.received_at_ms,
                access_code: m.access_code,
            })
            .collect();
        let menu = Menu::new(
            Instant::now(),
            MenuSettings {
                max_wrong_codes: self.max_wrong_codes,
                ..MenuSettings::default()
            },
            menu_msgs,
            code_required,
            // A locked link number takes no code; the recipient's trusted caller-ID
            // needs none.
            code_required && locked,
        );
        Some(RetrievalSetup {
            menu,
            prompts: self.prompts.clone(),
            language,
            audio,
            utc_offset_min: self.utc_offset,
        })
    }

    /// Counts a wrong code on `link` (from any caller); true when the link is now locked.
    async fn wrong_code(&self, link: PhoneNumber) -> bool {
        metrics::counter!("boxless_wrong_access_codes_total").increment(1);
        let store = self.store.clone();
        let (max, window) = (self.max_wrong_codes_per_link, self.lockout_ms);
        let res =
            tokio::task::spawn_blocking(move || store.wrong_code(link, now_ms(), max, window))
                .await;
        match res {
            Ok(Ok(true)) => {
                metrics::counter!("boxless_link_lockouts_total").increment(1);
                tracing::warn!(%link, "link number locked: too many wrong access codes");
                true
            }
            Ok(Ok(false)) => false,
            Ok(Err(e)) => {
                // Unrecorded, a wrong code must not open the door: treat it as locked.
                tracing::error!(%link, error = %e, "wrong access code NOT recorded; locking this call out");
                true
            }
            Err(_) => true,
        }
    }

    /// A call's RTP socket: never registered with the reactor, because the call's task
    /// takes its packets on its own clock ([`crate::intake::drain_due`]); registered,
    /// every packet would still cost the reactor an epoll event nobody waits for.
    fn bind_rtp(&self) -> Option<(RtpSocket, u16)> {
        for _ in 0..8 {
            let port = self.ports.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            match RtpSocket::bind(SocketAddr::new(self.listen.ip(), port)) {
                Ok(s) => return Some((s, port)),
                Err(e) => {
                    tracing::warn!(port, error = %e, "RTP port busy; trying another");
                    self.release_port(port);
                }
            }
        }
        None
    }

    fn release_port(&self, port: u16) {
        self.ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(0, port);
    }

    fn call_ended(&self, call_id: &str, port: u16) {
        self.lock_calls().remove(call_id);
        self.release_port(port);
        self.board.slots[self.slot].call_ended();
    }
}

struct Call {
    server: Arc<MessagingServer>,
    call_id: String,
    machine: CallFlow,
    tx: SipTx,
    rtp: RtpSocket,
    port: u16,
    /// Where the caller wants RTP (`None` until agreed: late offer).
    media_peer: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    recipient: PhoneNumber,
    caller: Option<PhoneNumber>,
    link: Option<PhoneNumber>,
    answered_ms: u64,
    events: mpsc::Receiver<CallEvent>,
    /// The recording, from the caller's first voice packet until it is stored.
    tape: Tape,
}

impl Call {
    async fn run(mut self) {
        let mut next_drain = drain_due(Instant::now(), drain_period(&self.machine), self.port);
        let mut storing: Option<tokio::task::JoinHandle<bool>> = None;
        let mut reason = EndReason::CallerBye;
        'outer: loop {
            while let Some(out) = self.machine.poll_output() {
                match out {
                    Output::Sip { bytes, to } => self.tx.send(&bytes, to).await,
                    Output::Rtp => {
                        if let Some(to) = self.latched.or(self.media_peer)
                            && self.rtp.send_to(self.machine.rtp_packet(), to).is_err()
                        {
                            // A full send buffer drops the frame: late audio is no audio.
                            metrics::counter!("boxless_rtp_send_dropped_total").increment(1);
                        }
                    }
                    Output::MediaPeer(to) => {
                        if self.media_peer != Some(to) {
                            // A new address (re-INVITE, late answer): latch afresh.
                            self.media_peer = Some(to);
                            self.latched = None;
                            // The kernel lets in only the new address's IP (any port,
                            // until the first packet latches one); `0.0.0.0` (hold:
                            // nothing is sent to us) lets everyone in, and drain_rtp
                            // drops them all.
                            let heard = if to.ip().is_unspecified() {
                                self.rtp.disconnect()
                            } else {
                                self.rtp.hear_only(to.ip())
                            };
                            if let Err(e) = heard {
                                tracing::debug!(error = %e, "RTP socket not narrowed");
                            }
                        }
                    }
                    Output::Record => self.record(),
                    Output::Store { keep } => storing = Some(self.store(keep)),
                    Output::MissedCall => storing = Some(self.missed_call()),
                    Output::Mark { id, mark } => self.mark(id, mark),
                    Output::WrongCode => {
                        if let Some(link) = self.link
                            && self.server.wrong_code(link).await
                        {
                            self.machine.lock_out(Instant::now());
                        }
                    }
                    Output::Ended(r) => {
                        reason = r;
                        break 'outer;
                    }
                }
            }
            // Received RTP waits in the socket until the task wakes anyway (a timer: every
            // 20 ms while it plays) or the drain comes due: one wake per RECORD_DRAIN of a
            // recording rather than one per packet.
            let wake = self
                .machine
                .poll_timeout()
                .map_or(next_drain, |t| t.min(next_drain));
            tokio::select! {
                ev = self.events.recv() => {
                    let Some(ev) = ev else { break };
                    if let Ok(m) = Message::parse(&ev.bytes, ev.stream) {
                        if m.method() == Some(Method::Bye) {
                            // Media sent before the BYE may still wait in the socket: keep it.
                            self.drain_rtp();
                        }
                        self.machine.handle_sip(Instant::now(), &m, ev.reply_to);
                    }
                }
                ok = async { storing.as_mut().expect("guarded by the select condition").await }, if storing.is_some() => {
                    storing = None;
                    self.machine.handle_stored(Instant::now(), ok.unwrap_or(false));
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    // What waited in the socket came first: a voice in it must reach the
                    // machine before its silence timer can fire.
                    self.drain_rtp();
                    self.machine.handle_timeout(now);
                    next_drain = drain_due(now, drain_period(&self.machine), self.port);
                }
            }
        }
        if let Some(h) = storing {
            let _ = h.await;
        }
        if let Some(rec) = self.tape.unload() {
            // Ended without a store (the leg closed under it): what was said is kept.
            let server = self.server.clone();
            let _ = tokio::task::spawn_blocking(move || server.salvage(rec)).await;
        }
        tracing::info!(?reason, "call ended");
        self.server.call_ended(&self.call_id, self.port);
    }

    /// Takes what waits in the RTP socket, at most [`DRAIN_MAX`] packets (a flood cannot
    /// hold the task; the kernel drops what overflows the socket's buffer), in batches of
    /// [`boxless_net::rtp::BATCH`] a system call; a recording's audio goes to its tape as
    /// it comes due. Only the caller's media IP is heard; the first port it sends from is
    /// latched. The kernel drops anyone else's datagrams before they take room in the
    /// socket's buffer: the socket hears only the caller's IP from the SDP on, and only
    /// the latched source from here on.
    fn drain_rtp(&mut self) {
        let arrival = self.arrival();
        let Self {
            server,
            rtp,
            media_peer,
            latched,
            machine,
            tape,
            ..
        } = self;
        let now = Instant::now();
        rtp.drain(DRAIN_MAX, |packet, from| {
            let expected = media_peer.is_some_and(|p| p.ip() == from.ip());
            if expected && latched.is_none_or(|l| l == from) {
                *latched = Some(from);
                machine.handle_rtp(now, packet);
                tape.take_due(machine, &server.store, arrival);
            } else {
                metrics::counter!("boxless_rtp_ignored_total").increment(1);
            }
        });
        if let Some(l) = *latched
            && rtp.peer() != Some(l)
            && let Err(e) = rtp.connect(l)
        {
            // Unconnected, the socket still works: strangers are dropped here instead.
            tracing::debug!(error = %e, "RTP socket not connected");
        }
    }

    /// Appends the machine's audio to the call's recording ([`Tape::take`]).
    fn record(&mut self) {
        let arrival = self.arrival();
        self.tape
            .take(&mut self.machine, &self.server.store, arrival);
    }

    /// Stores the recording (or, when it could not be written, alerts a missed call and
    /// reports the store failed).
    fn store(&mut self, keep: u64) -> tokio::task::JoinHandle<bool> {
        let server = self.server.clone();
        let failed = self.tape.failed();
        let rec = self.tape.unload();
        let arrival = self.arrival();
        tokio::task::spawn_blocking(move || match rec {
            Some(rec) if !failed => server.deposit(rec, keep),
            rec => {
                metrics::counter!("boxless_store_errors_total").increment(1);
                server.missed_call(arrival, rec);
                false
            }
        })
    }

    fn missed_call(&mut self) -> tokio::task::JoinHandle<bool> {
        let server = self.server.clone();
        let rec = self.tape.unload();
        let arrival = self.arrival();
        tokio::task::spawn_blocking(move || server.missed_call(arrival, rec))
    }

    fn arrival(&self) -> Arrival {
        Arrival {
            recipient: self.recipient,
            caller: self.caller,
            received_at_ms: self.answered_ms,
        }
    }

    fn mark(&self, id: String, mark: Mark) {
        let store = self.server.store.clone();
        let state = match mark {
            Mark::Heard => MessageState::Heard,
            Mark::Saved => MessageState::Saved,
            Mark::Deleted => MessageState::Deleted,
        };
        tokio::task::spawn_blocking(move || match store.set_state(&id, state, now_ms()) {
            Ok(_) => tracing::info!(id = %id, state = %state.as_str(), "message state"),
            Err(e) => tracing::error!(id = %id, error = %e, "message state NOT recorded"),
        });
    }
}
