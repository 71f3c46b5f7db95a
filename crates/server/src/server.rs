//! One messaging server as the process holds it: its settings, its store and notifier,
//! the SIP endpoint and the RTP ports its calls take. [`MessagingServer::start`] binds the
//! sockets and starts the tasks: the socket driver ([`crate::driver`]), the upkeep
//! ([`crate::upkeep`]) and, per call, [`crate::task`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use boxless_core::config::{AccessCodePolicy, AudioFormat, Greeting, TrustCallerId};
use boxless_core::recipient::Languages;
use boxless_core::{Checked, Gate, Numbering, PeerFilter, Rng, ServerSpec, StatusBoard};
use boxless_media::Prompts;
use boxless_net::rtp::RtpSocket;
use boxless_notify::{Limits, NoticeTexts, NotifierHandle};
use boxless_sip::SipTimers;
use boxless_store::{Directory, Retention, Store};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use crate::call::CallSettings;
use crate::endpoint::Endpoint;
use crate::shard::Shards;
use crate::wire::CallEvent;

/// One running messaging server.
#[derive(Debug)]
pub struct MessagingServer {
    pub(crate) id: String,
    pub(crate) listen: SocketAddr,
    pub(crate) tls_listen: Option<SocketAddr>,
    pub(crate) slot: usize,
    pub(crate) board: Arc<StatusBoard>,
    pub(crate) numbering: Numbering,
    pub(crate) store: Arc<Store>,
    pub(crate) directory: Arc<Directory>,
    /// Where recipients' preferences and greetings are written (`directory` is its copy).
    pub(crate) recipients: boxless_control::Recipients,
    pub(crate) notifier: Arc<NotifierHandle>,
    /// The texts of its notices.
    pub(crate) texts: NoticeTexts,
    pub(crate) prompts: Arc<Prompts>,
    pub(crate) tone: Arc<[i16]>,
    pub(crate) greeting: Greeting,
    /// `messages.greeting_max_seconds`.
    pub(crate) greeting_max: Duration,
    /// Recipients' own greetings recently played.
    pub(crate) greetings: crate::greetings::GreetingCache,
    pub(crate) settings: CallSettings,
    pub(crate) timers: SipTimers,
    pub(crate) policy: AccessCodePolicy,
    pub(crate) utc_offset: i32,
    pub(crate) languages: Languages,
    pub(crate) max_message: usize,
    /// The trust boundary and the calls in progress.
    pub(crate) endpoint: Mutex<Endpoint<mpsc::Sender<CallEvent>>>,
    /// Who may open a TCP or TLS connection (the endpoint's gate, read without its lock).
    pub(crate) peers: PeerFilter,
    pub(crate) ports: Mutex<Vec<u16>>,
    /// The threads the calls run on ([`Shards`]).
    pub(crate) shards: Arc<Shards>,
    pub(crate) rng: Mutex<Rng>,
    pub(crate) draining: AtomicBool,
    pub(crate) stopped: AtomicBool,
    pub(crate) ttl: Duration,
    pub(crate) max_wrong_codes: u32,
    pub(crate) max_wrong_codes_per_link: u32,
    pub(crate) lockout_ms: u64,
    pub(crate) trust_caller_id: TrustCallerId,
    pub(crate) missed_call_merge_ms: u64,
    /// The limits counted across the cluster (a burst of missed calls is one alert).
    pub(crate) limits: Arc<Limits>,
    pub(crate) fallback_after_ms: u64,
    /// `[email] smtp` is set.
    pub(crate) email_on: bool,
    /// A webhook key signs notices to recipients' own webhooks.
    pub(crate) webhook_on: bool,
    /// `[store] replication = "jetstream"`: set once, right after start.
    pub(crate) replication: std::sync::OnceLock<Arc<crate::replication::Replication>>,
    /// `[transcription]` on: asks the recogniser for each stored message's transcript.
    pub(crate) transcriber: Option<crate::transcripts::Transcriber>,
    /// The recordings a stop left, listed before the first call: what a recovery that
    /// runs later (crate::takeover) may touch; None once recovered (or never deferred).
    pub(crate) leftovers: Mutex<Option<std::collections::HashSet<String>>>,
}

