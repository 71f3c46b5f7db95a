//! The deposit call flow as a sans-IO state machine: answer, greeting and tone, record
//! until BYE / `#` / silence / max length, store, then hang up.
//!
//! The promise it keeps: the caller's BYE is answered `200` only after the store reported
//! the message (or the missed-call alert) durable. A failed store answers `500`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxless_media::{FRAME, Negotiated, Received, RtpReceiver, RtpSender};
use boxless_sip::{Message, Method, write_response};

/// Timers and limits of a deposit.
#[derive(Debug, Clone)]
pub struct DepositSettings {
    /// RFC 3261 T1.
    pub t1: Duration,
    /// RFC 3261 T2.
    pub t2: Duration,
    /// Recording stops at this many samples (8 kHz).
    pub max_samples: usize,
    /// Below this many samples no message is kept.
    pub min_samples: usize,
    /// This much silence ends the recording.
    pub silence: Duration,
    /// RMS above which a packet counts as voice.
    pub voice_rms: f64,
}

/// Why a deposit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller hung up.
    CallerBye,
    /// The caller pressed `#`.
    Pound,
    /// Silence for the configured time.
    Silence,
    /// The maximum length was reached.
    MaxLength,
    /// No ACK for the 200 (the call never got established).
    NoAck,
}

/// What the driver must do.
#[derive(Debug)]
pub enum Output {
    /// Send SIP bytes to an address (or on the call's connection).
    Sip {
        /// The message.
        bytes: Vec<u8>,
        /// Where.
        to: SocketAddr,
    },
    /// Send the RTP packet in [`Deposit::rtp_packet`] to the caller's media address.
    Rtp,
    /// Store this recording durably, then call [`Deposit::handle_stored`].
    Store {
        /// 8 kHz mono audio.
        samples: Vec<i16>,
    },
    /// Queue a missed-call alert durably, then call [`Deposit::handle_stored`].
    MissedCall,
    /// The call is over; drop the machine.
    Ended(EndReason),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Phase {
    Greeting,
    Recording,
    Storing,
    ByeSent,
    Done,
}

/// One deposit call.
#[derive(Debug)]
pub struct Deposit {
    s: DepositSettings,
    phase: Phase,
    reason: Option<EndReason>,
    out: VecDeque<Output>,
    // Dialog.
    peer: SocketAddr,
    invite_reply_to: SocketAddr,
    ok: Vec<u8>,
    ok_retx: Option<(Instant, Duration)>,
    ack_deadline: Option<Instant>,
    invite_cseq: u32,
    bye: Option<Vec<u8>>,
    bye_retx: Option<(Instant, Duration, Instant)>,
    /// The caller's BYE waiting for the store: (its 200, where to send it).
    caller_bye: Option<(Vec<u8>, Vec<u8>, SocketAddr)>,
    bye_answer: Option<(Vec<u8>, SocketAddr)>,
    // Media.
    greeting: Arc<[i16]>,
    play_pos: usize,
    next_frame: Instant,
    tx: RtpSender,
    rtp_buf: Vec<u8>,
    rx: RtpReceiver,
    record_started: Option<Instant>,
    last_voice_at: Instant,
    last_voice_pos: usize,
}

/// What the driver knows about the dialog when the INVITE arrives.
#[derive(Debug, Clone)]
pub struct DialogInfo {
    /// Where responses to the INVITE go (RFC 3261 §18.2.2).
    pub reply_to: SocketAddr,
    /// Where in-dialog requests (our BYE) go.
    pub peer: SocketAddr,
    /// Our To-tag.
    pub local_tag: String,
    /// Our Contact URI.
    pub contact: String,
    /// Our SIP address for the Via of our BYE.
    pub via_host: String,
    /// Transport token for our Via (UDP / TCP).
    pub via_transport: &'static str,
    /// A fresh branch for our BYE.
    pub bye_branch: String,
}

impl Deposit {
    /// Answers `invite` with `sdp_answer` and starts the greeting.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        s: DepositSettings,
        invite: &Message<'_>,
        dialog: &DialogInfo,
        neg: &Negotiated,
        sdp_answer: &str,
        greeting: Arc<[i16]>,
        tx: RtpSender,
    ) -> Deposit {
        let mut ok = Vec::with_capacity(1024);
        let extra = format!(
            "Contact: <{}>\r\nAllow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\nServer: boxless\r\n",
            dialog.contact
        );
        write_response(
            &mut ok,
            invite,
            200,
            "OK",
            Some(&dialog.local_tag),
            None,
            extra.as_bytes(),
            Some(("application/sdp", sdp_answer.as_bytes())),
        );
        let bye = build_bye(invite, dialog);
        let mut d = Deposit {
            rx: RtpReceiver::new(neg.codec, neg.pt, neg.dtmf_pt, s.max_samples),
            phase: Phase::Greeting,
            reason: None,
            out: VecDeque::new(),
            peer: dialog.peer,
            invite_reply_to: dialog.reply_to,
            ok_retx: Some((now + s.t1, s.t1)),
            ack_deadline: Some(now + s.t1 * 64),
            invite_cseq: invite.cseq.map_or(0, |c| c.seq),
            ok,
            bye,
            bye_retx: None,
            caller_bye: None,
            bye_answer: None,
            greeting,
            play_pos: 0,
            next_frame: now,
            tx,
            rtp_buf: Vec::with_capacity(12 + FRAME),
            record_started: None,
            last_voice_at: now,
            last_voice_pos: 0,
            s,
        };
        d.out.push_back(Output::Sip {
            bytes: d.ok.clone(),
            to: d.invite_reply_to,
        });
        d
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The packet announced by [`Output::Rtp`].
    pub fn rtp_packet(&self) -> &[u8] {
        &self.rtp_buf
    }

    /// When [`Deposit::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |i: Instant| t = Some(t.map_or(i, |x| x.min(i)));
        if let Some((i, _)) = self.ok_retx {
            at(i);
        }
        if let Some(i) = self.ack_deadline {
            at(i);
        }
        match self.phase {
            Phase::Greeting => at(self.next_frame),
            Phase::Recording => {
                at(self.last_voice_at + self.s.silence);
                if let Some(start) = self.record_started {
                    at(start + max_duration(self.s.max_samples));
                }
            }
            Phase::ByeSent => {
                if let Some((i, _, deadline)) = self.bye_retx {
                    at(i);
                    at(deadline);
                }
            }
            Phase::Storing | Phase::Done => {}
        }
        t
    }

