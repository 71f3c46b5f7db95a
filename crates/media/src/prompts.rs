//! The default greeting: "You have reached <digits>. Please leave a message after the tone."

use crate::audio;

macro_rules! prompt {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("../prompts/", $name, ".wav")).as_slice(),
        )
    };
}

const FILES: [(&str, &[u8]); 12] = [
    prompt!("you-have-reached"),
    prompt!("leave-message"),
    prompt!("digit-0"),
    prompt!("digit-1"),
    prompt!("digit-2"),
    prompt!("digit-3"),
    prompt!("digit-4"),
    prompt!("digit-5"),
    prompt!("digit-6"),
    prompt!("digit-7"),
    prompt!("digit-8"),
    prompt!("digit-9"),
];

/// Decoded prompts, 8 kHz mono, loaded once per process.
#[derive(Debug, Clone)]
pub struct Prompts {
    reached: Vec<i16>,
    leave: Vec<i16>,
    digits: Vec<Vec<i16>>,
    tone: Vec<i16>,
}

impl Prompts {
    /// Decodes the committed WAV files.
    pub fn load() -> Prompts {
        let decode = |bytes: &[u8]| -> Vec<i16> {
            // The prompts are committed 8 kHz mono 16-bit WAV files, checked by a unit test.
            let r = hound::WavReader::new(bytes).expect("committed prompt is a WAV file");
            let spec = r.spec();
            let s: Vec<i16> = r.into_samples::<i16>().map(|s| s.unwrap_or(0)).collect();
            audio::to_8k_mono(&s, spec.sample_rate, spec.channels)
        };
        let all: Vec<Vec<i16>> = FILES.iter().map(|(_, b)| decode(b)).collect();
        Prompts {
            reached: all[0].clone(),
            leave: all[1].clone(),
            digits: all[2..].to_vec(),
            tone: audio::tone(1000.0, 400, 8000.0),
        }
    }

    /// The beep before recording.
    pub fn tone(&self) -> &[i16] {
        &self.tone
    }

    /// Greeting that speaks the recipient's digits, followed by the tone.
    pub fn greeting(&self, digits: &str) -> Vec<i16> {
        let mut out = self.reached.clone();
        for d in digits.bytes().filter(u8::is_ascii_digit) {
            out.extend_from_slice(&self.digits[(d - b'0') as usize]);
        }
        out.extend(std::iter::repeat_n(0, 2400));
        out.extend_from_slice(&self.leave);
        out.extend(std::iter::repeat_n(0, 1600));
        out.extend_from_slice(&self.tone);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_decode_and_greeting_speaks_every_digit() {
        let p = Prompts::load();
        assert!(
            p.digits
                .iter()
                .all(|d| d.len() > 1000 && audio::rms(d) > 500.0)
        );
        let g1 = p.greeting("+1555");
        let g2 = p.greeting("+15551");
        assert_eq!(g2.len() - g1.len(), p.digits[1].len());
    }
}
