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
    /// The grid the greeting's frames go out on.
    pub frames: FrameGrid,
}

/// A 20 ms grid from an instant every call of the process shares: each call's frames fall
/// on its ticks, so the calls that play at once on a thread wake it together, once a frame,
/// rather than each on a phase of its own. A wake is a context switch onto a thread whose
/// caches went cold meanwhile; the greeting's frames were about a tenth of a deposit's
/// (`bench/RESULTS.md`). A caller hears the same 20 ms pacing; only its first frame waits
/// for the next tick, at most 20 ms.
#[derive(Debug, Clone, Copy)]
pub struct FrameGrid(pub Instant);

impl FrameGrid {
    /// The first tick at or after `t`.
    pub(crate) fn at_or_after(self, t: Instant) -> Instant {
        tick_at_or_after(self.0, FRAME_PERIOD, t)
    }
}

/// The first tick at or after `t` of the grid of `period` from `start` (`start` itself
/// while `t` is before it): the frames' grid, and the drains' (`intake::drain_due`).
pub(crate) fn tick_at_or_after(start: Instant, period: Duration, t: Instant) -> Instant {
    let Some(since) = t.checked_duration_since(start) else {
        return start;
    };
    let tick = period.as_nanos();
    let ticks = since.as_nanos().div_ceil(tick);
    start + Duration::from_nanos(u64::try_from(ticks * tick).unwrap_or(u64::MAX))
}

/// One outgoing packet's worth of audio.
const FRAME_PERIOD: Duration = Duration::from_millis(20);

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

/// Paces outgoing audio at one 20 ms packet per tick of its [`FrameGrid`] without drifting
/// or bursting.
#[derive(Debug)]
pub(crate) struct Playout {
    tx: RtpSender,
    buf: Vec<u8>,
    grid: FrameGrid,
    /// When the next packet is due.
    next: Instant,
}

impl Playout {
    pub(crate) fn new(tx: RtpSender, grid: FrameGrid, now: Instant) -> Playout {
        Playout {
            tx,
            buf: Vec::with_capacity(12 + FRAME),
            grid,
            next: grid.at_or_after(now),
        }
    }

    /// Playing (again) from `now`: when the first packet is due.
    pub(crate) fn start(&mut self, now: Instant) -> Instant {
        self.next = self.grid.at_or_after(now);
        self.next
    }

    /// When the next packet is due.
    pub(crate) fn next(&self) -> Instant {
        self.next
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
        self.next += FRAME_PERIOD;
        if self.next + Duration::from_millis(200) < now {
            // The driver fell far behind; do not burst to catch up.
            self.next = self.grid.at_or_after(now);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_grid_s_ticks_are_20_ms_apart_from_its_start() {
        let t0 = Instant::now();
        let g = FrameGrid(t0);
        assert_eq!(g.at_or_after(t0), t0, "a tick is its own");
        assert_eq!(g.at_or_after(t0 + Duration::from_micros(1)), t0 + ms(20));
        assert_eq!(g.at_or_after(t0 + ms(39)), t0 + ms(40));
        assert_eq!(g.at_or_after(t0 + ms(40)), t0 + ms(40));
        // Before the grid started: its first tick.
        assert_eq!(FrameGrid(t0 + ms(5)).at_or_after(t0), t0 + ms(5));
    }

    #[test]
    fn calls_that_start_apart_send_their_frames_on_the_same_ticks() {
        let t0 = Instant::now();
        let g = FrameGrid(t0);
        let sender = || RtpSender::new(Codec::Pcmu, 0, 7, 1, 1);
        let (mut a, mut b) = (Playout::new(sender(), g, t0), Playout::new(sender(), g, t0));
        let mut out = VecDeque::new();
        let (start_a, start_b) = (t0 + ms(3), t0 + ms(51));
        assert_eq!(
            (a.start(start_a), b.start(start_b)),
            (t0 + ms(20), t0 + ms(60))
        );
        // Each on its own clock, a frame each time its packet comes due.
        let frame = [0i16; FRAME];
        for _ in 0..5 {
            let now = a.next();
            a.frame(now, &frame, true, &mut out);
        }
        for _ in 0..3 {
            let now = b.next();
            b.frame(now, &frame, true, &mut out);
        }
        assert_eq!(a.next(), t0 + ms(120));
        assert_eq!(b.next(), a.next(), "one wake for both");
        assert_eq!(out.len(), 8);
        // A driver far behind starts again on a tick, without a burst.
        b.frame(t0 + ms(517), &frame, true, &mut out);
        assert_eq!(b.next(), t0 + ms(520));
    }
}
