//! The audio files: WAV as 16-bit PCM, or G.711 as the caller sent it (WAV format tags 7
//! µ-law and 6 A-law, 8 bits a sample: half the size), and their reading back.
//!
//! hound reads and writes PCM only, so the G.711 forms are framed here: `RIFF`/`WAVE`, a
//! `fmt ` chunk of 18 bytes (`cbSize` 0), the `fact` chunk non-PCM WAV requires, `data`.
//! Reading walks the chunks of any of the three forms (and skips chunks it does not know).

use audio_codec_algorithms::{decode_alaw, decode_ulaw, encode_alaw, encode_ulaw};

/// How a message's audio is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// 16-bit little-endian PCM (8 kHz, or 16 kHz for a G.722 call).
    Pcm16,
    /// G.711 µ-law, 8 kHz (WAV format tag 7).
    Mulaw,
    /// G.711 A-law, 8 kHz (WAV format tag 6).
    Alaw,
}

impl Encoding {
    fn tag(self) -> u16 {
        match self {
            Encoding::Pcm16 => 1,
            Encoding::Alaw => 6,
            Encoding::Mulaw => 7,
        }
    }

    /// Bytes per second of audio at `rate`.
    pub fn bytes_per_second(self, rate: u32) -> u32 {
        match self {
            Encoding::Pcm16 => rate * 2,
            _ => rate,
        }
    }
}

/// The bytes of a WAV file holding `samples` at `rate` in `enc` (G.711 only at 8 kHz:
/// anything else is written as PCM).
pub fn encode(samples: &[i16], rate: u32, enc: Encoding) -> Vec<u8> {
    let enc = effective(rate, enc);
    let mut b = header(rate, enc, samples.len() as u32, None);
    let start = b.len();
    append(samples, enc, &mut b);
    if (b.len() - start) & 1 == 1 {
        b.push(0); // RIFF chunks are padded to an even length
    }
    b
}

/// The encoding a file at `rate` gets when `enc` is asked: G.711 only at 8 kHz.
pub fn effective(rate: u32, enc: Encoding) -> Encoding {
    if rate == 8000 { enc } else { Encoding::Pcm16 }
}

/// `samples` coded as `enc`, appended to `out`.
pub fn append(samples: &[i16], enc: Encoding, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + samples.len() * enc.width() as usize, 0);
    code_into(samples, enc, &mut out[start..]);
}

/// `samples` coded as `enc` into the front of `out` (room for them all); the byte count.
pub fn code_into(samples: &[i16], enc: Encoding, out: &mut [u8]) -> usize {
    match enc {
        Encoding::Pcm16 => {
            for (o, s) in out.chunks_exact_mut(2).zip(samples) {
                o.copy_from_slice(&s.to_le_bytes());
            }
        }
        Encoding::Mulaw => out
            .iter_mut()
            .zip(samples)
            .for_each(|(o, &s)| *o = encode_ulaw(s)),
        Encoding::Alaw => out
            .iter_mut()
            .zip(samples)
            .for_each(|(o, &s)| *o = encode_alaw(s)),
    }
    samples.len() * enc.width() as usize
}

