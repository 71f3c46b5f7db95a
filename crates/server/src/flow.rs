//! What every call machine shares: its settings, what it asks the task to do
//! ([`Output`]), how a call ends ([`EndReason`]) and the pacing of the audio it plays
//! ([`Playout`]). It sits below the machines and their leg, which all speak it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use boxless_media::{Codec, FRAME, Negotiated, RtpSender};

use crate::menu::Mark;

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
        /// Some packet of it was voice: without any, the recogniser is not asked (it
        /// would only invent words for the silence).
        voiced: bool,
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
    /// Retrieval: `owner`'s own greeting is from now on `audio` (8 kHz), or none.
    Greeting {
        /// Whose.
        owner: boxless_core::PhoneNumber,
        /// The recording; None: removed.
        audio: Option<Vec<i16>>,
    },
    /// The call is over; drop the machine.
    Ended(EndReason),
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
