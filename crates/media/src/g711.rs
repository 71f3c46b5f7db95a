//! The voice codecs Boxless speaks: G.711 (PCMU / PCMA, stateless, sample by sample) and
//! G.722 (16 kHz wideband, stateful ADPCM: coded by [`crate::rtp`]'s receiver and sender,
//! which hold its state).

use std::sync::LazyLock;

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

    /// Its G.711 law, coded sample by sample here; None for G.722, whose coder has state
    /// and lives in the receiver and the sender of [`crate::rtp`].
    pub fn law(self) -> Option<Law> {
        match self {
            Codec::Pcmu => Some(Law::Ulaw),
            Codec::Pcma => Some(Law::Alaw),
            Codec::G722 => None,
        }
    }
}

/// A G.711 law: stateless, one octet a sample. Only a law can be asked to code a sample,
/// so no code path can ask G.722 to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// µ-law (PCMU).
    Ulaw,
    /// A-law (PCMA).
    Alaw,
}

impl Law {
    /// The codec of this law.
    pub fn codec(self) -> Codec {
        match self {
            Law::Ulaw => Codec::Pcmu,
            Law::Alaw => Codec::Pcma,
        }
    }

    /// Decodes one octet.
    #[inline]
    pub fn decode(self, b: u8) -> i16 {
        match self {
            Law::Ulaw => decode_ulaw(b),
            Law::Alaw => decode_alaw(b),
        }
    }

    /// Encodes one sample.
    #[inline]
    pub fn encode(self, s: i16) -> u8 {
        match self {
            Law::Ulaw => encode_ulaw(s),
            Law::Alaw => encode_alaw(s),
        }
    }

    /// The square of each octet's decoded sample, by octet: a packet kept as sent is
    /// measured (voice or silence) without decoding it.
    pub fn squares(self) -> &'static [u32; 256] {
        fn table(law: Law) -> [u32; 256] {
            std::array::from_fn(|o| {
                let v = i32::from(law.decode(o as u8));
                (v * v) as u32
            })
        }
        static ULAW: LazyLock<[u32; 256]> = LazyLock::new(|| table(Law::Ulaw));
        static ALAW: LazyLock<[u32; 256]> = LazyLock::new(|| table(Law::Alaw));
        match self {
            Law::Ulaw => &ULAW,
            Law::Alaw => &ALAW,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_g711_has_a_law_and_each_law_names_its_codec() {
        assert_eq!(Codec::G722.law(), None);
        for c in [Codec::Pcmu, Codec::Pcma] {
            assert_eq!(c.law().map(Law::codec), Some(c));
        }
    }

    #[test]
    fn the_squares_are_those_of_the_decoded_samples_and_fit() {
        for law in [Law::Ulaw, Law::Alaw] {
            for o in 0..=255u8 {
                let v = i64::from(law.decode(o));
                assert_eq!(
                    i64::from(law.squares()[usize::from(o)]),
                    v * v,
                    "{law:?} {o}"
                );
            }
        }
    }
}
