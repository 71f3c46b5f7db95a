//! A virtual-time harness for the call machines' unit tests: no sockets, no clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxless_media::{Codec, RtpSender, write_sdp};
use boxless_sip::{Dialog, Local, Message, SipTimers};

use crate::admission::{self, Context};
use crate::call::{
    Answer, CallFlow, CallSettings, Deposit, EndReason, FrameGrid, LegSetup, Output, Retrieval,
    RetrievalSetup,
};
use crate::menu::{Mark, Menu, MenuMessage, MenuSettings};

pub(crate) const T1: Duration = Duration::from_millis(500);
pub(crate) const CALLER: &str = "127.0.0.1:9000";

pub(crate) fn settings() -> CallSettings {
    CallSettings {
        max_samples: 8000 * 10,
        min_samples: 8000,
        silence: Duration::from_secs(3),
        voice_rms: 300.0,
        keep_g711: true,
        frames: FrameGrid(Instant::now()),
    }
}

/// The caller's INVITE: with SDP (`offer`), else a late offer; `extra` header lines.
pub(crate) fn invite(offer: bool, extra: &str) -> Vec<u8> {
    let sdp = if offer {
        write_sdp("127.0.0.1:6000".parse().unwrap(), 1, 1, None)
    } else {
        String::new()
    };
    let ctype = if offer {
        "Content-Type: application/sdp\r\n"
    } else {
        ""
    };
    format!(
        "INVITE sip:+15551230002@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9000;branch=z9hG4bKinv\r\n\
From: <sip:+15551230001@127.0.0.1>;tag=caller\r\nTo: <sip:+15551230002@127.0.0.1>\r\nCall-ID: call-1\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:+15551230001@127.0.0.1:9000>\r\n{extra}{ctype}Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

/// An in-dialog request from the caller.
pub(crate) fn request(method: &str, cseq: u32, extra: &str, body: &str) -> Vec<u8> {
    let ctype = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_string()
    };
    format!(
        "{method} sip:+15551230002@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9000;branch=z9hG4bK{method}{cseq}\r\n\
From: <sip:+15551230001@127.0.0.1>;tag=caller\r\nTo: <sip:+15551230002@127.0.0.1>;tag=srv\r\nCall-ID: call-1\r\nCSeq: {cseq} {method}\r\n\
Contact: <sip:+15551230001@127.0.0.1:9000>\r\n{extra}{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An SDP body from the caller at `port` with `pts` and `dir`.
pub(crate) fn sdp(port: u16, pts: &str, dir: &str) -> String {
    format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP {pts}\r\na=rtpmap:101 telephone-event/8000\r\na={dir}\r\n"
    )
}

pub(crate) struct Harness {
    pub(crate) now: Instant,
    pub(crate) d: CallFlow,
    pub(crate) sip: Vec<Vec<u8>>,
    pub(crate) rtp: usize,
    pub(crate) media_peer: Option<SocketAddr>,
    /// What [`Output::Record`] appended so far, in how many writes, the largest of them.
    pub(crate) recorded: Vec<i16>,
    pub(crate) writes: usize,
    pub(crate) largest_write: usize,
    pub(crate) stored: Option<Vec<i16>>,
    pub(crate) stored_rate: Option<u32>,
    pub(crate) missed: bool,
    pub(crate) ended: Option<EndReason>,
    pub(crate) tx: RtpSender,
    pub(crate) marks: Vec<(String, Mark)>,
    pub(crate) wrong: u32,
    /// Greetings kept or removed by the retrieval menu.
    pub(crate) greetings: Vec<(boxless_core::PhoneNumber, Option<Vec<i16>>)>,
}

/// Runs admission and answers like the driver does.
pub(crate) fn start_with(
    inv: &[u8],
    make: impl FnOnce(Instant, Answer<'_>) -> CallFlow,
) -> Harness {
    let now = Instant::now();
    let m = Message::parse(inv, false).unwrap();
    let numbering = boxless_core::Numbering::new("1").unwrap();
    let pool = boxless_core::LinkPool::parse(&["+15550001000-+15550001099"]).unwrap();
    let ctx = Context {
        draining: false,
        active: 0,
        capacity: 10,
        numbering: &numbering,
        links: crate::admission::Links::Pool(&pool),
        min_se: 90,
    };
    let a = admission::admit(&m, &ctx).expect("admitted");
    let dialog = Dialog::uas(
        &m,
        Local {
            tag: "srv".into(),
            contact: "sip:+15551230002@127.0.0.1:5070".into(),
            transport: "UDP",
            sent_by: "127.0.0.1:5070".into(),
            branch_prefix: "z9hG4bKsrv".into(),
        },
    )
    .unwrap();
    let answer = Answer {
        invite: &m,
        dialog,
        setup: LegSetup {
            reply_to: CALLER.parse().unwrap(),
            fallback_hop: CALLER.parse().unwrap(),
            reliable: false,
            media: "127.0.0.1:20000".parse().unwrap(),
            session_id: 7,
            timers: SipTimers {
                t1: T1,
                t2: Duration::from_secs(4),
            },
            min_se: 90,
        },
        offer: a.offer,
        timer: a.timer,
        tx: RtpSender::new(Codec::Pcmu, 0, 1, 1, 1),
    };
    let d = make(now, answer);
    let mut h = Harness {
        now,
        d,
        sip: Vec::new(),
        rtp: 0,
        media_peer: None,
        recorded: Vec::new(),
        writes: 0,
        largest_write: 0,
        stored: None,
        stored_rate: None,
        missed: false,
        ended: None,
        tx: RtpSender::new(Codec::Pcmu, 0, 77, 5, 5),
        marks: Vec::new(),
        wrong: 0,
        greetings: Vec::new(),
    };
    h.drain();
    h.run_until(now);
    h
}

pub(crate) fn deposit(s: CallSettings, greeting_ms: usize, inv: &[u8]) -> Harness {
    let greeting: Arc<[i16]> = vec![1000; greeting_ms * 8].into();
    start_with(inv, |now, a| {
        // The grid from the call's start: the tests' clock counts from there.
        let s = CallSettings {
            frames: FrameGrid(now),
            ..s
        };
        CallFlow::Deposit(Box::new(Deposit::new(now, s, a, greeting)))
    })
}

pub(crate) fn retrieval(audio_ms: usize, inv: &[u8]) -> Harness {
    start_with(inv, |now, a| {
        let msg = MenuMessage {
            id: "m1".into(),
            caller: boxless_core::PhoneNumber::parse_e164("+15551230001"),
            received_at_ms: 0,
            access_code: "123456".into(),
        };
        let setup = RetrievalSetup {
            menu: Menu::new(MenuSettings::default(), vec![msg], false, false),
            prompts: Arc::new(boxless_media::Prompts::load()),
            language: boxless_core::recipient::Language::En,
            audio: HashMap::from([(
                "m1".to_string(),
                (8000, Arc::from(vec![3000i16; audio_ms * 8])),
            )]),
            utc_offset_min: 0,
            frames: FrameGrid(now),
        };
        CallFlow::Retrieval(Box::new(Retrieval::new(now, a, setup)))
    })
}

impl Harness {
    pub(crate) fn drain(&mut self) {
        while let Some(o) = self.d.poll_output() {
            match o {
                Output::Sip { bytes, .. } => self.sip.push(bytes),
                Output::Rtp => self.rtp += 1,
                Output::MediaPeer(a) => self.media_peer = Some(a),
                Output::Record => {
                    let (rate, audio) = self.d.audio();
                    let n = audio.len();
                    audio.decode_into(&mut self.recorded);
                    self.writes += 1;
                    self.largest_write = self.largest_write.max(n);
                    self.d.audio_taken(n);
                    self.stored_rate = Some(rate);
                }
                Output::Store { keep, .. } => {
                    let mut samples = std::mem::take(&mut self.recorded);
                    samples.truncate(keep as usize);
                    self.stored = Some(samples);
                }
                Output::MissedCall => self.missed = true,
                Output::Mark { id, mark } => self.marks.push((id, mark)),
                Output::WrongCode => self.wrong += 1,
                Output::Greeting { owner, audio } => self.greetings.push((owner, audio)),
                Output::Ended(r) => self.ended = Some(r),
            }
        }
    }

    /// Advances virtual time to `until`, firing every timer on the way.
    pub(crate) fn run_until(&mut self, until: Instant) {
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

    pub(crate) fn wait(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    pub(crate) fn sip(&mut self, b: &[u8]) {
        let m = Message::parse(b, false).unwrap();
        self.d.handle_sip(self.now, &m, CALLER.parse().unwrap());
        self.drain();
    }

    /// The caller answers our last request with `code` (its Via, hence its branch, kept).
    pub(crate) fn answer_last(&mut self, code: u16) {
        let ours = self.sip.last().expect("a request of ours").clone();
        let m = Message::parse(&ours, false).unwrap();
        let mut b = Vec::new();
        boxless_sip::write_response(&mut b, &m, code, "OK", None, None, b"", None);
        self.sip(&b);
    }

    /// The caller sends `packets` 20 ms packets of `frame` with its own sender `tx` (another
    /// codec or stream than [`Harness::speak`]'s), virtual time advancing.
    pub(crate) fn send_with(&mut self, tx: &mut RtpSender, packets: usize, frame: &[i16]) {
        let mut b = Vec::new();
        for _ in 0..packets {
            tx.voice(frame, &mut b);
            self.d.handle_rtp(self.now, &b);
            self.drain();
            self.wait(Duration::from_millis(20));
        }
    }

    /// Caller speaks for `ms` (20 ms packets, virtual time advancing).
    pub(crate) fn speak(&mut self, ms: u64, level: i16) {
        let mut tx = std::mem::replace(&mut self.tx, RtpSender::new(Codec::Pcmu, 0, 0, 0, 0));
        self.send_with(&mut tx, (ms / 20) as usize, &[level; 160]);
        self.tx = tx;
    }

    pub(crate) fn last(&self) -> Message<'_> {
        Message::parse(self.sip.last().expect("a SIP message"), false).unwrap()
    }

    pub(crate) fn last_status(&self) -> Option<u16> {
        self.sip
            .last()
            .and_then(|b| Message::parse(b, false).ok())
            .and_then(|m| m.status())
    }
}
