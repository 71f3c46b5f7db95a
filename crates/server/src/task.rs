//! A call's task: it loads what the call needs (the recipient's language and greeting; for
//! a retrieval, the link's messages, its lockout and their audio), answers the INVITE, then
//! runs the sans-IO [`CallFlow`] on its RTP socket and the SIP messages the socket tasks
//! hand it, until the call ends. Whatever it waits on (the store, a slow disk) holds up
//! this call alone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxless_core::config::{AccessCodePolicy, TrustCallerId};
use boxless_core::recipient::Language;
use boxless_core::{PhoneNumber, now_ms};
use boxless_media::RtpSender;
use boxless_net::rtp::RtpSocket;
use boxless_sip::parties::Target;
use boxless_sip::{Dialog, Method, OwnedMessage};
use boxless_store::{Arrival, MessageState};
use tokio::sync::mpsc;

use crate::admission::{Admitted, Refusal};
use crate::call::{Answer, CallFlow, Deposit, EndReason, Output, Retrieval, RetrievalSetup};
use crate::intake::{DRAIN_MAX, Tape, drain_due, drain_period};
use crate::leg::LegSetup;
use crate::menu::{Mark, Menu, MenuMessage, MenuSettings};
use crate::server::MessagingServer;
use crate::wire::{CallEvent, SipTx, refuse, respond};

/// A set-up still loading after this long sends `100 Trying`, so that the caller's
/// INVITE client transaction stops retransmitting (RFC 3261 §8.2.6.1 asks for it past
/// 200 ms; T1 is 500 ms).
const TRYING_AFTER: Duration = Duration::from_millis(100);

/// Messages kept for the machine while a call's set-up loads, at most: what the call's
/// channel holds. Past it they are dropped and counted, as when the channel is full, so a
/// peer cannot grow a loading call's memory.
const EARLY_MAX: usize = 32;
/// A drain of a call's RTP (and its audio's writes to the recording) that held its shard
/// this long is counted (`boxless_call_slow_drains_total`): writeback throttling or a file
/// system lock under the page cache, which every call of the shard waited for.
const SLOW_DRAIN: Duration = Duration::from_millis(10);

/// An admitted call, before its set-up is loaded: what the socket task decided and made
/// (dialog, RTP socket, the call's place in the endpoint's table).
#[derive(Debug)]
pub(crate) struct Start {
    pub(crate) server: Arc<MessagingServer>,
    pub(crate) call_id: String,
    /// The INVITE, as the socket task parsed it.
    pub(crate) invite: OwnedMessage,
    pub(crate) admitted: Admitted,
    pub(crate) dialog: Dialog,
    pub(crate) leg: LegSetup,
    pub(crate) rtp_tx: RtpSender,
    pub(crate) sip: SipTx,
    pub(crate) rtp: RtpSocket,
    pub(crate) port: u16,
    pub(crate) events: mpsc::Receiver<CallEvent>,
}

/// What a call's machine needs from the store before it can answer.
enum Loaded {
    Deposit {
        recipient: PhoneNumber,
        greeting: Arc<[i16]>,
    },
    Retrieval {
        link: PhoneNumber,
        setup: Box<RetrievalSetup>,
    },
}

impl Start {
    /// Loads the set-up, answers the INVITE and runs the call to its end.
    pub(crate) async fn run(self) {
        // The set-up (the loading, the select over it and the caller's messages) is a future of
        // its own on the heap, freed before the call runs: inline, its size would set the
        // size of every call's task for the call's whole life (measured: 6 to 10 KiB more
        // RSS a call at 1,000 recordings).
        if let Some(call) = Box::pin(self.answer()).await {
            call.run().await;
        }
    }

