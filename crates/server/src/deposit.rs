//! A deposit: greeting and tone, record until BYE / `#` / silence / maximum length, store,
//! then hang up. Sans-IO, over the caller's [`Leg`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxless_media::audio::convert;
use boxless_media::{Codec, Negotiated, Pending, Received, RtpReceiver};
use boxless_sip::Message;
use boxless_timer::TimerTable;

use crate::flow::{CallSettings, EndReason, Output, Playout};
use crate::leg::{Answer, Leg, LegEvent, PendingBye};

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Phase {
    /// Late offer: answered, the media comes with the ACK.
    AwaitingMedia,
    Greeting,
    Recording,
    Storing,
    /// Our BYE is out.
    Closing,
    Done,
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    /// The next greeting packet.
    Frame,
    /// Silence ends the recording.
    Silence,
    /// The longest message.
    MaxLength,
}

impl From<Timer> for usize {
    fn from(t: Timer) -> usize {
        t as usize
    }
}

/// One deposit call.
#[derive(Debug)]
pub struct Deposit {
    s: CallSettings,
    leg: Leg,
    out: VecDeque<Output>,
    phase: Phase,
    reason: Option<EndReason>,
    timers: TimerTable<Timer, 3>,
    /// The greeting at the call's rate (converted from 8 kHz for a G.722 call).
    greeting: Arc<[i16]>,
    greeting_rate: u32,
    play_pos: usize,
    playout: Playout,
    rx: RtpReceiver,
    last_voice_pos: usize,
    /// The caller's BYE, answered once the store has spoken.
    caller_bye: Option<PendingBye>,
    /// The recording's file was asked for (at the first voice packet, so that a crash
    /// even then leaves who called).
    recording: bool,
}

