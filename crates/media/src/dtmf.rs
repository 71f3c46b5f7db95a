//! In-band DTMF detection (ITU-T Q.23/Q.24) with the Goertzel algorithm, for gateways that
//! send digits as tones instead of RFC 4733 events. Sans-IO: feed 8 kHz samples, get digits.

/// Row (low group) and column (high group) frequencies, Hz.
const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Samples per analysis block (25.6 ms at 8 kHz): the classic block that separates
/// neighbouring DTMF frequencies (73 Hz apart at the closest).
const BLOCK: usize = 205;
/// Blocks in a row a digit must be seen before it is reported.
const ON_BLOCKS: u8 = 2;
/// Blocks in a row without it before the same digit can be reported again.
const OFF_BLOCKS: u8 = 2;

/// Thresholds of the detector.
#[derive(Debug, Clone, Copy)]
pub struct DtmfSettings {
    /// Least RMS of a block that may hold a digit (16-bit scale).
    pub min_rms: f64,
    /// Share of the block's energy the two tones must carry.
    pub min_tone_share: f64,
    /// Largest power ratio between the two tones (twist), as a factor.
    pub max_twist: f64,
    /// How much stronger the winning tone of a group must be than the runner-up.
    pub min_peak_ratio: f64,
}

impl Default for DtmfSettings {
    fn default() -> Self {
        DtmfSettings {
            min_rms: 150.0,
            min_tone_share: 0.65,
            max_twist: 6.3,
            min_peak_ratio: 6.0,
        }
    }
}

/// Goertzel DTMF detector.
#[derive(Debug, Clone)]
pub struct DtmfDetector {
    s: DtmfSettings,
    coeffs: [f64; 8],
    block: [f64; BLOCK],
    fill: usize,
    candidate: Option<char>,
    run: u8,
    reported: Option<char>,
    quiet: u8,
}

impl Default for DtmfDetector {
    fn default() -> Self {
        Self::new(DtmfSettings::default())
    }
}

impl DtmfDetector {
    /// A detector with these thresholds.
    pub fn new(s: DtmfSettings) -> DtmfDetector {
        let mut coeffs = [0.0; 8];
        for (i, f) in ROWS.iter().chain(COLS.iter()).enumerate() {
            coeffs[i] = 2.0 * (2.0 * std::f64::consts::PI * f / 8000.0).cos();
        }
        DtmfDetector {
            s,
            coeffs,
            block: [0.0; BLOCK],
            fill: 0,
            candidate: None,
            run: 0,
            reported: None,
            quiet: OFF_BLOCKS,
        }
    }

    /// Feeds samples; calls `on_digit` once per key press.
    pub fn push(&mut self, samples: &[i16], mut on_digit: impl FnMut(char)) {
        for &x in samples {
            self.block[self.fill] = x as f64;
            self.fill += 1;
            if self.fill == BLOCK {
                self.fill = 0;
                let d = self.analyse();
                if let Some(c) = self.debounce(d) {
                    on_digit(c);
                }
            }
        }
    }

    fn debounce(&mut self, d: Option<char>) -> Option<char> {
        match d {
            Some(c) if Some(c) == self.candidate => self.run = self.run.saturating_add(1),
            Some(c) => {
                self.candidate = Some(c);
                self.run = 1;
            }
            None => {
                self.candidate = None;
                self.run = 0;
            }
        }
        if d.is_none() || d != self.reported {
            self.quiet = self.quiet.saturating_add(1);
        } else {
            self.quiet = 0;
        }
        if self.quiet >= OFF_BLOCKS {
            self.reported = None;
        }
        if self.run >= ON_BLOCKS && self.reported.is_none() {
            self.reported = self.candidate;
            self.quiet = 0;
            return self.candidate;
        }
        None
    }

