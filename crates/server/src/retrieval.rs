//! A retrieval: a call to a link number runs the menu, playing prompts and messages and
//! taking digits (RFC 4733 events, else in-band tones). Sans-IO, over the caller's [`Leg`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use boxless_core::recipient::Language;
use boxless_core::util::civil;
use boxless_media::audio::convert_into;
use boxless_media::{Codec, DtmfDetector, FRAME, Negotiated, Prompts, Received, RtpReceiver};
use boxless_sip::Message;
use boxless_timer::TimerTable;

use crate::flow::{EndReason, FrameGrid, Output, Playout};
use crate::leg::{Answer, Leg, LegEvent};
use crate::menu::{Action, Menu, Prompt};

/// What a retrieval call plays from: its menu, the prompts and the messages' audio.
#[derive(Debug)]
pub struct RetrievalSetup {
    /// The menu, already started.
    pub menu: Menu,
    /// Spoken prompts.
    pub prompts: Arc<Prompts>,
    /// Their language: the recipient's.
    pub language: Language,
    /// Audio of each message the menu may play, by id, with its sample rate.
    pub audio: HashMap<String, (u32, Arc<[i16]>)>,
    /// Minutes east of UTC for "received <date, time>".
    pub utc_offset_min: i32,
    /// The grid the prompts' frames go out on.
    pub frames: FrameGrid,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Phase {
    /// Late offer: answered, the media comes with the ACK.
    AwaitingMedia,
    Menu,
    /// Our BYE is out.
    Closing,
    Done,
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    /// The next prompt packet.
    Frame,
}

impl From<Timer> for usize {
    fn from(t: Timer) -> usize {
        t as usize
    }
}

/// One retrieval call.
#[derive(Debug)]
pub struct Retrieval {
    leg: Leg,
    out: VecDeque<Output>,
    phase: Phase,
    reason: Option<EndReason>,
    timers: TimerTable<Timer, 1>,
    setup: RetrievalSetup,
    /// What is being played, rendered from prompts and messages.
    seq: Vec<i16>,
    pos: usize,
    /// Where the message's audio in `seq` ends (the menu then counts it heard).
    audio_end: Option<usize>,
    playout: Playout,
    /// Digits only: the receiver keeps no audio.
    rx: RtpReceiver,
    inband: DtmfDetector,
    saw_events: bool,
    decoded: Vec<i16>,
    codec: Codec,
    pt: u8,
    /// A greeting being recorded: placed by timestamp, at most the limit.
    taking: Option<Box<RtpReceiver>>,
    /// The greeting recorded last, to play back and keep.
    taken: Vec<i16>,
}

/// A greeting shorter than this is not kept (a slip of the finger, as the API refuses it).
const GREETING_MIN: usize = 4000;

/// Left off the end of a greeting ended by `#`: an in-band `#` is audio too, and the
/// caller's hand moving to the key is not part of the greeting.
const GREETING_TAIL: usize = 2000;

impl Retrieval {
    /// Answers the INVITE and, once media is agreed, runs `setup.menu`.
    pub fn new(now: Instant, answer: Answer<'_>, setup: RetrievalSetup) -> Retrieval {
        let (leg, out, tx) = answer.leg(now);
        let playout = Playout::new(tx, setup.frames, now);
        let mut r = Retrieval {
            leg,
            out,
            phase: Phase::AwaitingMedia,
            reason: None,
            timers: TimerTable::default(),
            setup,
            seq: Vec::new(),
            pos: 0,
            audio_end: None,
            playout,
            rx: RtpReceiver::new(Codec::Pcmu, 0, None, 0),
            inband: DtmfDetector::default(),
            saw_events: false,
            decoded: Vec::with_capacity(FRAME * 2),
            codec: Codec::Pcmu,
            pt: 0,
            taking: None,
            taken: Vec::new(),
        };
        if let Some(neg) = r.leg.media().copied() {
            r.media(now, neg);
        }
        r
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The packet announced by [`Output::Rtp`].
    pub fn rtp_packet(&self) -> &[u8] {
        self.playout.packet()
    }

    /// When [`Retrieval::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let menu = (self.phase == Phase::Menu)
            .then(|| self.setup.menu.poll_timeout())
            .flatten();
        [self.leg.poll_timeout(), self.timers.next(), menu]
            .into_iter()
            .flatten()
            .min()
    }