/// The header of a file of `n` samples up to and including the `data` chunk's length:
/// `RIFF`/`WAVE`, `fmt `, `fact` (G.711), then `extra` (a chunk of ours, padded to an even
/// length) when given. `n = u32::MAX` marks a file still being written: lengths unknown.
pub fn header(rate: u32, enc: Encoding, n: u32, extra: Option<(&[u8; 4], &[u8])>) -> Vec<u8> {
    let (fmt_len, fact) = match enc {
        Encoding::Pcm16 => (16u32, false),
        _ => (18, true),
    };
    let data_len = match (n, enc) {
        (u32::MAX, _) => u32::MAX,
        (_, Encoding::Pcm16) => n.saturating_mul(2),
        _ => n,
    };
    let extra_len = extra.map_or(0, |(_, body)| {
        8 + body.len() as u32 + (body.len() as u32 & 1)
    });
    let riff_len = (4 + (8 + fmt_len) + if fact { 12 } else { 0 } + extra_len + 8)
        .saturating_add(data_len)
        .saturating_add(data_len & 1);
    let mut b = Vec::with_capacity(64 + extra_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&riff_len.to_le_bytes());
    b.extend_from_slice(b"WAVE");
    b.extend_from_slice(b"fmt ");
    b.extend_from_slice(&fmt_len.to_le_bytes());
    let bits: u16 = if enc == Encoding::Pcm16 { 16 } else { 8 };
    let block = bits / 8;
    b.extend_from_slice(&enc.tag().to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
    b.extend_from_slice(&block.to_le_bytes());
    b.extend_from_slice(&bits.to_le_bytes());
    if fact {
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(b"fact");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&n.to_le_bytes());
    }
    if let Some((id, body)) = extra {
        b.extend_from_slice(id);
        b.extend_from_slice(&(body.len() as u32).to_le_bytes());
        b.extend_from_slice(body);
        if body.len() & 1 == 1 {
            b.push(0);
        }
    }
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    b
}

/// The body of the first chunk named `id` before the `data` chunk.
pub fn chunk<'a>(b: &'a [u8], id: &[u8; 4]) -> Option<&'a [u8]> {
    if b.len() < 12 || &b[..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return None;
    }
    let mut pos = 12usize;
    while pos + 8 <= b.len() {
        let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().ok()?) as usize;
        let body = pos + 8;
        match &b[pos..pos + 4] {
            x if x == id => return b.get(body..body.checked_add(len)?),
            b"data" => return None,
            _ => pos = body.checked_add(len)?.checked_add(len & 1)?,
        }
    }
    None
}

/// A WAV file read back: its encoding, rate and where its samples lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// How the samples are coded.
    pub encoding: Encoding,
    /// Samples per second.
    pub rate: u32,
    /// Byte range of the `data` chunk.
    pub data: (usize, usize),
}

/// Reads the header of one of our WAV files (mono PCM16, µ-law or A-law).
pub fn parse(b: &[u8]) -> Option<Parsed> {
    if b.len() < 12 || &b[..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return None;
    }
    let (mut pos, mut fmt) = (12usize, None);
    while pos + 8 <= b.len() {
        let id = &b[pos..pos + 4];
        let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().ok()?) as usize;
        let body = pos + 8;
        match id {
            b"fmt " if len >= 16 && body + 16 <= b.len() => {
                let u16_at = |o: usize| u16::from_le_bytes([b[body + o], b[body + o + 1]]);
                let rate = u32::from_le_bytes(b[body + 4..body + 8].try_into().ok()?);
                let encoding = match (u16_at(0), u16_at(14)) {
                    (1, 16) => Encoding::Pcm16,
                    (6, 8) => Encoding::Alaw,
                    (7, 8) => Encoding::Mulaw,
                    _ => return None,
                };
                if u16_at(2) != 1 || rate == 0 {
                    return None;
                }
                fmt = Some((encoding, rate));
            }
            b"data" => {
                let (encoding, rate) = fmt?;
                // A file cut short (a crash while writing) yields what is there.
                let end = body.saturating_add(len).min(b.len());
                return Some(Parsed {
                    encoding,
                    rate,
                    data: (body, end),
                });
            }
            _ => {}
        }
        pos = body.checked_add(len)?.checked_add(len & 1)?;
    }
    None
}

/// The samples of a WAV file, and its rate.
pub fn decode(b: &[u8]) -> Option<(u32, Vec<i16>)> {
    parse(b).map(|p| (p.rate, samples(b, &p)))
}