    /// Advances timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((at, every)) = self.ok_retx
            && now >= at
        {
            let next = (every * 2).min(self.s.t2);
            self.ok_retx = Some((now + next, next));
            self.out.push_back(Output::Sip {
                bytes: self.ok.clone(),
                to: self.invite_reply_to,
            });
        }
        if let Some(deadline) = self.ack_deadline
            && now >= deadline
        {
            self.ok_retx = None;
            self.ack_deadline = None;
            if matches!(self.phase, Phase::Greeting | Phase::Recording) {
                self.finish(now, EndReason::NoAck);
            }
        }
        match self.phase {
            Phase::Greeting if now >= self.next_frame => self.play_frame(now),
            Phase::Recording => {
                if now >= self.last_voice_at + self.s.silence {
                    self.finish(now, EndReason::Silence);
                } else if self
                    .record_started
                    .is_some_and(|s| now >= s + max_duration(self.s.max_samples))
                {
                    self.finish(now, EndReason::MaxLength);
                }
            }
            Phase::ByeSent => {
                if let Some((at, every, deadline)) = self.bye_retx {
                    if now >= deadline {
                        self.end();
                    } else if now >= at {
                        let next = (every * 2).min(self.s.t2);
                        self.bye_retx = Some((now + next, next, deadline));
                        if let Some(b) = &self.bye {
                            self.out.push_back(Output::Sip {
                                bytes: b.clone(),
                                to: self.peer,
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn play_frame(&mut self, now: Instant) {
        let end = (self.play_pos + FRAME).min(self.greeting.len());
        let frame = &self.greeting[self.play_pos..end];
        self.tx.voice(frame, &mut self.rtp_buf);
        self.out.push_back(Output::Rtp);
        self.play_pos = end;
        self.next_frame += Duration::from_millis(20);
        if self.next_frame + Duration::from_millis(200) < now {
            // The driver fell far behind; do not burst to catch up.
            self.next_frame = now;
        }
        if self.play_pos >= self.greeting.len() {
            self.phase = Phase::Recording;
            self.record_started = Some(now);
            self.last_voice_at = now;
        }
    }

    /// A SIP message of this dialog; `reply_to` is where a response to it goes.
    pub fn handle_sip(&mut self, now: Instant, msg: &Message<'_>, reply_to: SocketAddr) {
        match msg.method() {
            Some(Method::Ack) => {
                self.ok_retx = None;
                self.ack_deadline = None;
            }
            Some(Method::Invite) if msg.cseq.map(|c| c.seq) == Some(self.invite_cseq) => {
                if self.ok_retx.is_some() || self.ack_deadline.is_some() {
                    self.out.push_back(Output::Sip {
                        bytes: self.ok.clone(),
                        to: self.invite_reply_to,
                    });
                }
            }
            Some(Method::Bye) => self.caller_bye(now, msg, reply_to),
            Some(Method::Cancel) | Some(Method::Options) | Some(Method::Info) => {
                self.reply(msg, 200, "OK", reply_to)
            }
            Some(Method::Invite) => self.reply(msg, 488, "Not Acceptable Here", reply_to),
            Some(_) => self.reply(msg, 501, "Not Implemented", reply_to),
            None => {
                // A final response to our BYE ends the call.
                let for_bye = msg.cseq.is_some_and(|c| c.method == "BYE");
                if for_bye && msg.status().is_some_and(|c| c >= 200) && self.phase == Phase::ByeSent
                {
                    self.end();
                }
            }
        }
    }

    fn reply(&mut self, msg: &Message<'_>, code: u16, reason: &str, to: SocketAddr) {
        let mut b = Vec::with_capacity(512);
        write_response(&mut b, msg, code, reason, None, None, b"", None);
        self.out.push_back(Output::Sip { bytes: b, to });
    }

    fn caller_bye(&mut self, now: Instant, msg: &Message<'_>, reply_to: SocketAddr) {
        if let Some((b, to)) = &self.bye_answer {
            // A retransmission after we answered.
            self.out.push_back(Output::Sip {
                bytes: b.clone(),
                to: *to,
            });
            return;
        }
        let mut ok = Vec::with_capacity(512);
        write_response(&mut ok, msg, 200, "OK", None, None, b"", None);
        let mut fail = Vec::with_capacity(512);
        write_response(
            &mut fail,
            msg,
            500,
            "Message Not Stored",
            None,
            None,
            b"Retry-After: 5\r\n",
            None,
        );
        match self.phase {
            Phase::Greeting | Phase::Recording => {
                self.caller_bye = Some((ok, fail, reply_to));
                self.ok_retx = None;
                self.ack_deadline = None;
                self.finish(now, EndReason::CallerBye);
            }
            Phase::Storing => {
                if self.caller_bye.is_none() {
                    self.caller_bye = Some((ok, fail, reply_to));
                }
            }
            Phase::ByeSent | Phase::Done => {
                // Both hung up at once: the store already finished.
                self.out.push_back(Output::Sip {
                    bytes: ok,
                    to: reply_to,
                });
                if self.phase == Phase::ByeSent {
                    self.end();
                }
            }
        }
    }

    fn finish(&mut self, now: Instant, reason: EndReason) {
        self.reason = Some(reason);
        self.phase = Phase::Storing;
        if reason == EndReason::NoAck {
            // Never established: nothing to keep, nobody to alert twice.
            self.after_store(now, true);
            return;
        }
        let rx = std::mem::replace(
            &mut self.rx,
            RtpReceiver::new(boxless_media::Codec::Pcmu, 0, None, 0),
        );
        let mut samples = rx.into_samples();
        if reason == EndReason::Silence {
            // Drop the trailing silence that ended the recording.
            samples.truncate(
                self.last_voice_pos
                    .max(self.s.min_samples.min(samples.len())),
            );
        }
        if samples.len() >= self.s.min_samples {
            self.out.push_back(Output::Store { samples });
        } else {
            self.out.push_back(Output::MissedCall);
        }
    }

    /// The store finished: `ok` tells whether the message (or alert) is durable.
    pub fn handle_stored(&mut self, now: Instant, ok: bool) {
        if self.phase == Phase::Storing {
            self.after_store(now, ok);
        }
    }

    fn after_store(&mut self, now: Instant, ok: bool) {
        if let Some((ok_bytes, fail_bytes, to)) = self.caller_bye.take() {
            let b = if ok { ok_bytes } else { fail_bytes };
            self.bye_answer = Some((b.clone(), to));
            self.out.push_back(Output::Sip { bytes: b, to });
            self.end();
            return;
        }
        self.phase = Phase::ByeSent;
        if let Some(b) = &self.bye {
            self.out.push_back(Output::Sip {
                bytes: b.clone(),
                to: self.peer,
            });
        }
        self.bye_retx = Some((now + self.s.t1, self.s.t1, now + self.s.t1 * 64));
    }

    fn end(&mut self) {
        if self.phase != Phase::Done {
            self.phase = Phase::Done;
            self.out
                .push_back(Output::Ended(self.reason.unwrap_or(EndReason::CallerBye)));
        }
    }

    /// An RTP datagram from the caller's media address.
    pub fn handle_rtp(&mut self, now: Instant, datagram: &[u8]) {
        if self.phase != Phase::Recording {
            return;
        }
        match self.rx.receive(datagram) {
            Received::Audio { rms } => {
                if rms >= self.s.voice_rms {
                    self.last_voice_at = now;
                    self.last_voice_pos = self.rx.len();
                }
                if self.rx.len() >= self.s.max_samples {
                    self.finish(now, EndReason::MaxLength);
                }
            }
            Received::DtmfEnd('#') => self.finish(now, EndReason::Pound),
            _ => {}
        }
    }

    /// True while the call is still up.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }
}

fn max_duration(max_samples: usize) -> Duration {
    Duration::from_millis(max_samples as u64 / 8)
}

/// Our BYE for this dialog (UAS side: From is the INVITE's To with our tag).
fn build_bye(invite: &Message<'_>, d: &DialogInfo) -> Option<Vec<u8>> {
    let contact = invite.header_values("contact").next()?;
    let target = boxless_sip::NameAddr::parse(contact)?.uri;
    Some(
        format!(
            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={}\r\nMax-Forwards: 70\r\nFrom: {};tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
            d.via_transport, d.via_host, d.bye_branch, invite.to, d.local_tag, invite.from, invite.call_id
        )
        .into_bytes(),
    )
}
