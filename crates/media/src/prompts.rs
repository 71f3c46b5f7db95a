//! Spoken prompts, recorded once with espeak-ng (`tools/make-prompts.sh`) and committed as
//! 8 kHz mono WAV: the default greeting ("You have reached \<digits\>. Please leave a message
//! after the tone.") and the retrieval phrases, numbers 0-59 and month names.

use std::collections::HashMap;

use crate::audio;

macro_rules! prompt {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("../prompts/", $name, ".wav")).as_slice(),
        )
    };
}

const FILES: [(&str, &[u8]); 97] = [
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
    prompt!("message-from"),
    prompt!("unknown-caller"),
    prompt!("received"),
    prompt!("at"),
    prompt!("enter-code"),
    prompt!("wrong-code"),
    prompt!("locked-out"),
    prompt!("no-messages"),
    prompt!("options"),
    prompt!("deleted"),
    prompt!("saved"),
    prompt!("no-more"),
    prompt!("goodbye"),
    prompt!("number-0"),
    prompt!("number-1"),
    prompt!("number-2"),
    prompt!("number-3"),
    prompt!("number-4"),
    prompt!("number-5"),
    prompt!("number-6"),
    prompt!("number-7"),
    prompt!("number-8"),
    prompt!("number-9"),
    prompt!("number-10"),
    prompt!("number-11"),
    prompt!("number-12"),
    prompt!("number-13"),
    prompt!("number-14"),
    prompt!("number-15"),
    prompt!("number-16"),
    prompt!("number-17"),
    prompt!("number-18"),
    prompt!("number-19"),
    prompt!("number-20"),
    prompt!("number-21"),
    prompt!("number-22"),
    prompt!("number-23"),
    prompt!("number-24"),
    prompt!("number-25"),
    prompt!("number-26"),
    prompt!("number-27"),
    prompt!("number-28"),
    prompt!("number-29"),
    prompt!("number-30"),
    prompt!("number-31"),
    prompt!("number-32"),
    prompt!("number-33"),
    prompt!("number-34"),
    prompt!("number-35"),
    prompt!("number-36"),
    prompt!("number-37"),
    prompt!("number-38"),
    prompt!("number-39"),
    prompt!("number-40"),
    prompt!("number-41"),
    prompt!("number-42"),
    prompt!("number-43"),
    prompt!("number-44"),
    prompt!("number-45"),
    prompt!("number-46"),
    prompt!("number-47"),
    prompt!("number-48"),
    prompt!("number-49"),
    prompt!("number-50"),
    prompt!("number-51"),
    prompt!("number-52"),
    prompt!("number-53"),
    prompt!("number-54"),
    prompt!("number-55"),
    prompt!("number-56"),
    prompt!("number-57"),
    prompt!("number-58"),
    prompt!("number-59"),
    prompt!("month-1"),
    prompt!("month-2"),
    prompt!("month-3"),
    prompt!("month-4"),
    prompt!("month-5"),
    prompt!("month-6"),
    prompt!("month-7"),
    prompt!("month-8"),
    prompt!("month-9"),
    prompt!("month-10"),
    prompt!("month-11"),
    prompt!("month-12"),
];

/// Decoded prompts, 8 kHz mono, loaded once per process.
#[derive(Debug, Clone)]
pub struct Prompts {
    by_name: HashMap<&'static str, Vec<i16>>,
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
        Prompts {
            by_name: FILES.iter().map(|(n, b)| (*n, decode(b))).collect(),
            tone: audio::tone(1000.0, 400, 8000.0),
        }
    }

    /// A prompt by file name (`goodbye`, `number-27`, ...); empty if there is none.
    pub fn get(&self, name: &str) -> &[i16] {
        self.by_name.get(name).map_or(&[], |v| v.as_slice())
    }

    /// Every prompt with its name.
    pub fn all(&self) -> impl Iterator<Item = (&str, &[i16])> {
        self.by_name.iter().map(|(n, v)| (*n, v.as_slice()))
    }

    /// The beep before recording.
    pub fn tone(&self) -> &[i16] {
        &self.tone
    }

    /// Appends the digits of `s`, one by one.
    pub fn say_digits(&self, s: &str, out: &mut Vec<i16>) {
        for d in s.bytes().filter(u8::is_ascii_digit) {
            out.extend_from_slice(self.get(&format!("digit-{}", d - b'0')));
        }
    }

    /// Appends a number 0-59 as a word, larger numbers digit by digit.
    pub fn say_number(&self, n: u32, out: &mut Vec<i16>) {
        if n < 60 {
            out.extend_from_slice(self.get(&format!("number-{n}")));
        } else {
            self.say_digits(&n.to_string(), out);
        }
    }

    /// Appends `ms` of silence.
    pub fn pause(&self, ms: usize, out: &mut Vec<i16>) {
        out.extend(std::iter::repeat_n(0, ms * 8));
    }

    /// Greeting that speaks the recipient's digits, followed by the tone.
    pub fn greeting(&self, digits: &str) -> Vec<i16> {
        let mut out = self.get("you-have-reached").to_vec();
        self.say_digits(digits, &mut out);
        self.pause(300, &mut out);
        out.extend_from_slice(self.get("leave-message"));
        self.pause(200, &mut out);
        out.extend_from_slice(&self.tone);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prompt_decodes_and_greeting_speaks_every_digit() {
        let p = Prompts::load();
        for (name, _) in FILES {
            let s = p.get(name);
            assert!(s.len() > 1000 && audio::rms(s) > 300.0, "{name}");
        }
        let g1 = p.greeting("+1555");
        let g2 = p.greeting("+15551");
        assert_eq!(g2.len() - g1.len(), p.get("digit-1").len());
        let mut n = Vec::new();
        p.say_number(27, &mut n);
        assert_eq!(n.len(), p.get("number-27").len());
        assert!(p.get("nothing").is_empty());
    }
}
