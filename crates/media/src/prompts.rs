//! Spoken prompts, recorded once with espeak-ng (`tools/make-prompts.sh`) and committed as
//! 8 kHz mono WAV, in English, Spanish, French and German: the default greeting ("You have
//! reached \<digits\>. Please leave a message after the tone.") and the retrieval phrases
//! (the personal greeting's by phone among them), numbers 0-59 and month names.

use std::collections::HashMap;

use boxless_core::recipient::Language;

use crate::audio;

macro_rules! prompt {
    ($dir:literal, $name:literal) => {
        (
            $name,
            include_bytes!(concat!("../prompts/", $dir, $name, ".wav")).as_slice(),
        )
    };
}

/// The prompts every language has, from the language's directory.
macro_rules! voice {
    ($dir:literal) => {
        [
            prompt!($dir, "you-have-reached"),
            prompt!($dir, "leave-message"),
            prompt!($dir, "digit-0"),
            prompt!($dir, "digit-1"),
            prompt!($dir, "digit-2"),
            prompt!($dir, "digit-3"),
            prompt!($dir, "digit-4"),
            prompt!($dir, "digit-5"),
            prompt!($dir, "digit-6"),
            prompt!($dir, "digit-7"),
            prompt!($dir, "digit-8"),
            prompt!($dir, "digit-9"),
            prompt!($dir, "message-from"),
            prompt!($dir, "unknown-caller"),
            prompt!($dir, "received"),
            prompt!($dir, "at"),
            prompt!($dir, "enter-code"),
            prompt!($dir, "wrong-code"),
            prompt!($dir, "locked-out"),
            prompt!($dir, "no-messages"),
            prompt!($dir, "options"),
            prompt!($dir, "deleted"),
            prompt!($dir, "saved"),
            prompt!($dir, "no-more"),
            prompt!($dir, "goodbye"),
            prompt!($dir, "greeting-record"),
            prompt!($dir, "greeting-is"),
            prompt!($dir, "greeting-options"),
            prompt!($dir, "greeting-saved"),
            prompt!($dir, "greeting-removed"),
            prompt!($dir, "own-phone-only"),
            prompt!($dir, "number-0"),
            prompt!($dir, "number-1"),
            prompt!($dir, "number-2"),
            prompt!($dir, "number-3"),
            prompt!($dir, "number-4"),
            prompt!($dir, "number-5"),
            prompt!($dir, "number-6"),
            prompt!($dir, "number-7"),
            prompt!($dir, "number-8"),
            prompt!($dir, "number-9"),
            prompt!($dir, "number-10"),
            prompt!($dir, "number-11"),
            prompt!($dir, "number-12"),
            prompt!($dir, "number-13"),
            prompt!($dir, "number-14"),
            prompt!($dir, "number-15"),
            prompt!($dir, "number-16"),
            prompt!($dir, "number-17"),
            prompt!($dir, "number-18"),
            prompt!($dir, "number-19"),
            prompt!($dir, "number-20"),
            prompt!($dir, "number-21"),
            prompt!($dir, "number-22"),
            prompt!($dir, "number-23"),
            prompt!($dir, "number-24"),
            prompt!($dir, "number-25"),
            prompt!($dir, "number-26"),
            prompt!($dir, "number-27"),
            prompt!($dir, "number-28"),
            prompt!($dir, "number-29"),
            prompt!($dir, "number-30"),
            prompt!($dir, "number-31"),
            prompt!($dir, "number-32"),
            prompt!($dir, "number-33"),
            prompt!($dir, "number-34"),
            prompt!($dir, "number-35"),
            prompt!($dir, "number-36"),
            prompt!($dir, "number-37"),
            prompt!($dir, "number-38"),
            prompt!($dir, "number-39"),
            prompt!($dir, "number-40"),
            prompt!($dir, "number-41"),
            prompt!($dir, "number-42"),
            prompt!($dir, "number-43"),
            prompt!($dir, "number-44"),
            prompt!($dir, "number-45"),
            prompt!($dir, "number-46"),
            prompt!($dir, "number-47"),
            prompt!($dir, "number-48"),
            prompt!($dir, "number-49"),
            prompt!($dir, "number-50"),
            prompt!($dir, "number-51"),
            prompt!($dir, "number-52"),
            prompt!($dir, "number-53"),
            prompt!($dir, "number-54"),
            prompt!($dir, "number-55"),
            prompt!($dir, "number-56"),
            prompt!($dir, "number-57"),
            prompt!($dir, "number-58"),
            prompt!($dir, "number-59"),
            prompt!($dir, "month-1"),
            prompt!($dir, "month-2"),
            prompt!($dir, "month-3"),
            prompt!($dir, "month-4"),
            prompt!($dir, "month-5"),
            prompt!($dir, "month-6"),
            prompt!($dir, "month-7"),
            prompt!($dir, "month-8"),
            prompt!($dir, "month-9"),
            prompt!($dir, "month-10"),
            prompt!($dir, "month-11"),
            prompt!($dir, "month-12"),
        ]
    };
}

