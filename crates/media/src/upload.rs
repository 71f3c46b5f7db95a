//! A personal greeting sent as a WAV file (docs/http.md, "A recipient's greeting"): any
//! rate from 4 to 192 kHz, up to 8 channels, PCM of 8 to 32 bits, IEEE float, µ-law or
//! A-law. Everything the file claims is checked against what it holds before a sample is
//! decoded (a stranger's header can say anything), and its length is known from the header
//! alone, so a file too long is refused without decoding it. What comes out is 8 kHz mono:
//! the channels averaged, the rate brought down by a band-limited sinc resampler (rubato),
//! so that a 48 kHz upload does not fold its top octaves into the telephone band.

use std::ops::RangeInclusive;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction, calculate_cutoff,
};

use crate::Law;

/// Channels at most.
pub const MAX_CHANNELS: u16 = 8;
/// Sample rates taken.
pub const RATES: RangeInclusive<u32> = 4_000..=192_000;
/// A greeting shorter than this is refused (a tap on a button, not a greeting).
pub const MIN_MS: u64 = 500;
/// A greeting whose loudest sample is below this (of 32,767) is refused as silent: a
/// microphone that recorded nothing.
pub const SILENT_PEAK: i16 = 64;

/// Why an upload is refused; each names what is wrong and what is taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UploadError {
    /// No RIFF/WAVE header.
    #[error("not a WAV file: it must start with a RIFF/WAVE header")]
    NotWav,
    /// A chunk's length runs past the file before `fmt ` and `data` were found.
    #[error("the WAV has no complete fmt chunk before its data")]
    NoFormat,
    /// A coding we do not read.
    #[error(
        "WAV format tag {tag} with {bits} bits a sample is not taken: send PCM (8, 16, 24 or 32 bits), 32- or 64-bit float, µ-law or A-law"
    )]
    Unsupported {
        /// The `fmt ` chunk's format tag (or the extensible sub-format's).
        tag: u16,
        /// Bits a sample.
        bits: u16,
    },
    /// Zero or too many channels.
    #[error("{0} channels: a WAV of 1 to 8 channels is taken")]
    Channels(u16),
    /// A rate out of range.
    #[error("sample rate {0} Hz: 4000 to 192000 Hz is taken")]
    Rate(u32),
    /// The header's block size does not match channels and bits.
    #[error("block align {align} does not match {channels} channels of {bits} bits")]
    BlockAlign {
        /// What the header says.
        align: u16,
        /// Channels.
        channels: u16,
        /// Bits a sample.
        bits: u16,
    },
    /// No `data` chunk.
    #[error("the WAV has no data chunk")]
    NoData,
    /// The `data` chunk says more than the file holds.
    #[error("the WAV is cut short: its data chunk says {declared} bytes, the file holds {present}")]
    Truncated {
        /// What the header says.
        declared: u64,
        /// What is there.
        present: u64,
    },
    /// No sample at all.
    #[error("the WAV holds no audio")]
    Empty,
    /// Shorter than [`MIN_MS`].
    #[error("{0} ms of audio: a greeting lasts at least 0.5 s")]
    TooShort(u64),
    /// Longer than the operator allows.
    #[error("{ms} ms of audio: a greeting lasts at most {max} s (messages.greeting_max_seconds)")]
    TooLong {
        /// Its length.
        ms: u64,
        /// The limit, in seconds.
        max: u32,
    },
    /// Nothing above [`SILENT_PEAK`].
    #[error("the WAV is silent: nothing was recorded")]
    Silent,
}

impl UploadError {
    /// True when the file is refused for its size (HTTP 413), not its form (400).
    pub fn too_large(&self) -> bool {
        matches!(self, UploadError::TooLong { .. })
    }
}

/// How the samples are coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    /// Unsigned 8-bit, or signed little-endian 16, 24 or 32 bits.
    Int(u16),
    /// IEEE float, 32 or 64 bits.
    Float(u16),
    Ulaw,
    Alaw,
}

impl Coding {
    fn from_fmt(tag: u16, bits: u16) -> Result<Coding, UploadError> {
        Ok(match (tag, bits) {
            (1, 8 | 16 | 24 | 32) => Coding::Int(bits),
            (3, 32 | 64) => Coding::Float(bits),
            (6, 8) => Coding::Alaw,
            (7, 8) => Coding::Ulaw,
            _ => return Err(UploadError::Unsupported { tag, bits }),
        })
    }

    fn bytes(self) -> usize {
        match self {
            Coding::Int(b) | Coding::Float(b) => usize::from(b / 8),
            Coding::Ulaw | Coding::Alaw => 1,
        }
    }

