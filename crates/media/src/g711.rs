//! The voice codecs Boxless speaks: G.711 (PCMU / PCMA, stateless, sample by sample) and
//! G.722 (16 kHz wideband, stateful ADPCM: coded by [`crate::rtp`]'s receiver and sender,
//! which hold its state).

use audio_codec_algorithms::{decode_alaw, decode_ulaw, encode_alaw, encode_ulaw};

/// A voice codec with its static RTP payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// µ-law, PT 0.
    Pcmu,
    /// A-law, PT 8.
    Pcma,
    /// G.722 at 64 kbit/s, PT 9: 16 kHz audio, RTP clock 8 kHz (RFC 3551 §4.5.2).
    G722,
}

impl Codec {
    /// Static payload type (RFC 3551).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::G722 => 9,
        }
    }

    /// Audio sample rate (Hz).
    pub fn rate(self) -> u32 {
        match self {
            Codec::G722 => 16_000,
            _ => 8000,
        }
    }

    /// Samples in one 20 ms packet.
    pub fn frame(self) -> usize {
        self.rate() as usize / 50
    }

    /// The rtpmap encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
        }
    }

    /// Decodes one G.711 octet. G.722 has state and is never coded here: a call of this
    /// for it is a programming error.
    #[inline]
    pub fn decode(self, b: u8) -> i16 {
        match self {
            Codec::Pcmu => decode_ulaw(b),
            Codec::Pcma => decode_alaw(b),
            Codec::G722 => {
                unreachable!("G.722 is decoded by rtp::RtpReceiver, which holds its state")
            }
        }
    }

    /// Encodes one G.711 sample (see [`Codec::decode`] for G.722).
    #[inline]
    pub fn encode(self, s: i16) -> u8 {
        match self {
            Codec::Pcmu => encode_ulaw(s),
            Codec::Pcma => encode_alaw(s),
            Codec::G722 => {
                unreachable!("G.722 is encoded by rtp::RtpSender, which holds its state")
            }
        }
    }
}
