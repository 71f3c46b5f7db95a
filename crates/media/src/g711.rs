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

    /// The square of each octet's decoded sample, by octet: a packet kept as sent is
    /// measured (voice or silence) without decoding it. G.722: as [`Codec::decode`].
    pub fn squares(self) -> &'static [u32; 256] {
        fn table(law: Codec) -> [u32; 256] {
            std::array::from_fn(|o| {
                let v = i32::from(law.decode(o as u8));
                (v * v) as u32
            })
        }
        static ULAW: LazyLock<[u32; 256]> = LazyLock::new(|| table(Codec::Pcmu));
        static ALAW: LazyLock<[u32; 256]> = LazyLock::new(|| table(Codec::Pcma));
        match self {
            Codec::Pcmu => &ULAW,
            Codec::Pcma => &ALAW,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_squares_are_those_of_the_decoded_samples_and_fit() {
        for law in [Codec::Pcmu, Codec::Pcma] {
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