impl MessagingServer {
    /// Binds the server's SIP sockets and starts its tasks (SIP, heartbeat).
    pub async fn start(
        cfg: &Checked,
        spec: &ServerSpec,
        board: Arc<StatusBoard>,
        store: Arc<Store>,
        recipients: boxless_control::Recipients,
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
        let gate = Gate::new(
            cfg.peers.clone(),
            c.sip.max_invites_per_second_per_peer,
            Rng::from_entropy().next_u64(),
        );
        let transcriber = crate::transcripts::Transcriber::new(
            &c.transcription,
            cfg.secrets.transcription_token.clone(),
        )?;
        if transcriber.is_some() {
            let t = &c.transcription;
            store.enable_transcripts(boxless_store::Hold {
                sms_ms: t.sms_wait_seconds.saturating_mul(1000),
                email_ms: t.timeout_seconds.saturating_mul(1000),
            });
        }
        let server = Arc::new(MessagingServer {
            id: spec.config.id.clone(),
            listen: spec.config.listen,
            tls_listen: spec.config.tls_listen,
            slot,
            board,
            numbering: cfg.numbering.clone(),
            store,
            directory: recipients.copy().clone(),
            recipients,
            limits: notifier.limits.clone(),
            notifier,
            texts: NoticeTexts::new(cfg, &spec.config.id),
            tone: prompts.tone().into(),
            prompts,
            greeting: c.messages.greeting,
            greeting_max: Duration::from_secs(u64::from(c.messages.greeting_max_seconds)),
            greetings: Default::default(),
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
                frames: crate::FrameGrid(crate::intake::epoch()),
            },
            policy: c.retrieval.access_code,
            utc_offset: c.sms.utc_offset_minutes,
            languages: cfg.languages.clone(),
            max_message: c.sip.max_message_bytes,
            peers: cfg.peers.clone(),
            endpoint: Mutex::new(Endpoint::new(gate)),
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
            missed_call_merge_ms: u64::from(c.sms.missed_call_merge_minutes) * 60_000,
            fallback_after_ms: c.sms.fallback_after_seconds.saturating_mul(1000),
            email_on: !c.email.smtp.trim().is_empty(),
            webhook_on: cfg.secrets.webhook_secret.is_some(),
            replication: std::sync::OnceLock::new(),
            transcriber,
            leftovers: Mutex::new(None),
        });
        if server.store.held() {
            // Recovery waits (crate::takeover), and calls come meanwhile: it will touch
            // only what is on disk now, never a live call's recording.
            let ids = server
                .store
                .recordings()
                .map_err(std::io::Error::other)?
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            *server.leftovers.lock().unwrap_or_else(|p| p.into_inner()) = Some(ids);
        }
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
        // A server that replicates recovers once it knows whether another server kept
        // its interrupted recordings meanwhile (crate::takeover).
        if !server.store.held() {
            let me = server.clone();
            server
                .store
                .write(move |_| me.recover(&Default::default()))
                .await
                .map_err(std::io::Error::other)?;
        }
        tokio::spawn(crate::transcripts::run(server.clone()));
        tokio::spawn(server.clone().heartbeat());
        tokio::spawn(server.clone().retention(Retention::days(
            c.messages.keep_heard_days,
            c.messages.keep_unheard_days,
        )));
        server.report();
        tracing::info!(server = %server.id, sip = %server.listen, "messaging server up");
        Ok(server)
    }

    /// Replicates its messages with `r` from now on (what was stored before is caught up
    /// by `r`'s loop). A second call changes nothing.
    pub fn replicate(&self, r: Arc<crate::replication::Replication>) {
        let _ = self.replication.set(r);
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
        self.lock_endpoint().calls()
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

    pub(crate) fn lock_endpoint(&self) -> MutexGuard<'_, Endpoint<mpsc::Sender<CallEvent>>> {
        // Poisoning only follows a panic elsewhere; the table itself is always consistent.
        self.endpoint.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call's RTP socket: never registered with the reactor, because the call's task
    /// takes its packets on its own clock ([`crate::intake::drain_due`]); registered,
    /// every packet would still cost the reactor an epoll event nobody waits for.
    pub(crate) fn bind_rtp(&self) -> Option<(RtpSocket, u16)> {
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

    pub(crate) fn release_port(&self, port: u16) {
        self.ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(0, port);
    }

    /// A call's task is over: its Call-ID, its port and its place in the count are free.
    pub(crate) fn call_ended(&self, call_id: &str, port: u16) {
        self.lock_endpoint().remove(call_id);
        self.release_port(port);
        self.board.slots[self.slot].call_ended();
    }
}
