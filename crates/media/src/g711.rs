//! G.711 (PCMU / PCMA).

use audio_codec_algorithms::{decode_alaw, decode_ulaw, encode_alaw, encode_ulaw};

/// A G.711 law with its static RTP payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// µ-law, PT 0.
    Pcmu,
    /// A-law, PT 8.
    Pcma,
}

impl Codec {
    /// Static payload type (RFC 3551).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The rtpmap encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// Decodes one octet.
    #[inline]
    pub fn decode(self, b: u8) -> i16 {
        match self {
            Codec::Pcmu => decode_ulaw(b),
            Codec::Pcma => decode_alaw(b),
        }
    }

    /// Encodes one sample.
    #[inline]
    pub fn encode(self, s: i16) -> u8 {
        match self {
            Codec::Pcmu => encode_ulaw(s),
            Codec::Pcma => encode_alaw(s),
        }
    }
}