    /// Loads the set-up and answers the INVITE: the call, or None when it ended already
    /// (cancelled, or the store could not say).
    async fn answer(mut self) -> Option<Call> {
        let server = self.server.clone();
        let (call_id, port) = (self.call_id.clone(), self.port);
        let invite = self.invite.get();
        let load = load(server.clone(), self.admitted);
        tokio::pin!(load);
        let reply_to = self.leg.reply_to;
        let trying_at = tokio::time::Instant::now() + TRYING_AFTER;
        let mut trying = false;
        // What the caller sends while the set-up loads waits here for the machine; a
        // CANCEL ends the call at once (RFC 3261 §9.2: 200 to the CANCEL, 487 to the INVITE).
        let mut early = Vec::new();
        let loaded = loop {
            tokio::select! {
                loaded = &mut load => break loaded,
                _ = tokio::time::sleep_until(trying_at), if !trying => {
                    trying = true;
                    respond(&self.sip, invite, 100, "Trying", reply_to, b"").await;
                }
                ev = self.events.recv() => {
                    // The endpoint holds the sender until the call ends: never None here.
                    let Some(ev) = ev else { continue };
                    let m = ev.msg.get();
                    match m.method() {
                        Some(Method::Cancel) => {
                            respond(&self.sip, m, 200, "OK", ev.reply_to, b"").await;
                            respond(&self.sip, invite, 487, "Request Terminated", reply_to, b"").await;
                            tracing::info!("call cancelled while its set-up loaded");
                            server.call_ended(&call_id, port);
                            return None;
                        }
                        // The INVITE again: it gets the provisional answer again.
                        Some(Method::Invite) if trying => {
                            respond(&self.sip, invite, 100, "Trying", reply_to, b"").await;
                        }
                        Some(Method::Invite) => {}
                        _ if early.len() < EARLY_MAX => early.push(ev),
                        _ => {
                            metrics::counter!("boxless_sip_dropped_total", "reason" => "call_busy")
                                .increment(1);
                        }
                    }
                }
            }
        };
        let Some(loaded) = loaded else {
            let r = Refusal {
                code: 500,
                reason: "Server Internal Error",
                extra: "Retry-After: 5\r\n".into(),
            };
            refuse(&self.sip, invite, reply_to, r).await;
            server.call_ended(&call_id, port);
            return None;
        };
        let now = Instant::now();
        let answer = Answer {
            invite,
            dialog: self.dialog,
            setup: self.leg,
            offer: self.admitted.offer,
            timer: self.admitted.timer,
            tx: self.rtp_tx,
        };
        let (machine, recipient, link) = match loaded {
            Loaded::Retrieval { link, setup } => (
                CallFlow::Retrieval(Box::new(Retrieval::new(now, answer, *setup))),
                link,
                Some(link),
            ),
            Loaded::Deposit {
                recipient,
                greeting,
            } => {
                let settings = server.settings.clone();
                let d = Deposit::new(now, settings, answer, greeting);
                (CallFlow::Deposit(Box::new(d)), recipient, None)
            }
        };
        let mut machine = machine;
        for ev in early {
            machine.handle_sip(Instant::now(), ev.msg.get(), ev.reply_to);
        }
        let call = Call {
            server,
            call_id,
            machine,
            tx: self.sip,
            rtp: self.rtp,
            port,
            media_peer: None,
            latched: None,
            recipient,
            caller: self.admitted.caller,
            link,
            answered_ms: now_ms(),
            events: self.events,
            tape: Tape::default(),
        };
        Some(call)
    }
}

/// What the call's machine needs before it answers; `None` when the store cannot say
/// (the caller gets `500` with a Retry-After).
async fn load(server: Arc<MessagingServer>, a: Admitted) -> Option<Loaded> {
    match a.target {
        Target::Retrieval(link) => retrieval_setup(server, link, a.caller, a.verified)
            .await
            .map(|s| Loaded::Retrieval {
                link,
                setup: Box::new(s),
            }),
        Target::Deposit(recipient) => {
            // The recipients' copy (their greetings, their language) is its own
            // database, not the message store.
            let me = server.clone();
            let busy = a.busy;
            let greeting = tokio::task::spawn_blocking(move || me.greeting_for(recipient, busy))
                .await
                .unwrap_or_else(|_| server.tone.clone());
            Some(Loaded::Deposit {
                recipient,
                greeting,
            })
        }
    }
}