type Files = [(&'static str, &'static [u8]); 103];

const EN: Files = voice!("");
const ES: Files = voice!("es/");
const FR: Files = voice!("fr/");
const DE: Files = voice!("de/");

/// "heures", "Uhr": said after the hour where the language wants it.
const HOURS_FR: &[u8] = include_bytes!("../prompts/fr/hours.wav");
const HOURS_DE: &[u8] = include_bytes!("../prompts/de/hours.wav");

/// Decoded prompts, 8 kHz mono, loaded once per process: one [`Voice`] per language.
#[derive(Debug, Clone)]
pub struct Prompts {
    voices: [Voice; 4],
    tone: Vec<i16>,
}

/// One language's prompts, and how that language says a date.
#[derive(Debug, Clone)]
pub struct Voice {
    lang: Language,
    by_name: HashMap<&'static str, Vec<i16>>,
}

fn decode(bytes: &[u8]) -> Vec<i16> {
    // The prompts are committed 8 kHz mono 16-bit WAV files, checked by a unit test.
    let r = hound::WavReader::new(bytes).expect("committed prompt is a WAV file");
    let spec = r.spec();
    let s: Vec<i16> = r.into_samples::<i16>().map(|s| s.unwrap_or(0)).collect();
    audio::to_8k_mono(&s, spec.sample_rate, spec.channels)
}

impl Prompts {
    /// Decodes the committed WAV files.
    pub fn load() -> Prompts {
        let voice = |lang, files: &Files, hours: Option<&[u8]>| {
            let mut by_name: HashMap<&'static str, Vec<i16>> =
                files.iter().map(|(n, b)| (*n, decode(b))).collect();
            if let Some(h) = hours {
                by_name.insert("hours", decode(h));
            }
            Voice { lang, by_name }
        };
        Prompts {
            voices: [
                voice(Language::En, &EN, None),
                voice(Language::Es, &ES, None),
                voice(Language::Fr, &FR, Some(HOURS_FR)),
                voice(Language::De, &DE, Some(HOURS_DE)),
            ],
            tone: audio::tone(1000.0, 400, 8000.0),
        }
    }

    /// The prompts of `lang`.
    pub fn voice(&self, lang: Language) -> &Voice {
        let i = match lang {
            Language::En => 0,
            Language::Es => 1,
            Language::Fr => 2,
            Language::De => 3,
        };
        &self.voices[i]
    }

    /// The beep before recording.
    pub fn tone(&self) -> &[i16] {
        &self.tone
    }

    /// Greeting in `lang` that speaks the recipient's digits, followed by the tone.
    pub fn greeting(&self, lang: Language, digits: &str) -> Vec<i16> {
        let v = self.voice(lang);
        let mut out = v.get("you-have-reached").to_vec();
        v.say_digits(digits, &mut out);
        v.pause(300, &mut out);
        out.extend_from_slice(v.get("leave-message"));
        v.pause(200, &mut out);
        out.extend_from_slice(&self.tone);
        out
    }
}

impl Voice {
    /// Its language.
    pub fn language(&self) -> Language {
        self.lang
    }

