//! A call, as one of two sans-IO machines over the caller's [`Leg`]: a [`Deposit`]
//! (greeting, record, store, hang up) or a [`Retrieval`] (the menu, prompts and messages).
//! [`CallFlow`] is what the driver holds; the machines never read a clock or a socket.
//!
//! The promise a deposit keeps: the caller's BYE is answered `200` only after the store
//! reported the message (or the missed-call alert) durable. A failed store answers `500`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use boxless_media::{Codec, FRAME, Pending, RtpSender};
use boxless_sip::{Dialog, Message};

pub use crate::deposit::Deposit;
use crate::leg::{Leg, LegSetup};
use crate::menu::Mark;
pub use crate::retrieval::{Retrieval, RetrievalSetup};
use boxless_media::Negotiated;
use boxless_sip::session::SessionTimer;

/// Timers and limits of a call.
#[derive(Debug, Clone)]
pub struct CallSettings {
    /// Recording stops at this many samples (8 kHz).
    pub max_samples: usize,
    /// Below this many samples no message is kept.
    pub min_samples: usize,
    /// This much silence ends the recording.
    pub silence: Duration,
    /// RMS above which a packet counts as voice.
    pub voice_rms: f64,
    /// A G.711 message is kept in the caller's law (`messages.audio_format = "g711"`).
    pub keep_g711: bool,
}

/// Why a call ended.
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
    /// A late offer got no usable answer in the ACK.
    NoMedia,
    /// The session timer ran out without a refresh (RFC 4028).
    SessionExpired,
}

impl EndReason {
    /// The `Reason` header value (RFC 3326) of our BYE.
    pub(crate) fn header(self) -> &'static str {
        match self {
            EndReason::NoAck => "SIP;cause=408;text=\"No ACK\"",
            EndReason::NoMedia => "SIP;cause=488;text=\"No usable SDP answer\"",
            EndReason::SessionExpired => "SIP;cause=408;text=\"Session expired\"",
            _ => "Q.850;cause=16;text=\"Normal call clearing\"",
        }
    }
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
    /// The caller's media address is (now) this one.
    MediaPeer(SocketAddr),
    /// Append [`CallFlow::audio`] to the call's recording (starting it at the first), then
    /// call [`CallFlow::audio_taken`]. Comes about once a second while the caller speaks,
    /// and once more, with all that is left, before [`Output::Store`].
    Record,
    /// Store the recording's first `keep` samples durably as a message, then call
    /// [`CallFlow::handle_stored`].
    Store {
        /// Samples kept: a trailing silence that ended the recording is left out.
        keep: u64,
    },
    /// Queue a missed-call alert durably (and drop the recording, if one was started),
    /// then call [`CallFlow::handle_stored`].
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

/// What answering an INVITE needs, whichever machine runs the call.
#[derive(Debug)]
pub struct Answer<'a> {
    /// The INVITE.
    pub invite: &'a Message<'a>,
    /// Its dialog.
    pub dialog: Dialog,
    /// The leg's addresses and timers.
    pub setup: LegSetup,
    /// The INVITE's offer, negotiated; `None`: late offer.
    pub offer: Option<Negotiated>,
    /// RFC 4028 timer agreed by admission.
    pub timer: Option<SessionTimer>,
    /// Our RTP stream.
    pub tx: RtpSender,
}

impl Answer<'_> {
    /// Answers the INVITE: the leg and the output queue holding our `200`.
    pub(crate) fn leg(self, now: Instant) -> (Leg, VecDeque<Output>, RtpSender) {
        let mut out = VecDeque::new();
        let leg = Leg::answer(
            now,
            self.invite,
            self.dialog,
            self.setup,
            self.offer,
            self.timer,
            &mut out,
        );
        (leg, out, self.tx)
    }
}