    /// One sample, as a float in [-1, 1].
    fn sample(self, b: &[u8]) -> f32 {
        match self {
            Coding::Int(8) => (f32::from(b[0]) - 128.0) / 128.0,
            Coding::Int(16) => f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0,
            Coding::Int(24) => {
                (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0
            }
            Coding::Int(_) => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0,
            Coding::Float(32) => sane(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Coding::Float(_) => {
                sane(f64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])) as f32)
            }
            Coding::Ulaw => f32::from(Law::Ulaw.decode(b[0])) / 32_768.0,
            Coding::Alaw => f32::from(Law::Alaw.decode(b[0])) / 32_768.0,
        }
    }
}

/// A float sample clipped to [-1, 1]; NaN (a hostile file's) is silence.
fn sane(x: f32) -> f32 {
    if x.is_nan() { 0.0 } else { x.clamp(-1.0, 1.0) }
}

/// What the header says, checked.
#[derive(Debug, Clone, Copy)]
struct Format {
    coding: Coding,
    channels: u16,
    rate: u32,
}

/// The `fmt ` chunk's body.
fn format(f: &[u8]) -> Result<Format, UploadError> {
    if f.len() < 16 {
        return Err(UploadError::NoFormat);
    }
    let u16_at = |o: usize| u16::from_le_bytes([f[o], f[o + 1]]);
    let (mut tag, channels, bits) = (u16_at(0), u16_at(2), u16_at(14));
    let rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
    let align = u16_at(12);
    // WAVE_FORMAT_EXTENSIBLE: the real tag is the sub-format GUID's first two bytes.
    if tag == 0xFFFE {
        if f.len() < 26 {
            return Err(UploadError::NoFormat);
        }
        tag = u16_at(24);
    }
    let coding = Coding::from_fmt(tag, bits)?;
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(UploadError::Channels(channels));
    }
    if !RATES.contains(&rate) {
        return Err(UploadError::Rate(rate));
    }
    if usize::from(align) != coding.bytes() * usize::from(channels) {
        return Err(UploadError::BlockAlign {
            align,
            channels,
            bits,
        });
    }
    Ok(Format {
        coding,
        channels,
        rate,
    })
}

/// The format and the bytes of the `data` chunk.
fn chunks(b: &[u8]) -> Result<(Format, &[u8]), UploadError> {
    if b.len() < 12 || &b[..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err(UploadError::NotWav);
    }
    let (mut pos, mut fmt) = (12usize, None);
    while pos + 8 <= b.len() {
        let id = &b[pos..pos + 4];
        let len = u64::from(u32::from_le_bytes([
            b[pos + 4],
            b[pos + 5],
            b[pos + 6],
            b[pos + 7],
        ]));
        let body = pos + 8;
        let present = (b.len() - body) as u64;
        if id == b"data" {
            let f = fmt.ok_or(UploadError::NoFormat)?;
            // 0 and 0xFFFFFFFF: written while streaming, the length never filled in.
            let take = match len {
                0 | 0xFFFF_FFFF => present,
                n if n > present => {
                    return Err(UploadError::Truncated {
                        declared: n,
                        present,
                    });
                }
                n => n,
            };
            return Ok((f, &b[body..body + take as usize]));
        }
        if len > present {
            return Err(if fmt.is_some() {
                UploadError::NoData
            } else {
                UploadError::NoFormat
            });
        }
        if id == b"fmt " {
            fmt = Some(format(&b[body..body + len as usize])?);
        }
        // Chunks are padded to an even length.
        pos = body + len as usize + (len as usize & 1);
    }
    Err(if fmt.is_some() {
        UploadError::NoData
    } else {
        UploadError::NoFormat
    })
}

/// The greeting in `wav` as 8 kHz mono samples, or why it is refused; `max_seconds` bounds
/// its length (checked from the header, before decoding).
pub fn greeting_from_wav(wav: &[u8], max_seconds: u32) -> Result<Vec<i16>, UploadError> {
    let (f, data) = chunks(wav)?;
    let width = f.coding.bytes() * usize::from(f.channels);
    let frames = data.len() / width;
    if frames == 0 {
        return Err(UploadError::Empty);
    }
    let ms = frames as u64 * 1000 / u64::from(f.rate);
    if ms > u64::from(max_seconds) * 1000 {
        return Err(UploadError::TooLong {
            ms,
            max: max_seconds,
        });
    }
    if ms < MIN_MS {
        return Err(UploadError::TooShort(ms));
    }
    let size = f.coding.bytes();
    let mono: Vec<f32> = data
        .chunks_exact(width)
        .map(|frame| {
            frame
                .chunks_exact(size)
                .map(|s| f.coding.sample(s))
                .sum::<f32>()
                / f32::from(f.channels)
        })
        .collect();
    let at8k = to_8k(&mono, f.rate);
    let out: Vec<i16> = at8k
        .iter()
        .map(|&x| (sane(x) * 32_767.0).round() as i16)
        .collect();
    if out.iter().all(|s| s.unsigned_abs() < SILENT_PEAK as u16) {
        return Err(UploadError::Silent);
    }
    Ok(out)
}