/// Loads what a call to `link` from `caller` may hear and starts its menu.
/// `verified`: the caller's identity carries STIR/SHAKEN's `TN-Validation-Passed`.
async fn retrieval_setup(
    server: Arc<MessagingServer>,
    link: PhoneNumber,
    caller: Option<PhoneNumber>,
    verified: bool,
) -> Option<RetrievalSetup> {
    let now = now_ms();
    let me = server.clone();
    let loaded = server
        .store
        .read(move |store| {
            let dir = &me.directory;
            let (msgs, matched) = store.for_link(link, caller, |c, r| dir.stands_for(c, r))?;
            // Prompts in the language of whom the messages are for (else the caller's).
            let lang: Language = me.language(
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
        Ok(Ok((msgs, matched, locked, audio, language))) => {
            let locked = locked || server.limits.link_locked(link, now).await;
            (msgs, matched, locked, audio, language)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, %link, "cannot load messages for retrieval");
            return None;
        }
        Err(_) => return None,
    };
    // Caller-ID may stand in for the code only as far as the operator trusts it.
    let trusted_id = matched
        && match server.trust_caller_id {
            TrustCallerId::TrustedPeer => true,
            TrustCallerId::Verified => verified,
        };
    let code_required = match server.policy {
        AccessCodePolicy::Never => false,
        AccessCodePolicy::WhenCallerIdMismatch => !trusted_id,
        AccessCodePolicy::Always => true,
    };
    // Only the recipient's own phone, trusted as it is to play without a code, records
    // their greeting (a caller who gave the code may be anyone holding the SMS).
    let greeting_owner =
        caller.filter(|&c| trusted_id && msgs.iter().any(|m| m.recipient == Some(c)));
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
        MenuSettings {
            max_wrong_codes: server.max_wrong_codes,
            greeting_owner,
            greeting_max: server.greeting_max,
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
        prompts: server.prompts.clone(),
        language,
        audio,
        utc_offset_min: server.utc_offset,
        frames: server.settings.frames,
    })
}

/// Counts a wrong code on `link` (from any caller); true when the link is now locked.
async fn wrong_code(server: &MessagingServer, link: PhoneNumber) -> bool {
    metrics::counter!("boxless_wrong_access_codes_total").increment(1);
    let store = server.store.clone();
    let (max, window) = (server.max_wrong_codes_per_link, server.lockout_ms);
    let now = now_ms();
    let res = store
        .write(move |store| store.wrong_code(link, now, max, window))
        .await;
    // Over NATS the cluster counts too (a link taken over keeps its count; docs/sip.md).
    let cluster = server.limits.wrong_code(link, now, max, window).await == Some(true);
    match res {
        Ok(Ok(local)) if local || cluster => {
            metrics::counter!("boxless_link_lockouts_total").increment(1);
            tracing::warn!(%link, "link number locked: too many wrong access codes");
            true
        }
        Ok(Ok(_)) => false,
        Ok(Err(e)) => {
            // Unrecorded, a wrong code must not open the door: treat it as locked.
            tracing::error!(%link, error = %e, "wrong access code NOT recorded; locking this call out");
            true
        }
        Err(_) => true,
    }
}