    /// Advances timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(ev) = self.leg.handle_timeout(now, &mut self.out) {
            self.leg_event(now, ev);
        }
        if self.phase != Phase::Menu {
            return;
        }
        if self.timers.fired(Timer::Frame, now) {
            self.frame(now);
        }
        self.setup.menu.handle_timeout(now);
        self.drain_menu(now);
    }

    /// A SIP message of this dialog.
    pub fn handle_sip(&mut self, now: Instant, msg: &Message<'_>, reply_to: SocketAddr) {
        if let Some(ev) = self.leg.handle_sip(now, msg, reply_to, &mut self.out) {
            self.leg_event(now, ev);
        }
    }

    /// An RTP datagram from the caller's media address.
    pub fn handle_rtp(&mut self, now: Instant, datagram: &[u8]) {
        if self.phase != Phase::Menu {
            return;
        }
        let mut digits: [char; 4] = ['\0'; 4];
        let mut n = 0;
        if let Some(take) = &mut self.taking {
            take.receive(datagram);
        }
        match self.rx.receive(datagram) {
            Received::Dtmf(c) => {
                self.saw_events = true;
                digits[0] = c;
                n = 1;
            }
            Received::DtmfProgress => self.saw_events = true,
            // In-band tones only from gateways that send no RFC 4733 events.
            _ if !self.saw_events => {
                self.decoded.clear();
                if boxless_media::rtp::decode_voice(
                    datagram,
                    self.codec,
                    self.pt,
                    &mut self.decoded,
                ) {
                    self.inband.push(&self.decoded, |c| {
                        if n < digits.len() {
                            digits[n] = c;
                            n += 1;
                        }
                    });
                }
            }
            _ => {}
        }
        for &c in &digits[..n] {
            self.setup.menu.digit(now, c);
            self.drain_menu(now);
        }
    }

    /// The link number got locked (see [`crate::menu::Menu::lock_out`]).
    pub fn lock_out(&mut self, now: Instant) {
        self.setup.menu.lock_out();
        self.drain_menu(now);
    }

    fn leg_event(&mut self, now: Instant, ev: LegEvent) {
        match ev {
            LegEvent::Media(neg) => self.media(now, neg),
            LegEvent::Bye(bye) => {
                self.reason.get_or_insert(EndReason::CallerBye);
                self.setup.menu.hung_up();
                self.drain_menu(now);
                self.leg.answer_bye(bye, true, &mut self.out);
                self.end();
            }
            LegEvent::NoAck | LegEvent::Expired => {
                let reason = if matches!(ev, LegEvent::NoAck) {
                    EndReason::NoAck
                } else {
                    EndReason::SessionExpired
                };
                self.hang_up(now, reason);
            }
            LegEvent::NoMedia => {
                self.reason = Some(EndReason::NoMedia);
                self.phase = Phase::Closing;
            }
            LegEvent::Closed => self.end(),
        }
    }

    fn media(&mut self, now: Instant, neg: Negotiated) {
        self.rx.set_payload(neg.codec, neg.pt, neg.dtmf_pt);
        (self.codec, self.pt) = (neg.codec, neg.pt);
        self.playout.media(&neg);
        self.out.push_back(Output::MediaPeer(neg.remote));
        if self.phase == Phase::AwaitingMedia {
            self.phase = Phase::Menu;
            self.drain_menu(now);
        }
    }

    fn drain_menu(&mut self, now: Instant) {
        while self.phase == Phase::Menu
            && let Some(action) = self.setup.menu.poll_action()
        {
            match action {
                Action::Play(seq) => {
                    self.render(&seq);
                    let first = self.playout.start(now);
                    self.timers.set(Timer::Frame, first);
                }
                Action::Mark { id, mark } => self.out.push_back(Output::Mark { id, mark }),
                Action::WrongCode => self.out.push_back(Output::WrongCode),
                Action::StartRecording { max } => {
                    let max = (max.as_millis() as usize).saturating_mul(8);
                    self.taking = Some(Box::new(RtpReceiver::new(self.codec, self.pt, None, max)));
                }
                Action::StopRecording => {
                    if let Some(take) = self.taking.take() {
                        let (rate, full) = (take.rate(), take.len_8k() >= take.max_samples());
                        let mut buf = Vec::new();
                        convert_into(&take.into_samples(), rate, 8000, &mut buf);
                        if !full {
                            buf.truncate(buf.len().saturating_sub(GREETING_TAIL));
                        }
                        self.taken = buf;
                    }
                }
                Action::KeepGreeting { owner } => {
                    if self.taken.len() >= GREETING_MIN {
                        let audio = std::mem::take(&mut self.taken);
                        self.out.push_back(Output::Greeting {
                            owner,
                            audio: Some(audio),
                        });
                    }
                }
                Action::RemoveGreeting { owner } => {
                    self.out.push_back(Output::Greeting { owner, audio: None })
                }
                Action::Hangup => self.hang_up(now, EndReason::MenuDone),
            }
        }
    }

    fn frame(&mut self, now: Instant) {
        let end = (self.pos + self.playout.codec().frame()).min(self.seq.len());
        self.playout.frame(
            now,
            &self.seq[self.pos..end],
            self.leg.may_send(),
            &mut self.out,
        );
        self.pos = end;
        if self.audio_end.is_some_and(|e| self.pos >= e) {
            self.audio_end = None;
            self.setup.menu.audio_finished();
        }
        if self.pos >= self.seq.len() {
            self.setup.menu.played(now);
        } else {
            self.timers.set(Timer::Frame, self.playout.next());
        }
        self.drain_menu(now);
    }

    fn hang_up(&mut self, now: Instant, reason: EndReason) {
        if self.phase == Phase::Closing || self.phase == Phase::Done {
            return;
        }
        self.reason = Some(reason);
        self.phase = Phase::Closing;
        self.timers.clear(Timer::Frame);
        self.leg.bye(now, reason.header(), &mut self.out);
    }

    fn end(&mut self) {
        if self.phase != Phase::Done {
            self.phase = Phase::Done;
            self.timers.clear(Timer::Frame);
            self.out
                .push_back(Output::Ended(self.reason.unwrap_or(EndReason::CallerBye)));
        }
    }

    /// Turns a prompt sequence into audio at the call's rate (prompts are made at 8 kHz,
    /// a message is stored at 8 or 16 kHz); remembers where a message's audio ends.
    fn render(&mut self, seq: &[Prompt]) {
        let rate = self.playout.codec().rate();
        let p = self.setup.prompts.voice(self.setup.language);
        let mut out = std::mem::take(&mut self.seq);
        out.clear();
        // Prompts gather at 8 kHz and join `out` converted, before a message and at the end.
        let mut said: Vec<i16> = Vec::new();
        let mut audio_end = None;
        for item in seq {
            match item {
                Prompt::MessageFrom {
                    caller,
                    received_at_ms,
                } => {
                    said.extend_from_slice(p.get("message-from"));
                    match caller {
                        Some(c) => p.say_digits(&c.digits(), &mut said),
                        None => said.extend_from_slice(p.get("unknown-caller")),
                    }
                    p.pause(200, &mut said);
                    let (_, month, day, h, m, _) =
                        civil(received_at_ms / 1000, self.setup.utc_offset_min);
                    p.say_received(month, day, h, m, &mut said);
                    p.pause(500, &mut said);
                }
                Prompt::RecordedGreeting => {
                    said.extend_from_slice(&self.taken);
                    p.pause(500, &mut said);
                }
                Prompt::Audio(id) => {
                    convert_into(&said, 8000, rate, &mut out);
                    said.clear();
                    if let Some((from, a)) = self.setup.audio.get(id) {
                        convert_into(a, *from, rate, &mut out);
                    }
                    audio_end = Some(out.len());
                    p.pause(500, &mut said);
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
                        Prompt::GreetingRecord => "greeting-record",
                        Prompt::GreetingIs => "greeting-is",
                        Prompt::GreetingOptions => "greeting-options",
                        Prompt::GreetingSaved => "greeting-saved",
                        Prompt::GreetingRemoved => "greeting-removed",
                        Prompt::OwnPhoneOnly => "own-phone-only",
                        _ => "goodbye",
                    };
                    said.extend_from_slice(p.get(name));
                    p.pause(200, &mut said);
                    if matches!(other, Prompt::GreetingRecord) {
                        said.extend_from_slice(self.setup.prompts.tone());
                    }
                }
            }
        }
        convert_into(&said, 8000, rate, &mut out);
        self.seq = out;
        self.pos = 0;
        self.audio_end = audio_end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{invite, request, retrieval};
    use crate::menu::Mark;
    use boxless_sip::Method;
    use std::time::Duration;

    #[test]
    fn plays_through_marks_heard_then_says_goodbye() {
        let mut h = retrieval(1000, &invite(true, ""));
        h.sip(&request("ACK", 1, "", ""));
        h.wait(Duration::from_secs(60));
        assert_eq!(h.marks, [("m1".to_string(), Mark::Heard)]);
        assert!(
            h.rtp > 500,
            "header, audio, options, repeats, goodbye: {} packets",
            h.rtp
        );
        assert_eq!(
            h.last().method(),
            Some(Method::Bye),
            "the server hangs up after goodbye"
        );
    }

    #[test]
    fn takes_rfc4733_digits_during_playback() {
        let mut h = retrieval(30_000, &invite(true, ""));
        h.sip(&request("ACK", 1, "", ""));
        h.wait(Duration::from_secs(12));
        let mut b = Vec::new();
        h.tx.dtmf(101, '7', 800, true, true, &mut b);
        h.d.handle_rtp(h.now, &b);
        h.drain();
        // Deleted before it was heard through: never marked heard.
        assert_eq!(h.marks, [("m1".to_string(), Mark::Deleted)]);
        h.sip(&request("BYE", 2, "", ""));
        assert_eq!(h.last_status(), Some(200));
        assert_eq!(h.ended, Some(EndReason::CallerBye));
    }
}