/// Paces outgoing audio at one 20 ms packet per tick without drifting or bursting.
#[derive(Debug)]
pub(crate) struct Playout {
    tx: RtpSender,
    buf: Vec<u8>,
    /// When the next packet is due.
    pub(crate) next: Instant,
}

impl Playout {
    pub(crate) fn new(tx: RtpSender, now: Instant) -> Playout {
        Playout {
            tx,
            buf: Vec::with_capacity(12 + FRAME),
            next: now,
        }
    }

    /// Sends `frame` (when `send`: not on hold) and schedules the next one.
    pub(crate) fn frame(
        &mut self,
        now: Instant,
        frame: &[i16],
        send: bool,
        out: &mut VecDeque<Output>,
    ) {
        if send {
            self.tx.voice(frame, &mut self.buf);
            out.push_back(Output::Rtp);
        }
        self.next += Duration::from_millis(20);
        if self.next + Duration::from_millis(200) < now {
            // The driver fell far behind; do not burst to catch up.
            self.next = now;
        }
    }

    pub(crate) fn media(&mut self, neg: &Negotiated) {
        self.tx.set_payload(neg.codec, neg.pt);
    }

    /// The codec it sends: its rate and 20 ms frame are the call's.
    pub(crate) fn codec(&self) -> Codec {
        self.tx.codec()
    }

    pub(crate) fn packet(&self) -> &[u8] {
        &self.buf
    }
}

/// One call, as the driver holds it.
#[derive(Debug)]
pub enum CallFlow {
    /// A forwarded call leaving a message.
    Deposit(Box<Deposit>),
    /// A call to a link number.
    Retrieval(Box<Retrieval>),
}

macro_rules! each {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            CallFlow::Deposit($m) => $e,
            CallFlow::Retrieval($m) => $e,
        }
    };
}

impl CallFlow {
    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        each!(self, m => m.poll_output())
    }

    /// The packet announced by [`Output::Rtp`].
    pub fn rtp_packet(&self) -> &[u8] {
        each!(self, m => m.rtp_packet())
    }

    /// When [`CallFlow::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        each!(self, m => m.poll_timeout())
    }

    /// Advances timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        each!(self, m => m.handle_timeout(now))
    }

    /// A SIP message of this dialog; `reply_to` is where a response to it goes.
    pub fn handle_sip(&mut self, now: Instant, msg: &Message<'_>, reply_to: SocketAddr) {
        each!(self, m => m.handle_sip(now, msg, reply_to))
    }

    /// An RTP datagram from the caller's media address.
    pub fn handle_rtp(&mut self, now: Instant, datagram: &[u8]) {
        each!(self, m => m.handle_rtp(now, datagram))
    }

    /// True while the caller's message is being recorded: its received RTP holds no
    /// urgent key but `#`.
    pub fn is_recording(&self) -> bool {
        matches!(self, CallFlow::Deposit(d) if d.is_recording())
    }

    /// Audio to append to the recording (deposits only): its rate and the audio, in the
    /// form the recording keeps (a G.711 call as sent, when so configured).
    pub fn audio(&self) -> (u32, Pending<'_>) {
        match self {
            CallFlow::Deposit(d) => d.audio(),
            CallFlow::Retrieval(_) => (8000, Pending::Pcm(&[])),
        }
    }

    /// The first `n` samples of [`CallFlow::audio`] were written.
    pub fn audio_taken(&mut self, n: usize) {
        if let CallFlow::Deposit(d) = self {
            d.audio_taken(n);
        }
    }

    /// The store finished (deposits only): `ok` tells whether the message is durable.
    pub fn handle_stored(&mut self, now: Instant, ok: bool) {
        if let CallFlow::Deposit(d) = self {
            d.handle_stored(now, ok);
        }
    }

    /// The link number got locked (retrievals only; see [`crate::menu::Menu::lock_out`]).
    pub fn lock_out(&mut self, now: Instant) {
        if let CallFlow::Retrieval(r) = self {
            r.lock_out(now);
        }
    }
}
