//! One call as a sans-IO state machine. A deposit: answer, greeting and tone, record until
//! BYE / `#` / silence / max length, store, then hang up. A retrieval
//! ([`CallFlow::new_retrieval`]): answer and run the menu, playing prompts and messages.
//!
//! The promise a deposit keeps: the caller's BYE is answered `200` only after the store reported
//! the message (or the missed-call alert) durable. A failed store answers `500`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use boxless_core::util::civil;
use boxless_media::{
    Codec, DtmfDetector, FRAME, Negotiated, Prompts, Received, RtpReceiver, RtpSender,
};

use crate::menu::{Action, Mark, Menu, Prompt};
use boxless_sip::{Message, Method, write_response};

/// Timers and limits of a deposit.
#[derive(Debug, Clone)]
pub struct CallSettings {
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
    /// Retrieval: the menu said goodbye.
    MenuDone,
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
    /// Send the RTP packet in [`CallFlow::rtp_packet`] to the caller's media address.
    Rtp,
    /// Store this recording durably, then call [`CallFlow::handle_stored`].
    Store {
        /// 8 kHz mono audio.
        samples: Vec<i16>,
    },
    /// Queue a missed-call alert durably, then call [`CallFlow::handle_stored`].
    MissedCall,
    /// Retrieval: record what became of a message.
    Mark {
        /// Message id.
        id: String,
        /// heard / saved / deleted.
        mark: Mark,
    },
    /// Retrieval: a wrong access code (counts towards the caller's lockout).
    WrongCode,
    /// The call is over; drop the machine.
    Ended(EndReason),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Phase {
    Menu,
    Greeting,
    Recording,
    Storing,
    ByeSent,
    Done,
}

/// One deposit call.
#[derive(Debug)]
pub struct CallFlow {
    s: CallSettings,
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
    retrieval: Option<Box<Retrieval>>,
}

/// What a retrieval call plays from: its menu, the prompts and the messages' audio.
#[derive(Debug)]
pub struct RetrievalSetup {
    /// The menu, already started.
    pub menu: Menu,
    /// Spoken prompts.
    pub prompts: Arc<Prompts>,
    /// Audio of each message the menu may play, by id.
    pub audio: HashMap<String, Arc<[i16]>>,
    /// Minutes east of UTC for "received <date, time>".
    pub utc_offset_min: i32,
}

#[derive(Debug)]
struct Retrieval {
    setup: RetrievalSetup,
    seq: Vec<i16>,
    pos: usize,
    audio_end: Option<usize>,
    playing: bool,
    inband: DtmfDetector,
    saw_events: bool,
    decoded: Vec<i16>,
    codec: Codec,
    pt: u8,
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

impl CallFlow {
    /// Answers `invite` with `sdp_answer` and starts the greeting.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        s: CallSettings,
        invite: &Message<'_>,
        dialog: &DialogInfo,
        neg: &Negotiated,
        sdp_answer: &str,
        greeting: Arc<[i16]>,
        tx: RtpSender,
    ) -> CallFlow {
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
        let mut d = CallFlow {
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
            retrieval: None,
            s,
        };
        d.out.push_back(Output::Sip {
            bytes: d.ok.clone(),
            to: d.invite_reply_to,
        });
        d
    }

    /// Answers a call to a link number and runs `setup.menu` on it.
    #[allow(clippy::too_many_arguments)]
    pub fn new_retrieval(
        now: Instant,
        s: CallSettings,
        invite: &Message<'_>,
        dialog: &DialogInfo,
        neg: &Negotiated,
        sdp_answer: &str,
        setup: RetrievalSetup,
        tx: RtpSender,
    ) -> CallFlow {
        let mut d = CallFlow::new(
            now,
            s,
            invite,
            dialog,
            neg,
            sdp_answer,
            Arc::from(Vec::new()),
            tx,
        );
        // Digits only: the receiver keeps no audio.
        d.rx = RtpReceiver::new(neg.codec, neg.pt, neg.dtmf_pt, 0);
        d.phase = Phase::Menu;
        d.retrieval = Some(Box::new(Retrieval {
            setup,
            seq: Vec::new(),
            pos: 0,
            audio_end: None,
            playing: false,
            inband: DtmfDetector::default(),
            saw_events: false,
            decoded: Vec::with_capacity(FRAME * 2),
            codec: neg.codec,
            pt: neg.pt,
        }));
        d.drain_menu(now);
        d
    }

