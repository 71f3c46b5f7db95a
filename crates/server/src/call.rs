//! A call, as one of two sans-IO machines over the caller's [`Leg`](crate::leg::Leg): a
//! [`Deposit`] (greeting, record, store, hang up) or a [`Retrieval`] (the menu, prompts and
//! messages). [`CallFlow`] is what the call task holds; the machines never read a clock or
//! a socket.
//!
//! The promise a deposit keeps: the caller's BYE is answered `200` only after the store
//! reported the message (or the missed-call alert) durable. A failed store answers `500`.

use std::net::SocketAddr;
use std::time::Instant;

use boxless_media::Pending;
use boxless_sip::Message;

pub use crate::deposit::Deposit;
pub use crate::flow::{CallSettings, EndReason, FrameGrid, Output};
pub use crate::leg::{Answer, LegSetup};
pub use crate::retrieval::{Retrieval, RetrievalSetup};

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