/// Taps of the sinc filter: enough for a clean cut at 4 kHz, cheap for 60 s of audio.
const SINC_LEN: usize = 128;

/// `mono` at `rate` brought to 8 kHz.
fn to_8k(mono: &[f32], rate: u32) -> Vec<f32> {
    if rate == 8000 {
        return mono.to_vec();
    }
    let window = WindowFunction::BlackmanHarris2;
    let params = SincInterpolationParameters {
        sinc_len: SINC_LEN,
        f_cutoff: Some(calculate_cutoff(SINC_LEN, window)),
        interpolation: SincInterpolationType::Linear,
        oversampling_factor: 256,
        window,
    };
    let ratio = 8000.0 / f64::from(rate);
    let resampled = Async::<f32>::new_sinc(ratio, 1.0, &params, 1024, 1, FixedAsync::Input)
        .ok()
        .and_then(|mut r| {
            let input = InterleavedSlice::new(mono, 1, mono.len()).ok()?;
            r.process_all(&input, mono.len(), None).ok()
        });
    match resampled {
        Some(out) => out.take_data(),
        // The parameters above are valid for every rate in RATES; kept as a fallback
        // rather than a panic.
        None => crate::audio::to_8k_mono(
            &mono
                .iter()
                .map(|&x| (x * 32_767.0) as i16)
                .collect::<Vec<_>>(),
            rate,
            1,
        )
        .iter()
        .map(|&s| f32::from(s) / 32_768.0)
        .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAV with `fmt` fields as given and `data` as given.
    fn wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let align = channels * (bits / 8);
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * u32::from(align)).to_le_bytes());
        b.extend_from_slice(&align.to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(data);
        b
    }

    fn sine(freq: f64, rate: u32, secs: f64) -> Vec<f64> {
        let n = (f64::from(rate) * secs) as usize;
        (0..n)
            .map(|i| 0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
            .collect()
    }

    fn pcm16(x: &[f64]) -> Vec<u8> {
        x.iter()
            .flat_map(|&v| ((v * 32_767.0) as i16).to_le_bytes())
            .collect()
    }

    /// The level of `freq` in `x` (8 kHz), by correlation with a sine and a cosine.
    fn level(x: &[i16], freq: f64) -> f64 {
        let (mut s, mut c) = (0.0, 0.0);
        for (i, &v) in x.iter().enumerate() {
            let w = 2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0;
            s += f64::from(v) * w.sin();
            c += f64::from(v) * w.cos();
        }
        2.0 * (s * s + c * c).sqrt() / x.len() as f64 / 32_767.0
    }

    #[test]
    fn a_48k_stereo_upload_keeps_its_voice_band_and_drops_what_8k_cannot_carry() {
        // 1 kHz in both channels, plus 6 kHz: above 4 kHz it would fold back to 2 kHz.
        let a = sine(1000.0, 48_000, 2.0);
        let b = sine(6000.0, 48_000, 2.0);
        let stereo: Vec<f64> = a.iter().zip(&b).flat_map(|(&x, &y)| [x, y]).collect();
        let got = greeting_from_wav(&wav(1, 2, 48_000, 16, &pcm16(&stereo)), 30).unwrap();
        assert!((got.len() as i64 - 16_000).abs() < 10, "{}", got.len());
        // The 1 kHz tone is in both channels at 0.5, so 0.25 once averaged with the other.
        assert!(
            (level(&got, 1000.0) - 0.25).abs() < 0.02,
            "{}",
            level(&got, 1000.0)
        );
        assert!(
            level(&got, 2000.0) < 0.005,
            "6 kHz folded to 2 kHz: {}",
            level(&got, 2000.0)
        );
    }

    #[test]
    fn every_coding_reads_back_the_same_tone() {
        let x = sine(440.0, 8000, 1.0);
        let int8: Vec<u8> = x.iter().map(|&v| (v * 127.0 + 128.0) as u8).collect();
        let int24: Vec<u8> = x
            .iter()
            .flat_map(|&v| {
                let s = (v * 8_388_607.0) as i32;
                [s as u8, (s >> 8) as u8, (s >> 16) as u8]
            })
            .collect();
        let int32: Vec<u8> = x
            .iter()
            .flat_map(|&v| ((v * 2_147_483_647.0) as i32).to_le_bytes())
            .collect();
        let f32s: Vec<u8> = x.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
        let f64s: Vec<u8> = x.iter().flat_map(|&v| v.to_le_bytes()).collect();
        let mu: Vec<u8> = x
            .iter()
            .map(|&v| crate::Law::Ulaw.encode((v * 32_767.0) as i16))
            .collect();
        let al: Vec<u8> = x
            .iter()
            .map(|&v| crate::Law::Alaw.encode((v * 32_767.0) as i16))
            .collect();
        for (name, file) in [
            ("int8", wav(1, 1, 8000, 8, &int8)),
            ("int16", wav(1, 1, 8000, 16, &pcm16(&x))),
            ("int24", wav(1, 1, 8000, 24, &int24)),
            ("int32", wav(1, 1, 8000, 32, &int32)),
            ("float32", wav(3, 1, 8000, 32, &f32s)),
            ("float64", wav(3, 1, 8000, 64, &f64s)),
            ("ulaw", wav(7, 1, 8000, 8, &mu)),
            ("alaw", wav(6, 1, 8000, 8, &al)),
        ] {
            let got = greeting_from_wav(&file, 30).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.len(), 8000, "{name}");
            assert!(
                (level(&got, 440.0) - 0.5).abs() < 0.02,
                "{name}: {}",
                level(&got, 440.0)
            );
        }
    }

    #[test]
    fn hostile_files_are_refused_with_what_is_wrong() {
        let ok = pcm16(&sine(440.0, 8000, 1.0));
        let cases: Vec<(Vec<u8>, UploadError)> = vec![
            (Vec::new(), UploadError::NotWav),
            (b"OggS\0\0\0\0\0\0\0\0".to_vec(), UploadError::NotWav),
            (wav(1, 1, 8000, 16, &[]), UploadError::Empty),
            (wav(1, 1, 8000, 16, &ok[..400]), UploadError::TooShort(25)),
            (
                wav(1, 1, 8000, 16, &pcm16(&sine(440.0, 8000, 31.0))),
                UploadError::TooLong {
                    ms: 31_000,
                    max: 30,
                },
            ),
            (
                wav(85, 1, 8000, 16, &ok),
                UploadError::Unsupported { tag: 85, bits: 16 },
            ),
            (wav(1, 0, 8000, 16, &ok), UploadError::Channels(0)),
            (wav(1, 9, 8000, 16, &ok), UploadError::Channels(9)),
            (wav(1, 1, 100, 16, &ok), UploadError::Rate(100)),
            (wav(1, 1, 8000, 16, &vec![0; 16_000]), UploadError::Silent),
        ];
        for (file, want) in cases {
            assert_eq!(greeting_from_wav(&file, 30), Err(want.clone()), "{want}");
        }
        // Cut short: the data chunk says more than there is.
        let mut cut = wav(1, 1, 8000, 16, &ok);
        cut.truncate(cut.len() - 1000);
        assert_eq!(
            greeting_from_wav(&cut, 30),
            Err(UploadError::Truncated {
                declared: 16_000,
                present: 15_000
            })
        );
        // A block align that lies about the frame size.
        let mut lie = wav(1, 2, 8000, 16, &ok);
        lie[32] = 3;
        assert!(matches!(
            greeting_from_wav(&lie, 30),
            Err(UploadError::BlockAlign { align: 3, .. })
        ));
        // A chunk whose length runs past the end, before any fmt.
        let mut runaway = b"RIFF\0\0\0\0WAVEjunk".to_vec();
        runaway.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(greeting_from_wav(&runaway, 30), Err(UploadError::NoFormat));
        // A huge claimed length is refused from the header, before anything is decoded.
        let mut long = wav(1, 1, 8000, 16, &ok);
        long[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            greeting_from_wav(&long, 30).unwrap().len(),
            8000,
            "0xFFFFFFFF: streamed, to the end of the file"
        );
        assert!(UploadError::TooLong { ms: 1, max: 1 }.too_large());
        assert!(!UploadError::Empty.too_large());
    }

    #[test]
    fn an_extensible_header_is_read_by_its_sub_format() {
        let x = pcm16(&sine(440.0, 16_000, 1.0));
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF\0\0\0\0WAVEfmt ");
        b.extend_from_slice(&40u32.to_le_bytes());
        for v in [0xFFFEu16, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&16_000u32.to_le_bytes());
        b.extend_from_slice(&32_000u32.to_le_bytes());
        for v in [2u16, 16, 22, 16] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&4u32.to_le_bytes()); // channel mask
        b.extend_from_slice(&1u16.to_le_bytes()); // KSDATAFORMAT_SUBTYPE_PCM's first two bytes
        b.extend_from_slice(&[0; 14]);
        b.extend_from_slice(b"LIST");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(b"abc\0"); // odd length, padded
        b.extend_from_slice(b"data");
        b.extend_from_slice(&(x.len() as u32).to_le_bytes());
        b.extend_from_slice(&x);
        let got = greeting_from_wav(&b, 30).unwrap();
        assert!((got.len() as i64 - 8000).abs() < 10);
        assert!((level(&got, 440.0) - 0.5).abs() < 0.02);
    }
}