    fn analyse(&self) -> Option<char> {
        let energy: f64 = self.block.iter().map(|x| x * x).sum();
        let rms = (energy / BLOCK as f64).sqrt();
        if rms < self.s.min_rms {
            return None;
        }
        let mut p = [0.0; 8];
        for (i, c) in self.coeffs.iter().enumerate() {
            let (mut s1, mut s2) = (0.0, 0.0);
            for &x in &self.block {
                let s0 = x + c * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            p[i] = s1 * s1 + s2 * s2 - c * s1 * s2;
        }
        let best = |g: &[f64]| -> (usize, f64, f64) {
            let mut idx = 0;
            for i in 1..4 {
                if g[i] > g[idx] {
                    idx = i;
                }
            }
            let second = (0..4)
                .filter(|&i| i != idx)
                .map(|i| g[i])
                .fold(0.0, f64::max);
            (idx, g[idx], second)
        };
        let (r, pr, r2) = best(&p[..4]);
        let (c, pc, c2) = best(&p[4..]);
        // A pure tone of amplitude A gives |X|^2 = (N A / 2)^2 and block energy N A^2 / 2.
        let share = (pr + pc) / (energy * BLOCK as f64 / 2.0);
        let twist = if pr > pc {
            pr / pc.max(1e-9)
        } else {
            pc / pr.max(1e-9)
        };
        let peaks = pr >= self.s.min_peak_ratio * r2 && pc >= self.s.min_peak_ratio * c2;
        (share >= self.s.min_tone_share && twist <= self.s.max_twist && peaks).then(|| KEYS[r][c])
    }
}

/// The two frequencies of a key, for generating test tones.
pub fn key_freqs(key: char) -> Option<(f64, f64)> {
    for (r, row) in KEYS.iter().enumerate() {
        for (c, &k) in row.iter().enumerate() {
            if k == key {
                return Some((ROWS[r], COLS[c]));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::g711::Law;

    fn tone(key: char, ms: usize, amp: f64) -> Vec<i16> {
        let (f1, f2) = key_freqs(key).unwrap();
        (0..ms * 8)
            .map(|i| {
                let t = i as f64 / 8000.0;
                (amp * ((2.0 * std::f64::consts::PI * f1 * t).sin()
                    + 0.8 * (2.0 * std::f64::consts::PI * f2 * t).sin())) as i16
            })
            .collect()
    }

    fn detect(samples: &[i16]) -> String {
        let mut d = DtmfDetector::default();
        let mut out = String::new();
        d.push(samples, |c| out.push(c));
        out
    }

    fn sequence(keys: &str, on_ms: usize, off_ms: usize, amp: f64) -> Vec<i16> {
        let mut v = Vec::new();
        for k in keys.chars() {
            v.extend(tone(k, on_ms, amp));
            v.extend(std::iter::repeat_n(0i16, off_ms * 8));
        }
        v
    }

    #[test]
    fn every_key_once_per_press() {
        let keys = "123A456B789C*0#D";
        assert_eq!(detect(&sequence(keys, 80, 80, 6000.0)), keys);
        // A long press is one digit.
        assert_eq!(detect(&sequence("5", 1000, 50, 6000.0)), "5");
        // Repeated presses of the same key are separate digits.
        assert_eq!(detect(&sequence("777", 80, 80, 6000.0)), "777");
    }

    #[test]
    fn g711_coded_and_noisy_tones() {
        let clean = sequence("159#", 90, 80, 4000.0);
        let coded: Vec<i16> = clean
            .iter()
            .map(|&s| Law::Alaw.decode(Law::Alaw.encode(s)))
            .collect();
        assert_eq!(detect(&coded), "159#");
        let mut x = 12345u32;
        let noisy: Vec<i16> = clean
            .iter()
            .map(|&s| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                s.saturating_add(((x % 1200) as i16) - 600)
            })
            .collect();
        assert_eq!(detect(&noisy), "159#");
    }

    #[test]
    fn short_blips_quiet_tones_and_single_tones_are_not_digits() {
        assert_eq!(detect(&sequence("1", 20, 50, 6000.0)), "");
        assert_eq!(detect(&sequence("1", 100, 50, 60.0)), "");
        let single: Vec<i16> = crate::audio::tone(697.0, 200, 6000.0);
        assert_eq!(detect(&single), "");
    }

    /// The test set: 16 keys x 3 levels x 2 laws x 3 noise levels x 2 tone lengths, each
    /// press as a 10-key string. Prints the detection rate; at least 99 % must be found
    /// exactly, and no digit may appear that was not pressed.
    #[test]
    fn detection_rate_on_the_test_set() {
        let keys: Vec<char> = "123A456B789C*0#D".chars().collect();
        let (mut pressed, mut found, mut extra) = (0usize, 0usize, 0usize);
        let mut seed = 7u32;
        for &amp in &[1500.0, 4000.0, 9000.0] {
            for codec in [Law::Ulaw, Law::Alaw] {
                for &noise in &[0i32, 300, 900] {
                    for &on_ms in &[70usize, 120] {
                        let seq: String = (0..10)
                            .map(|i| keys[(i * 7 + on_ms + noise as usize) % 16])
                            .collect();
                        let clean = sequence(&seq, on_ms, 80, amp);
                        let sig: Vec<i16> = clean
                            .iter()
                            .map(|&x| {
                                seed ^= seed << 13;
                                seed ^= seed >> 17;
                                seed ^= seed << 5;
                                let n = if noise == 0 {
                                    0
                                } else {
                                    (seed % (2 * noise as u32)) as i32 - noise
                                };
                                codec.decode(
                                    codec.encode((x as i32 + n).clamp(-32768, 32767) as i16),
                                )
                            })
                            .collect();
                        let got = detect(&sig);
                        pressed += seq.len();
                        // Longest common subsequence is overkill: digits are found in order or not at all.
                        let mut it = got.chars().peekable();
                        for k in seq.chars() {
                            if it.peek() == Some(&k) {
                                found += 1;
                                it.next();
                            }
                        }
                        extra += it.count();
                    }
                }
            }
        }
        let rate = found as f64 / pressed as f64;
        println!(
            "DTMF detection rate: {found}/{pressed} = {:.2} %, {extra} spurious",
            rate * 100.0
        );
        assert!(rate >= 0.99, "rate {rate}");
        assert_eq!(extra, 0);
    }

    #[test]
    fn speech_gives_no_digits() {
        use boxless_core::recipient::Language;
        let p = crate::prompts::Prompts::load();
        let speech = p.greeting(Language::En, "+15551230002");
        assert_eq!(
            detect(&speech[..speech.len() - 3200]),
            "",
            "the greeting's speech, without its beep"
        );
        // Every recorded phrase of every language, plain and A-law coded.
        let mut seconds = 0.0;
        let langs = [Language::En, Language::Es, Language::Fr, Language::De];
        for (name, s) in langs.iter().flat_map(|l| p.voice(*l).all()) {
            assert_eq!(detect(s), "", "{name}");
            let coded: Vec<i16> = s
                .iter()
                .map(|&x| Law::Alaw.decode(Law::Alaw.encode(x)))
                .collect();
            assert_eq!(detect(&coded), "", "{name} (A-law)");
            seconds += s.len() as f64 / 8000.0;
        }
        println!("no false digit in {seconds:.0} s of speech");
    }
}