    fn drain_menu(&mut self, now: Instant) {
        loop {
            let Some(r) = self.retrieval.as_mut() else {
                return;
            };
            let Some(action) = r.setup.menu.poll_action() else {
                return;
            };
            match action {
                Action::Play(seq) => {
                    r.render(&seq);
                    r.playing = true;
                    self.next_frame = now;
                }
                Action::Mark { id, mark } => self.out.push_back(Output::Mark { id, mark }),
                Action::WrongCode => self.out.push_back(Output::WrongCode),
                Action::Hangup => {
                    if self.phase == Phase::Menu {
                        self.reason = Some(EndReason::MenuDone);
                        self.close(now, true);
                    }
                }
            }
        }
    }

    fn menu_frame(&mut self, now: Instant) {
        let Some(r) = self.retrieval.as_mut() else {
            return;
        };
        if !r.playing {
            return;
        }
        let end = (r.pos + FRAME).min(r.seq.len());
        self.tx.voice(&r.seq[r.pos..end], &mut self.rtp_buf);
        self.out.push_back(Output::Rtp);
        r.pos = end;
        self.next_frame += Duration::from_millis(20);
        if self.next_frame + Duration::from_millis(200) < now {
            self.next_frame = now;
        }
        if r.audio_end.is_some_and(|e| r.pos >= e) {
            r.audio_end = None;
            r.setup.menu.audio_finished();
        }
        if r.pos >= r.seq.len() {
            r.playing = false;
            r.setup.menu.played(now);
        }
        self.drain_menu(now);
    }

    fn menu_rtp(&mut self, now: Instant, datagram: &[u8]) {
        let received = self.rx.receive(datagram);
        let Some(r) = self.retrieval.as_mut() else {
            return;
        };
        let mut digits: Vec<char> = Vec::new();
        match received {
            Received::Dtmf(c) => {
                r.saw_events = true;
                digits.push(c);
            }
            Received::DtmfProgress => r.saw_events = true,
            // In-band tones only from gateways that send no RFC 4733 events.
            _ if !r.saw_events => {
                r.decoded.clear();
                if boxless_media::rtp::decode_voice(datagram, r.codec, r.pt, &mut r.decoded) {
                    r.inband.push(&r.decoded, |c| digits.push(c));
                }
            }
            _ => {}
        }
        for c in digits {
            if let Some(r) = self.retrieval.as_mut() {
                r.setup.menu.digit(now, c);
            }
            self.drain_menu(now);
        }
    }

    /// The link number got locked (see [`crate::menu::Menu::lock_out`]).
    pub fn lock_out(&mut self, now: Instant) {
        if let Some(r) = self.retrieval.as_mut() {
            r.setup.menu.lock_out();
        }
        self.drain_menu(now);
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The packet announced by [`Output::Rtp`].
    pub fn rtp_packet(&self) -> &[u8] {
        &self.rtp_buf
    }

    /// When [`CallFlow::handle_timeout`] wants to run next.
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
            Phase::Menu => {
                if let Some(r) = &self.retrieval {
                    if r.playing {
                        at(self.next_frame);
                    }
                    if let Some(t) = r.setup.menu.poll_timeout() {
                        at(t);
                    }
                }
            }
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
            } else if self.phase == Phase::Menu {
                self.reason = Some(EndReason::NoAck);
                self.close(now, true);
            }
        }
        match self.phase {
            Phase::Menu => {
                if now >= self.next_frame {
                    self.menu_frame(now);
                }
                if let Some(r) = self.retrieval.as_mut() {
                    r.setup.menu.handle_timeout(now);
                }
                self.drain_menu(now);
            }
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
            Phase::Menu => {
                self.ok_retx = None;
                self.ack_deadline = None;
                self.reason = Some(EndReason::CallerBye);
                self.bye_answer = Some((ok.clone(), reply_to));
                self.out.push_back(Output::Sip {
                    bytes: ok,
                    to: reply_to,
                });
                self.end();
            }
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
            self.close(now, true);
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
            self.close(now, ok);
        }
    }

    fn close(&mut self, now: Instant, ok: bool) {
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
        if self.phase == Phase::Menu {
            self.menu_rtp(now, datagram);
            return;
        }
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
            Received::Dtmf('#') => self.finish(now, EndReason::Pound),
            _ => {}
        }
    }

    /// True while the call is still up.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }
}