fn samples(b: &[u8], p: &Parsed) -> Vec<i16> {
    let data = &b[p.data.0..p.data.1];
    match p.encoding {
        Encoding::Pcm16 => data
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect(),
        Encoding::Mulaw => data.iter().map(|&x| decode_ulaw(x)).collect(),
        Encoding::Alaw => data.iter().map(|&x| decode_alaw(x)).collect(),
    }
}

impl Encoding {
    /// Bytes one sample takes.
    pub fn width(self) -> u64 {
        match self {
            Encoding::Pcm16 => 2,
            _ => 1,
        }
    }
}

/// The file as 16-bit PCM WAV: itself when it is one, else decoded and framed anew.
pub fn to_pcm16(b: Vec<u8>) -> Option<Vec<u8>> {
    let p = parse(&b)?;
    if p.encoding == Encoding::Pcm16 {
        return Some(b);
    }
    Some(encode(&samples(&b, &p), p.rate, Encoding::Pcm16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_files_are_half_the_size_and_read_back_as_sent() {
        // Samples that came out of a µ-law decoder go back to the same octets (but for
        // µ-law's second zero, 0x7F, which comes back as 0xFF: the same sample).
        let sent: Vec<u8> = (0..=255u8)
            .filter(|&b| b != 0x7f)
            .cycle()
            .take(8001)
            .collect();
        let samples: Vec<i16> = sent.iter().map(|&b| decode_ulaw(b)).collect();
        let mu = encode(&samples, 8000, Encoding::Mulaw);
        let pcm = encode(&samples, 8000, Encoding::Pcm16);
        assert_eq!(mu.len(), 58 + 8001 + 1, "one byte a sample, padded to even");
        assert_eq!(pcm.len(), 44 + 2 * 8001);
        let p = parse(&mu).unwrap();
        assert_eq!((p.encoding, p.rate), (Encoding::Mulaw, 8000));
        assert_eq!(
            &mu[p.data.0..p.data.1],
            &sent[..],
            "the caller's octets, unchanged"
        );
        assert_eq!(decode(&mu).unwrap(), (8000, samples.clone()));
        assert_eq!(decode(&pcm).unwrap(), (8000, samples.clone()));
        // hound reads what we call PCM16, and our PCM16 form of the µ-law file.
        let back = to_pcm16(mu).unwrap();
        assert_eq!(back, pcm);
        let r = hound::WavReader::new(std::io::Cursor::new(&back)).unwrap();
        assert_eq!(r.spec().sample_rate, 8000);
        assert_eq!(r.len(), 8001);
        let a = encode(&samples, 8000, Encoding::Alaw);
        assert_eq!(parse(&a).unwrap().encoding, Encoding::Alaw);
        let (_, al) = decode(&a).unwrap();
        let worst = al
            .iter()
            .zip(&samples)
            .map(|(x, y)| (x - y).unsigned_abs())
            .max();
        assert!(
            worst.unwrap() <= 1024,
            "A-law of µ-law audio: close ({worst:?})"
        );
        // Wideband stays PCM whatever is asked.
        let wb = encode(&samples, 16_000, Encoding::Mulaw);
        assert_eq!(parse(&wb).unwrap().encoding, Encoding::Pcm16);
    }

    #[test]
    fn malformed_or_cut_files_are_refused_or_read_as_far_as_they_go() {
        assert!(parse(b"").is_none() && parse(b"RIFF\0\0\0\0WAVX").is_none());
        let samples = vec![100i16; 400];
        let mut f = encode(&samples, 8000, Encoding::Mulaw);
        f.truncate(58 + 150);
        let (_, got) = decode(&f).unwrap();
        assert_eq!(got.len(), 150, "a file cut short: what is there");
        let mut bad = encode(&samples, 8000, Encoding::Pcm16);
        bad[22] = 2; // two channels
        assert!(parse(&bad).is_none());
        let mut huge = encode(&samples, 8000, Encoding::Pcm16);
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&huge).is_none(), "a chunk length past the end");
    }
}