impl Deposit {
    /// Answers the INVITE and, once media is agreed, plays `greeting`.
    pub fn new(now: Instant, s: CallSettings, answer: Answer<'_>, greeting: Arc<[i16]>) -> Deposit {
        let (leg, out, tx) = answer.leg(now);
        let playout = Playout::new(tx, s.frames, now);
        let mut d = Deposit {
            rx: RtpReceiver::streaming(Codec::Pcmu, 0, None, s.max_samples, s.keep_g711)
                .voice_level(s.voice_rms),
            s,
            leg,
            out,
            phase: Phase::AwaitingMedia,
            reason: None,
            timers: TimerTable::default(),
            greeting,
            greeting_rate: 8000,
            play_pos: 0,
            playout,
            last_voice_pos: 0,
            caller_bye: None,
            recording: false,
        };
        if let Some(neg) = d.leg.media().copied() {
            d.media(now, neg);
        }
        d
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The packet announced by [`Output::Rtp`].
    pub fn rtp_packet(&self) -> &[u8] {
        self.playout.packet()
    }

    /// What [`Output::Record`] asks to append: the recording's rate and the audio due (all
    /// that is left once the recording ended).
    pub fn audio(&self) -> (u32, Pending<'_>) {
        let all = self.phase != Phase::Recording;
        (self.rx.rate(), self.rx.ready(all))
    }

    /// True while the message is being recorded (after the greeting, until it ends).
    pub fn is_recording(&self) -> bool {
        self.phase == Phase::Recording
    }

    /// The first `n` samples of [`Deposit::audio`] were written.
    pub fn audio_taken(&mut self, n: usize) {
        self.rx.consume(n);
    }

    /// When [`Deposit::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.leg.poll_timeout(), self.timers.next()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Advances timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(ev) = self.leg.handle_timeout(now, &mut self.out) {
            self.leg_event(now, ev);
        }
        if self.timers.fired(Timer::Frame, now) {
            self.play_frame(now);
        }
        if self.timers.fired(Timer::Silence, now) {
            self.finish(now, EndReason::Silence);
        }
        if self.timers.fired(Timer::MaxLength, now) {
            self.finish(now, EndReason::MaxLength);
        }
    }

    /// A SIP message of this dialog.
    pub fn handle_sip(&mut self, now: Instant, msg: &Message<'_>, reply_to: SocketAddr) {
        if let Some(ev) = self.leg.handle_sip(now, msg, reply_to, &mut self.out) {
            self.leg_event(now, ev);
        }
    }

    /// An RTP datagram from the caller's media address.
    pub fn handle_rtp(&mut self, now: Instant, datagram: &[u8]) {
        if self.phase != Phase::Recording {
            return;
        }
        match self.rx.receive(datagram) {
            Received::Audio { voice } => {
                if voice {
                    self.timers.set(Timer::Silence, now + self.s.silence);
                    self.last_voice_pos = self.rx.len();
                }
                if self.rx.len_8k() >= self.s.max_samples {
                    self.finish(now, EndReason::MaxLength);
                } else if !self.recording || !self.rx.ready(false).is_empty() {
                    self.recording = true;
                    self.out.push_back(Output::Record);
                }
            }
            Received::Dtmf('#') => self.finish(now, EndReason::Pound),
            _ => {}
        }
    }

    /// The store finished: `ok` tells whether the message (or alert) is durable.
    pub fn handle_stored(&mut self, now: Instant, ok: bool) {
        if self.phase == Phase::Storing {
            self.close(now, ok);
        }
    }

    fn leg_event(&mut self, now: Instant, ev: LegEvent) {
        match ev {
            LegEvent::Media(neg) => self.media(now, neg),
            LegEvent::Bye(bye) => self.caller_bye(now, bye),
            LegEvent::NoAck => self.finish(now, EndReason::NoAck),
            LegEvent::NoMedia => {
                // The leg hung up already; nothing was said, nobody to alert.
                self.reason = Some(EndReason::NoMedia);
                self.stop_media();
                self.phase = Phase::Closing;
            }
            LegEvent::Expired => self.finish(now, EndReason::SessionExpired),
            LegEvent::Closed => self.end(),
        }
    }

    /// Media agreed or changed (late offer's answer, re-INVITE, UPDATE): the recording goes
    /// on in the new codec; a hold or a new address restarts the silence count.
    fn media(&mut self, now: Instant, neg: Negotiated) {
        self.rx.set_payload(neg.codec, neg.pt, neg.dtmf_pt);
        self.playout.media(&neg);
        let rate = neg.codec.rate();
        if rate != self.greeting_rate {
            // The greeting plays at the call's rate (prompts are made at 8 kHz).
            self.greeting = convert(&self.greeting, self.greeting_rate, rate).into();
            self.play_pos = self.play_pos * rate as usize / self.greeting_rate as usize;
            self.greeting_rate = rate;
        }
        self.out.push_back(Output::MediaPeer(neg.remote));
        match self.phase {
            Phase::AwaitingMedia => {
                self.phase = Phase::Greeting;
                let first = self.playout.start(now);
                self.timers.set(Timer::Frame, first);
            }
            Phase::Recording => self.timers.set(Timer::Silence, now + self.s.silence),
            _ => {}
        }
    }

    fn play_frame(&mut self, now: Instant) {
        if self.phase != Phase::Greeting {
            return;
        }
        let end = (self.play_pos + self.playout.codec().frame()).min(self.greeting.len());
        let frame = &self.greeting[self.play_pos..end];
        self.playout
            .frame(now, frame, self.leg.may_send(), &mut self.out);
        self.play_pos = end;
        if self.play_pos >= self.greeting.len() {
            self.phase = Phase::Recording;
            self.timers.set(Timer::Silence, now + self.s.silence);
            self.timers
                .set(Timer::MaxLength, now + max_duration(self.s.max_samples));
        } else {
            self.timers.set(Timer::Frame, self.playout.next());
        }
    }

    fn caller_bye(&mut self, now: Instant, bye: PendingBye) {
        match self.phase {
            Phase::AwaitingMedia | Phase::Greeting | Phase::Recording => {
                self.caller_bye = Some(bye);
                self.finish(now, EndReason::CallerBye);
            }
            Phase::Storing => {
                self.caller_bye.get_or_insert(bye);
            }
            Phase::Closing | Phase::Done => {
                // Both hung up at once: whatever was to be stored is.
                self.leg.answer_bye(bye, true, &mut self.out);
                self.end();
            }
        }
    }

    fn stop_media(&mut self) {
        self.timers.clear(Timer::Frame);
        self.timers.clear(Timer::Silence);
        self.timers.clear(Timer::MaxLength);
    }

    fn finish(&mut self, now: Instant, reason: EndReason) {
        if !matches!(
            self.phase,
            Phase::AwaitingMedia | Phase::Greeting | Phase::Recording
        ) {
            return;
        }
        self.reason = Some(reason);
        self.phase = Phase::Storing;
        self.stop_media();
        if reason == EndReason::NoAck {
            // Never established: nothing to keep, nobody to alert twice.
            self.close(now, true);
            return;
        }
        let min = self.s.min_samples * self.rx.rate() as usize / 8000;
        let mut keep = self.rx.len();
        if reason == EndReason::Silence {
            // Drop the trailing silence that ended the recording.
            keep = self.last_voice_pos.max(min.min(keep));
        }
        if keep >= min {
            self.out.push_back(Output::Record);
            self.out.push_back(Output::Store {
                keep: keep as u64,
                voiced: self.last_voice_pos > 0,
            });
        } else {
            self.out.push_back(Output::MissedCall);
        }
    }

    fn close(&mut self, now: Instant, ok: bool) {
        if let Some(bye) = self.caller_bye.take() {
            self.leg.answer_bye(bye, ok, &mut self.out);
            self.end();
            return;
        }
        self.phase = Phase::Closing;
        let reason = self.reason.unwrap_or(EndReason::CallerBye);
        self.leg.bye(now, reason.header(), &mut self.out);
    }

    fn end(&mut self) {
        if self.phase != Phase::Done {
            self.phase = Phase::Done;
            self.out
                .push_back(Output::Ended(self.reason.unwrap_or(EndReason::CallerBye)));
        }
    }
}