    /// A prompt by file name (`goodbye`, `number-27`, ...); empty if there is none.
    pub fn get(&self, name: &str) -> &[i16] {
        self.by_name.get(name).map_or(&[], |v| v.as_slice())
    }

    /// Every prompt with its name.
    pub fn all(&self) -> impl Iterator<Item = (&str, &[i16])> {
        self.by_name.iter().map(|(n, v)| (*n, v.as_slice()))
    }

    /// Appends the digits of `s`, one by one.
    pub fn say_digits(&self, s: &str, out: &mut Vec<i16>) {
        for d in s.bytes().filter(u8::is_ascii_digit) {
            out.extend_from_slice(self.get(DIGITS[usize::from(d - b'0')]));
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

    /// Appends "received \<date\> at \<time\>" as the language orders it: "received
    /// March 3 at 14 05", "reçu le 3 mars à 14 heures 05", "recibido el 3 de marzo a las
    /// 14 05", "empfangen am 3 März um 14 Uhr 05".
    pub fn say_received(&self, month: u32, day: u32, h: u32, m: u32, out: &mut Vec<i16>) {
        out.extend_from_slice(self.get("received"));
        let month = self.get(&format!("month-{month}"));
        if self.lang == Language::En {
            out.extend_from_slice(month);
            self.say_number(day, out);
        } else {
            self.say_number(day, out);
            out.extend_from_slice(month);
        }
        out.extend_from_slice(self.get("at"));
        self.say_number(h, out);
        out.extend_from_slice(self.get("hours"));
        self.say_number(m, out);
    }
}

const DIGITS: [&str; 10] = [
    "digit-0", "digit-1", "digit-2", "digit-3", "digit-4", "digit-5", "digit-6", "digit-7",
    "digit-8", "digit-9",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_greeting_s_record_prompt_and_its_tone_take_at_most_six_seconds() {
        let p = Prompts::load();
        for lang in [Language::En, Language::Es, Language::Fr, Language::De] {
            let v = p.voice(lang);
            // What the menu plays: the prompt, 200 ms, the tone.
            let n = v.get("greeting-record").len() + 1600 + p.tone().len();
            assert!(n > 3 * 8000 && n <= 6 * 8000, "{lang:?}: {} ms", n / 8);
            for name in [
                "greeting-is",
                "greeting-options",
                "greeting-saved",
                "greeting-removed",
                "own-phone-only",
            ] {
                assert!(v.get(name).len() > 4000, "{lang:?} {name}");
            }
        }
    }

    #[test]
    fn every_prompt_of_every_language_decodes_and_greeting_speaks_every_digit() {
        let p = Prompts::load();
        for lang in [Language::En, Language::Es, Language::Fr, Language::De] {
            let v = p.voice(lang);
            assert_eq!(v.language(), lang);
            for (name, _) in EN {
                let s = v.get(name);
                assert!(s.len() > 1000 && audio::rms(s) > 300.0, "{lang:?} {name}");
            }
            let g1 = p.greeting(lang, "+1555");
            let g2 = p.greeting(lang, "+15551");
            assert_eq!(g2.len() - g1.len(), v.get("digit-1").len());
            let mut n = Vec::new();
            v.say_number(27, &mut n);
            assert_eq!(n.len(), v.get("number-27").len());
            assert!(v.get("nothing").is_empty());
        }
        // The languages really differ: French "message from" is not English's.
        let (en, fr) = (p.voice(Language::En), p.voice(Language::Fr));
        assert_ne!(en.get("message-from"), fr.get("message-from"));
        assert!(!fr.get("hours").is_empty() && en.get("hours").is_empty());
    }

    #[test]
    fn a_date_is_said_in_the_languages_order() {
        let p = Prompts::load();
        let fr = p.voice(Language::Fr);
        let mut said = Vec::new();
        fr.say_received(3, 5, 14, 7, &mut said);
        let mut want = fr.get("received").to_vec();
        for part in [
            "number-5",
            "month-3",
            "at",
            "number-14",
            "hours",
            "number-7",
        ] {
            want.extend_from_slice(fr.get(part));
        }
        assert_eq!(said, want);
    }
}
