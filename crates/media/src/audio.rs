//! Audio helpers: format conversion, level and similarity.

/// Converts interleaved samples at `rate` with `channels` to 8 kHz mono (linear interpolation
/// after channel averaging; enough for telephone band prompts and test audio).
pub fn to_8k_mono(samples: &[i16], rate: u32, channels: u16) -> Vec<i16> {
    let ch = channels.max(1) as usize;
    let mono: Vec<f32> = samples
        .chunks(ch)
        .map(|f| f.iter().map(|&s| s as f32).sum::<f32>() / f.len() as f32)
        .collect();
    if rate == 8000 || mono.is_empty() {
        return mono.iter().map(|&s| s as i16).collect();
    }
    let step = rate as f64 / 8000.0;
    let n = (mono.len() as f64 / step) as usize;
    (0..n)
        .map(|i| {
            let x = i as f64 * step;
            let j = x as usize;
            let frac = (x - j as f64) as f32;
            let a = mono[j];
            let b = *mono.get(j + 1).unwrap_or(&a);
            (a + (b - a) * frac) as i16
        })
        .collect()
}

/// Appends `samples` at `from` Hz to `out` at `to` Hz, for the two telephone rates (8 and
/// 16 kHz): halving averages pairs (a crude low-pass, enough below 3.4 kHz), doubling
/// interpolates linearly. Any other pair is copied as it is.
pub fn convert_into(samples: &[i16], from: u32, to: u32, out: &mut Vec<i16>) {
    if from == to * 2 {
        out.extend(
            samples
                .chunks(2)
                .map(|p| ((p[0] as i32 + *p.get(1).unwrap_or(&p[0]) as i32) / 2) as i16),
        );
    } else if to == from * 2 {
        for (i, &s) in samples.iter().enumerate() {
            let next = *samples.get(i + 1).unwrap_or(&s);
            out.push(s);
            out.push(((s as i32 + next as i32) / 2) as i16);
        }
    } else {
        out.extend_from_slice(samples);
    }
}

/// [`convert_into`] into a new vector.
pub fn convert(samples: &[i16], from: u32, to: u32) -> Vec<i16> {
    let mut out =
        Vec::with_capacity(samples.len() * (to as usize).max(1) / (from as usize).max(1) + 1);
    convert_into(samples, from, to, &mut out);
    out
}

/// Root mean square of a block.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| (s as f64) * (s as f64)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// The best normalised cross-correlation of `b` against `a` over lags `-max_lag..=max_lag`
/// samples: 1.0 for identical signals (any gain), ~0 for unrelated ones.
pub fn best_correlation(a: &[i16], b: &[i16], max_lag: usize) -> (f64, isize) {
    let mut best = (0.0, 0isize);
    let max_lag = max_lag as isize;
    // Coarse search every 4 samples, then refine around the best.
    let mut lag = -max_lag;
    while lag <= max_lag {
        let c = correlation_at(a, b, lag);
        if c > best.0 {
            best = (c, lag);
        }
        lag += 4;
    }
    for l in best.1 - 4..=best.1 + 4 {
        let c = correlation_at(a, b, l);
        if c > best.0 {
            best = (c, l);
        }
    }
    best
}

/// Normalised correlation of `a[i]` with `b[i + lag]` over their overlap.
pub fn correlation_at(a: &[i16], b: &[i16], lag: isize) -> f64 {
    let (mut sab, mut saa, mut sbb) = (0f64, 0f64, 0f64);
    for (i, &x) in a.iter().enumerate() {
        let j = i as isize + lag;
        if j < 0 {
            continue;
        }
        let Some(&y) = b.get(j as usize) else { break };
        let (x, y) = (x as f64, y as f64);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        sab / (saa.sqrt() * sbb.sqrt())
    }
}

/// A sine tone at `freq` Hz, `ms` long, at 8 kHz with amplitude `amp`.
pub fn tone(freq: f64, ms: u32, amp: f64) -> Vec<i16> {
    let n = ms as usize * 8;
    (0..n)
        .map(|i| (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0).sin()) as i16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convert_between_8_and_16_khz_keeps_length_and_shape() {
        let tone = tone(400.0, 100, 8000.0);
        let up = convert(&tone, 8000, 16_000);
        assert_eq!(up.len(), tone.len() * 2);
        let down = convert(&up, 16_000, 8000);
        assert_eq!(down.len(), tone.len());
        let (corr, lag) = best_correlation(&tone, &down, 4);
        assert!(corr > 0.99 && lag == 0, "{corr} at {lag}");
        assert_eq!(convert(&tone, 8000, 8000), tone);
    }

    #[test]
    fn correlation_finds_shifted_copy_and_rejects_noise() {
        let a = tone(440.0, 200, 8000.0);
        let mut b = vec![0i16; 80];
        b.extend(a.iter().map(|&s| s / 2));
        let (c, lag) = best_correlation(&a, &b, 200);
        assert!(c > 0.99, "{c}");
        assert_eq!(lag, 80);
        let mut x = 1u32;
        let noise: Vec<i16> = (0..1600)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2000) as i16 - 1000
            })
            .collect();
        assert!(best_correlation(&a, &noise, 200).0 < 0.2);
    }

    #[test]
    fn resampling_keeps_length_and_pitch() {
        let s: Vec<i16> = (0..16000)
            .map(|i| ((i as f64 / 16000.0 * std::f64::consts::TAU * 880.0).sin() * 1000.0) as i16)
            .collect();
        let stereo: Vec<i16> = s.iter().flat_map(|&v| [v, v]).collect();
        let out = to_8k_mono(&stereo, 16000, 2);
        assert_eq!(out.len(), 8000);
    }
}