fn max_duration(max_samples: usize) -> Duration {
    Duration::from_millis(max_samples as u64 / 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{T1, deposit, invite, request, settings};
    use boxless_sip::Method;

    #[test]
    fn ok_is_retransmitted_until_ack() {
        let mut h = deposit(settings(), 200, &invite(true, ""));
        assert_eq!(h.last_status(), Some(200));
        let t0 = h.now;
        h.run_until(t0 + Duration::from_millis(1600));
        // 200 at 0, T1, 3*T1 (then 7*T1 would be next).
        assert_eq!(h.sip.len(), 3);
        h.sip(&request("ACK", 1, "", ""));
        h.run_until(t0 + Duration::from_secs(10));
        assert_eq!(h.sip.len(), 3, "no retransmission after ACK");
    }

    #[test]
    fn caller_bye_gets_200_only_after_the_store() {
        let mut h = deposit(settings(), 400, &invite(true, ""));
        h.sip(&request("ACK", 1, "", ""));
        h.wait(Duration::from_millis(400));
        assert_eq!(h.rtp, 20, "400 ms of greeting in 20 ms packets");
        h.speak(2000, 8000);
        let before = h.sip.len();
        h.sip(&request("BYE", 2, "", ""));
        assert_eq!(h.sip.len(), before, "no 200 before the store answered");
        let samples = h.stored.take().expect("store requested");
        assert_eq!(samples.len(), 16_000);
        // A retransmitted BYE while storing is held too.
        h.sip(&request("BYE", 2, "", ""));
        assert_eq!(h.sip.len(), before);
        h.d.handle_stored(h.now, true);
        h.drain();
        assert_eq!(h.last_status(), Some(200));
        assert_eq!(h.ended, Some(EndReason::CallerBye));
    }

    #[test]
    fn a_long_message_is_written_as_it_comes_about_once_a_second() {
        let mut s = settings();
        s.max_samples = 8000 * 600;
        let mut h = deposit(s, 20, &invite(true, ""));
        h.sip(&request("ACK", 1, "", ""));
        h.wait(Duration::from_millis(40));
        h.speak(60_000, 8000);
        // The first write starts the file at once (a crash then still knows who called).
        assert!((60..=62).contains(&h.writes), "{} writes", h.writes);
        assert!(
            h.largest_write <= 8800,
            "{} samples at most",
            h.largest_write
        );
        assert!(
            h.recorded.len() >= 59 * 8000,
            "{} written",
            h.recorded.len()
        );
        h.sip(&request("BYE", 2, "", ""));
        assert_eq!(h.stored.take().map(|s| s.len()), Some(480_000));
    }

    #[test]
    fn failed_store_answers_500() {
        let mut h = deposit(settings(), 20, &invite(true, ""));
        h.sip(&request("ACK", 1, "", ""));
        h.speak(1500, 8000);
        h.sip(&request("BYE", 2, "", ""));
        h.d.handle_stored(h.now, false);
        h.drain();
        assert_eq!(h.last_status(), Some(500));
    }

    #[test]
    fn silence_ends_the_recording_trims_it_and_hangs_up() {
        let mut h = deposit(settings(), 20, &invite(true, ""));
        h.sip(&request("ACK", 1, "", ""));
        h.speak(1500, 8000);
        h.speak(1000, 0);
        h.wait(Duration::from_secs(5));
        let samples = h.stored.take().expect("stored after silence");
        assert_eq!(samples.len(), 12_000, "trailing silence dropped");
        h.d.handle_stored(h.now, true);
        h.drain();
        let bye = h.last();
        assert_eq!(bye.method(), Some(Method::Bye));
        assert_eq!(bye.request_uri(), Some("sip:+15551230001@127.0.0.1:9000"));
        assert!(bye.from.contains("tag=srv"));
        assert!(bye.header("reason").unwrap().starts_with("Q.850;cause=16"));
        h.answer_last(200);
        assert_eq!(h.ended, Some(EndReason::Silence));
    }

    #[test]
    fn short_call_is_a_missed_call_and_no_ack_ends_quietly() {
        let mut h = deposit(settings(), 20, &invite(true, ""));
        h.sip(&request("ACK", 1, "", ""));
        h.speak(400, 8000);
        h.sip(&request("BYE", 2, "", ""));
        assert!(h.missed && h.stored.is_none());
        let mut s = settings();
        s.silence = Duration::from_secs(600);
        s.max_samples = 8000 * 600;
        let mut h = deposit(s, 20, &invite(true, ""));
        h.wait(T1 * 65);
        assert!(!h.missed && h.stored.is_none());
        // BYE sent after 64*T1 without ACK; its retransmissions run out.
        h.wait(T1 * 70);
        assert_eq!(h.ended, Some(EndReason::NoAck));
    }

    #[test]
    fn max_length_stops_recording() {
        let mut s = settings();
        s.max_samples = 8000 * 2;
        let mut h = deposit(s, 20, &invite(true, ""));
        h.sip(&request("ACK", 1, "", ""));
        h.speak(3000, 8000);
        // Whichever comes first: 2 s of samples or 2 s of time since recording began.
        let n = h.stored.as_ref().map_or(0, |s| s.len());
        assert!((15_800..=16_000).contains(&n), "{n}");
    }

    #[test]
    fn a_g722_call_is_greeted_and_recorded_wideband() {
        let g722 = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 9 0 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
        let inv = String::from_utf8(invite(false, "")).unwrap().replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{g722}",
                g722.len()
            ),
        );
        let mut h = deposit(settings(), 200, inv.as_bytes());
        assert!(String::from_utf8_lossy(h.last().body).contains("a=rtpmap:9 G722/8000"));
        h.sip(&request("ACK", 1, "", ""));
        h.wait(Duration::from_millis(200));
        assert_eq!(h.rtp, 10, "200 ms of greeting in 20 ms G.722 packets");
        let mut tx = boxless_media::RtpSender::new(Codec::G722, 9, 5, 1, 1);
        h.send_with(&mut tx, 75, &[8000; 320]);
        h.sip(&request("BYE", 2, "", ""));
        assert_eq!(h.stored_rate, Some(16_000));
        assert_eq!(
            h.stored.as_ref().map(Vec::len),
            Some(24_000),
            "1.5 s at 16 kHz"
        );
    }
}