impl Retrieval {
    /// Turns a prompt sequence into audio; remembers where a message's audio ends.
    fn render(&mut self, seq: &[Prompt]) {
        let p = &self.setup.prompts;
        let mut out = Vec::new();
        let mut audio_end = None;
        for item in seq {
            match item {
                Prompt::MessageFrom {
                    caller,
                    received_at_ms,
                } => {
                    out.extend_from_slice(p.get("message-from"));
                    match caller {
                        Some(c) => p.say_digits(&c.digits(), &mut out),
                        None => out.extend_from_slice(p.get("unknown-caller")),
                    }
                    p.pause(200, &mut out);
                    let (_, month, day, h, m, _) =
                        civil(received_at_ms / 1000, self.setup.utc_offset_min);
                    out.extend_from_slice(p.get("received"));
                    out.extend_from_slice(p.get(&format!("month-{month}")));
                    p.say_number(day, &mut out);
                    out.extend_from_slice(p.get("at"));
                    p.say_number(h, &mut out);
                    p.say_number(m, &mut out);
                    p.pause(500, &mut out);
                }
                Prompt::Audio(id) => {
                    if let Some(a) = self.setup.audio.get(id) {
                        out.extend_from_slice(a);
                    }
                    audio_end = Some(out.len());
                    p.pause(500, &mut out);
                }
                other => {
                    let name = match other {
                        Prompt::EnterCode => "enter-code",
                        Prompt::WrongCode => "wrong-code",
                        Prompt::LockedOut => "locked-out",
                        Prompt::NoMessages => "no-messages",
                        Prompt::Options => "options",
                        Prompt::Deleted => "deleted",
                        Prompt::Saved => "saved",
                        Prompt::NoMore => "no-more",
                        _ => "goodbye",
                    };
                    out.extend_from_slice(p.get(name));
                    p.pause(200, &mut out);
                }
            }
        }
        self.seq = out;
        self.pos = 0;
        self.audio_end = audio_end;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::menu::{MenuMessage, MenuSettings};
    use boxless_media::{Codec, negotiate, write_sdp};

    const T1: Duration = Duration::from_millis(500);

    fn invite() -> Vec<u8> {
        let sdp = write_sdp("127.0.0.1:6000".parse().unwrap(), 1, None);
        format!(
            "INVITE sip:+15551230002@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9000;branch=z9hG4bKinv\r\n\
From: <sip:+15551230001@127.0.0.1>;tag=caller\r\nTo: <sip:+15551230002@127.0.0.1>\r\nCall-ID: call-1\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:+15551230001@127.0.0.1:9000>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .into_bytes()
    }

    fn request(method: &str, cseq: u32) -> Vec<u8> {
        format!(
            "{method} sip:+15551230002@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9000;branch=z9hG4bK{method}{cseq}\r\n\
From: <sip:+15551230001@127.0.0.1>;tag=caller\r\nTo: <sip:+15551230002@127.0.0.1>;tag=srv\r\nCall-ID: call-1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    struct Harness {
        now: Instant,
        d: CallFlow,
        sip: Vec<Vec<u8>>,
        rtp: usize,
        stored: Option<Vec<i16>>,
        missed: bool,
        ended: Option<EndReason>,
        tx: RtpSender,
        marks: Vec<(String, Mark)>,
        wrong: u32,
    }

    fn settings() -> CallSettings {
        CallSettings {
            t1: T1,
            t2: Duration::from_secs(4),
            max_samples: 8000 * 10,
            min_samples: 8000,
            silence: Duration::from_secs(3),
            voice_rms: 300.0,
        }
    }

    fn dialog() -> DialogInfo {
        DialogInfo {
            reply_to: "127.0.0.1:9000".parse().unwrap(),
            peer: "127.0.0.1:9000".parse().unwrap(),
            local_tag: "srv".into(),
            contact: "sip:+15551230002@127.0.0.1:5070".into(),
            via_host: "127.0.0.1:5070".into(),
            via_transport: "UDP",
            bye_branch: "z9hG4bKbye".into(),
        }
    }

    fn start(s: CallSettings, greeting_ms: usize) -> Harness {
        let greeting: Arc<[i16]> = vec![1000; greeting_ms * 8].into();
        harness(|now, m, neg| {
            CallFlow::new(
                now,
                s,
                m,
                &dialog(),
                neg,
                "v=0\r\n",
                greeting,
                RtpSender::new(Codec::Pcmu, 0, 1, 1, 1),
            )
        })
    }

    fn start_retrieval(audio_ms: usize) -> Harness {
        harness(|now, m, neg| {
            let msg = MenuMessage {
                id: "m1".into(),
                caller: boxless_core::PhoneNumber::parse_e164("+15551230001"),
                received_at_ms: 0,
                access_code: "123456".into(),
            };
            let setup = RetrievalSetup {
                menu: Menu::new(now, MenuSettings::default(), vec![msg], false, false),
                prompts: Arc::new(boxless_media::Prompts::load()),
                audio: HashMap::from([("m1".to_string(), Arc::from(vec![3000i16; audio_ms * 8]))]),
                utc_offset_min: 0,
            };
            CallFlow::new_retrieval(
                now,
                settings(),
                m,
                &dialog(),
                neg,
                "v=0\r\n",
                setup,
                RtpSender::new(Codec::Pcmu, 0, 1, 1, 1),
            )
        })
    }

    fn harness(
        make: impl FnOnce(Instant, &Message<'_>, &boxless_media::Negotiated) -> CallFlow,
    ) -> Harness {
        let now = Instant::now();
        let inv = invite();
        let m = Message::parse(&inv, false).unwrap();
        let neg = negotiate(m.body).unwrap();
        let d = make(now, &m, &neg);
        let mut h = Harness {
            now,
            d,
            sip: Vec::new(),
            rtp: 0,
            stored: None,
            missed: false,
            ended: None,
            tx: RtpSender::new(Codec::Pcmu, 0, 77, 5, 5),
            marks: Vec::new(),
            wrong: 0,
        };
        h.drain();
        h.run_until(now);
        h
    }

    impl Harness {
        fn drain(&mut self) {
            while let Some(o) = self.d.poll_output() {
                match o {
                    Output::Sip { bytes, .. } => self.sip.push(bytes),
                    Output::Rtp => self.rtp += 1,
                    Output::Store { samples } => self.stored = Some(samples),
                    Output::MissedCall => self.missed = true,
                    Output::Mark { id, mark } => self.marks.push((id, mark)),
                    Output::WrongCode => self.wrong += 1,
                    Output::Ended(r) => self.ended = Some(r),
                }
            }
        }

        /// Advances virtual time to `until`, firing every timer on the way.
        fn run_until(&mut self, until: Instant) {
            while let Some(t) = self.d.poll_timeout() {
                if t > until {
                    break;
                }
                self.now = t.max(self.now);
                self.d.handle_timeout(self.now);
                self.drain();
            }
            self.now = until;
        }

        fn sip(&mut self, b: &[u8]) {
            let m = Message::parse(b, false).unwrap();
            self.d
                .handle_sip(self.now, &m, "127.0.0.1:9000".parse().unwrap());
            self.drain();
        }

        /// Caller speaks for `ms` (20 ms packets, virtual time advancing).
        fn speak(&mut self, ms: u64, level: i16) {
            let mut b = Vec::new();
            for _ in 0..ms / 20 {
                self.tx.voice(&[level; 160], &mut b);
                self.d.handle_rtp(self.now, &b);
                self.drain();
                let next = self.now + Duration::from_millis(20);
                self.run_until(next);
            }
        }

        fn last_status(&self) -> Option<u16> {
            self.sip
                .last()
                .and_then(|b| Message::parse(b, false).ok())
                .and_then(|m| m.status())
        }
    }

    #[test]
    fn ok_is_retransmitted_until_ack() {
        let mut h = start(settings(), 200);
        assert_eq!(h.last_status(), Some(200));
        let t0 = h.now;
        h.run_until(t0 + Duration::from_millis(1600));
        // 200 at 0, T1, 3*T1 (then 7*T1 would be next).
        assert_eq!(h.sip.len(), 3);
        h.sip(&request("ACK", 1));
        h.run_until(t0 + Duration::from_secs(10));
        assert_eq!(h.sip.len(), 3, "no retransmission after ACK");
    }

    #[test]
    fn caller_bye_gets_200_only_after_the_store() {
        let mut h = start(settings(), 400);
        h.sip(&request("ACK", 1));
        let t = h.now + Duration::from_millis(400);
        h.run_until(t);
        assert_eq!(h.rtp, 20, "400 ms of greeting in 20 ms packets");
        h.speak(2000, 8000);
        let before = h.sip.len();
        h.sip(&request("BYE", 2));
        assert_eq!(h.sip.len(), before, "no 200 before the store answered");
        let samples = h.stored.take().expect("store requested");
        assert_eq!(samples.len(), 16_000);
        // A retransmitted BYE while storing is held too.
        h.sip(&request("BYE", 2));
        assert_eq!(h.sip.len(), before);
        h.d.handle_stored(h.now, true);
        h.drain();
        assert_eq!(h.last_status(), Some(200));
        assert_eq!(h.ended, Some(EndReason::CallerBye));
    }

    #[test]
    fn failed_store_answers_500() {
        let mut h = start(settings(), 20);
        h.sip(&request("ACK", 1));
        h.speak(1500, 8000);
        h.sip(&request("BYE", 2));
        h.d.handle_stored(h.now, false);
        h.drain();
        assert_eq!(h.last_status(), Some(500));
    }

    #[test]
    fn silence_ends_the_recording_trims_it_and_hangs_up() {
        let mut h = start(settings(), 20);
        h.sip(&request("ACK", 1));
        h.speak(1500, 8000);
        h.speak(1000, 0);
        let t = h.now + Duration::from_secs(5);
        h.run_until(t);
        let samples = h.stored.take().expect("stored after silence");
        assert_eq!(samples.len(), 12_000, "trailing silence dropped");
        h.d.handle_stored(h.now, true);
        h.drain();
        let bye = Message::parse(h.sip.last().unwrap(), false).unwrap();
        assert_eq!(bye.method(), Some(Method::Bye));
        assert_eq!(bye.request_uri(), Some("sip:+15551230001@127.0.0.1:9000"));
        assert!(bye.from.contains("tag=srv"));
        let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye\r\nFrom: <sip:x@y>;tag=srv\r\nTo: <sip:a@b>;tag=caller\r\nCall-ID: call-1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n";
        h.sip(resp.as_bytes());
        assert_eq!(h.ended, Some(EndReason::Silence));
    }

    #[test]
    fn short_call_is_a_missed_call_and_no_ack_ends_quietly() {
        let mut h = start(settings(), 20);
        h.sip(&request("ACK", 1));
        h.speak(400, 8000);
        h.sip(&request("BYE", 2));
        assert!(h.missed && h.stored.is_none());
        let mut s = settings();
        s.silence = Duration::from_secs(600);
        s.max_samples = 8000 * 600;
        let mut h = start(s, 20);
        let t = h.now + T1 * 65;
        h.run_until(t);
        assert!(!h.missed && h.stored.is_none());
        // BYE sent after 64*T1 without ACK; its retransmissions run out.
        let t = h.now + T1 * 70;
        h.run_until(t);
        assert_eq!(h.ended, Some(EndReason::NoAck));
    }

    #[test]
    fn retrieval_plays_through_marks_heard_then_says_goodbye() {
        let mut h = start_retrieval(1000);
        h.sip(&request("ACK", 1));
        let t = h.now + Duration::from_secs(60);
        h.run_until(t);
        assert_eq!(h.marks, [("m1".to_string(), Mark::Heard)]);
        assert!(
            h.rtp > 500,
            "header, audio, options, repeats, goodbye: {} packets",
            h.rtp
        );
        let bye = Message::parse(h.sip.last().unwrap(), false).unwrap();
        assert_eq!(
            bye.method(),
            Some(Method::Bye),
            "the server hangs up after goodbye"
        );
    }

    #[test]
    fn retrieval_takes_rfc4733_digits_during_playback() {
        let mut h = start_retrieval(30_000);
        h.sip(&request("ACK", 1));
        let t = h.now + Duration::from_secs(12);
        h.run_until(t);
        let mut b = Vec::new();
        h.tx.dtmf(101, '7', 800, true, true, &mut b);
        h.d.handle_rtp(h.now, &b);
        h.drain();
        // Deleted before it was heard through: never marked heard.
        assert_eq!(h.marks, [("m1".to_string(), Mark::Deleted)]);
        h.sip(&request("BYE", 2));
        assert_eq!(h.last_status(), Some(200));
        assert_eq!(h.ended, Some(EndReason::CallerBye));
    }

    #[test]
    fn max_length_stops_recording() {
        let mut s = settings();
        s.max_samples = 8000 * 2;
        let mut h = start(s, 20);
        h.sip(&request("ACK", 1));
        h.speak(3000, 8000);
        // Whichever comes first: 2 s of samples or 2 s of time since recording began.
        let n = h.stored.as_ref().map_or(0, |s| s.len());
        assert!((15_800..=16_000).contains(&n), "{n}");
    }
}