/// A store in progress: true once the message (or the missed-call alert) is durable.
type Storing = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

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
        let mut storing: Option<Storing> = None;
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
                    Output::Store { keep, voiced } => storing = Some(self.store(keep, voiced)),
                    Output::MissedCall => storing = Some(self.missed_call()),
                    Output::Mark { id, mark } => self.mark(id, mark),
                    Output::Greeting { owner, audio } => {
                        // Written on its own: the caller goes on with the menu meanwhile.
                        let server = self.server.clone();
                        tokio::spawn(async move { server.set_own_greeting(owner, audio).await });
                    }
                    Output::WrongCode => {
                        if let Some(link) = self.link
                            && wrong_code(&self.server, link).await
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
                    let m = ev.msg.get();
                    if m.method() == Some(Method::Bye) {
                        // Media sent before the BYE may still wait in the socket: keep it.
                        self.drain_rtp();
                    }
                    self.machine.handle_sip(Instant::now(), m, ev.reply_to);
                }
                ok = async { storing.as_mut().expect("guarded by the select condition").await }, if storing.is_some() => {
                    storing = None;
                    self.machine.handle_stored(Instant::now(), ok);
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
            let _ = self.server.store.write(move |_| server.salvage(rec)).await;
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
        // One clock read a drain, not one a packet: what the drain's writes to the
        // recording's file (page cache) cost the shard, whose every call waited with it.
        if now.elapsed() >= SLOW_DRAIN {
            metrics::counter!("boxless_call_slow_drains_total").increment(1);
        }
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
    fn store(&mut self, keep: u64, voiced: bool) -> Storing {
        let server = self.server.clone();
        let failed = self.tape.failed();
        let rec = self.tape.unload();
        let arrival = self.arrival();
        let store = self.server.store.clone();
        // Marked before the row is committed (Replication::depositing).
        let flight = match (&rec, server.replication.get()) {
            (Some(rec), Some(r)) if !failed => Some(r.depositing(rec.id())),
            _ => None,
        };
        Box::pin(async move {
            let me = server.clone();
            let stored = store.write(move |s| match rec {
                Some(rec) if !failed => me.deposit(rec, keep, voiced).map(|id| {
                    // With replication, the record and the audio JetStream lacks, read on
                    // the writer right after its commit: the caller's 200 waits for no
                    // turn on a reader, and a long message's file is not read whole.
                    me.replication.get().and_then(|r| {
                        let record = s.record(&id).ok().flatten()?;
                        let audio = s.audio_from(&id, r.shipped(&id)).ok()?;
                        Some((record, audio))
                    })
                }),
                rec => {
                    metrics::counter!("boxless_store_errors_total").increment(1);
                    me.missed_call(arrival, rec, false);
                    None
                }
            });
            // What the caller's 200 waits for, part by part (docs/high-availability.md).
            let t = std::time::Instant::now();
            let Ok(Some(record)) = stored.await else {
                return false;
            };
            metrics::histogram!("boxless_deposit_store_seconds", "server" => server.id.clone())
                .record(t.elapsed().as_secs_f64());
            // With replication, the caller's 200 waits for a JetStream majority too.
            if let (Some(r), Some(flight)) = (server.replication.get(), flight) {
                let t = std::time::Instant::now();
                r.deposited(flight, record).await;
                metrics::histogram!("boxless_deposit_replication_seconds", "server" => server.id.clone())
                    .record(t.elapsed().as_secs_f64());
            }
            true
        })
    }

    fn missed_call(&mut self) -> Storing {
        let server = self.server.clone();
        let rec = self.tape.unload();
        let arrival = self.arrival();
        let store = self.server.store.clone();
        Box::pin(async move {
            // One alert per burst across the cluster: another server may hold it.
            let (merge, id) = (server.missed_call_merge_ms, server.id.as_str());
            let (to, from, at) = (arrival.recipient, arrival.caller, arrival.received_at_ms);
            let elsewhere = server.limits.missed_call(to, from, id, at, merge).await
                == boxless_control::counters::Missed::Theirs;
            let queued = store.write(move |_| server.missed_call(arrival, rec, elsewhere));
            queued.await.unwrap_or(false)
        })
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
        let replication = self.server.replication.get().cloned();
        tokio::spawn(async move {
            let set = store.write(move |s| s.set_state(&id, state, now_ms()).map(|_| id));
            match set.await.and_then(|r| r) {
                Ok(id) => {
                    tracing::info!(id = %id, state = %state.as_str(), "message state");
                    if let Some(r) = replication {
                        r.changed();
                    }
                }
                Err(e) => tracing::error!(error = %e, "message state NOT recorded"),
            }
        });
    }
}
