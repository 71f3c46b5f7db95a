//! The recogniser's answer, read as if hostile: bounded, checked JSON, then only what the
//! recogniser itself believes, cleaned.
//!
//! Recognisers invent text for silence and noise (Whisper's "Thank you." on a silent
//! file, whisper.cpp's `[BLANK_AUDIO]`). `verbose_json` segments carry the recogniser's own
//! doubt: `no_speech_prob` (how sure it is that the window held no speech) and
//! `avg_logprob` (the decoder's mean log-probability per token). A segment is dropped when
//! it is likely silence ([`NO_SPEECH`]), when its decoding failed by Whisper's own measure
//! ([`LOW_LOGPROB`]), when both lean that way ([`NO_SPEECH_LEANING`] and
//! [`LOGPROB_LEANING`]: Whisper's own no-speech rule), or when all it holds is a
//! bracketed annotation (`[Music]`, `(silence)`). What is left, empty: no speech.

use serde::Deserialize;

/// Answers larger than this are not read (five minutes of speech is about 5,000
/// characters; a `verbose_json` answer for it, with its token ids, about 200 KiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// The longest transcript kept, in characters (cut on a word, `...` added).
pub const MAX_TEXT_CHARS: usize = 20_000;

/// A segment the recogniser judges silence with at least this probability is dropped.
pub const NO_SPEECH: f64 = 0.8;
/// A segment decoded with a mean log-probability below this is dropped (Whisper's own
/// threshold for a failed decoding).
pub const LOW_LOGPROB: f64 = -1.0;
/// Both at once: likely silence ([`NO_SPEECH_LEANING`]) and unsure words
/// ([`LOGPROB_LEANING`]) drop a segment too.
pub const NO_SPEECH_LEANING: f64 = 0.5;
/// See [`NO_SPEECH_LEANING`].
pub const LOGPROB_LEANING: f64 = -0.7;

/// What the recogniser heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Words, cleaned.
    Text(String),
    /// Nothing it believes is speech.
    NoSpeech,
}

/// A checked answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The transcript.
    pub outcome: Outcome,
    /// Words in it.
    pub words: usize,
    /// Segments dropped as doubtful.
    pub dropped: usize,
}

/// Why an answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Larger than [`MAX_BODY`].
    #[error("answer larger than {MAX_BODY} bytes")]
    TooLarge,
    /// Not the JSON of a transcription (or not UTF-8).
    #[error("answer is not a transcription's JSON: {0}")]
    NotJson(String),
}

#[derive(Deserialize)]
struct Raw {
    text: Option<String>,
    segments: Option<Vec<Segment>>,
}

#[derive(Deserialize)]
struct Segment {
    #[serde(default)]
    text: String,
    no_speech_prob: Option<f64>,
    avg_logprob: Option<f64>,
}

impl Segment {
    fn doubtful(&self) -> bool {
        let silence = self.no_speech_prob.unwrap_or(0.0);
        let logprob = self.avg_logprob.unwrap_or(0.0);
        silence >= NO_SPEECH
            || logprob < LOW_LOGPROB
            || (silence >= NO_SPEECH_LEANING && logprob < LOGPROB_LEANING)
            || annotation(&self.text)
    }
}

/// `[BLANK_AUDIO]`, `(music)`, `[ Silence ]`: what recognisers write for no words.
fn annotation(text: &str) -> bool {
    let t = text.trim();
    let bracketed = |open, close| t.starts_with(open) && t.ends_with(close);
    t.len() >= 2 && (bracketed('[', ']') || bracketed('(', ')') || bracketed('*', '*'))
}

impl Reply {
    /// Reads `body` (the whole answer: a `verbose_json` or a `json` one).
    pub fn parse(body: &[u8]) -> Result<Reply, ReplyError> {
        if body.len() > MAX_BODY {
            return Err(ReplyError::TooLarge);
        }
        let raw: Raw =
            serde_json::from_slice(body).map_err(|e| ReplyError::NotJson(e.to_string()))?;
        let (text, dropped) = match raw.segments {
            Some(segments) => {
                let mut text = String::new();
                let mut dropped = 0;
                for s in &segments {
                    if s.doubtful() {
                        dropped += 1;
                    } else {
                        text.push(' ');
                        text.push_str(&s.text);
                    }
                }
                (text, dropped)
            }
            None => match raw.text {
                Some(t) if !annotation(&t) => (t, 0),
                Some(_) => (String::new(), 1),
                None => return Err(ReplyError::NotJson("no `text` and no `segments`".into())),
            },
        };
        let text = clean(&text, MAX_TEXT_CHARS);
        let words = text.split_whitespace().count();
        Ok(Reply {
            outcome: if words == 0 {
                Outcome::NoSpeech
            } else {
                Outcome::Text(text)
            },
            words,
            dropped,
        })
    }
}

/// Characters that change how text around them is shown without being seen: direction
/// overrides and isolates (a transcript could reverse the rest of an SMS or a page), zero
/// widths, the byte-order mark.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `text` with control characters as spaces, invisible ones removed, every run of
/// white space one space, trimmed, and at most `max` characters (cut on a word, `...`).
pub fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 4));
    let mut chars = 0;
    let mut space = true;
    for c in text.chars() {
        if invisible(c) {
            continue;
        }
        if c.is_whitespace() || c.is_control() {
            space = true;
            continue;
        }
        if chars + usize::from(space && chars > 0) + 1 > max {
            return cut(out, max);
        }
        if space && chars > 0 {
            out.push(' ');
            chars += 1;
        }
        space = false;
        out.push(c);
        chars += 1;
    }
    out
}

/// `text` (already longer than fits) cut after its last whole word so that `...` fits
/// within `max` characters.
fn cut(mut text: String, max: usize) -> String {
    let keep = max.saturating_sub(3);
    let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
    text.truncate(end);
    if let Some(space) = text.rfind(' ') {
        text.truncate(space);
    }
    text.push_str("...");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_json_keeps_what_the_recogniser_believes() {
        let body = br#"{"text": " Hi Anna. Thank you.", "language": "en", "segments": [
            {"id": 0, "text": " Hi Anna, it's Bob.", "no_speech_prob": 0.01, "avg_logprob": -0.2},
            {"id": 1, "text": " Call me back.", "no_speech_prob": 0.3, "avg_logprob": -0.6},
            {"id": 2, "text": " Thank you.", "no_speech_prob": 0.92, "avg_logprob": -0.3},
            {"id": 3, "text": " blah blah", "no_speech_prob": 0.1, "avg_logprob": -1.4},
            {"id": 4, "text": " So...", "no_speech_prob": 0.6, "avg_logprob": -0.8},
            {"id": 5, "text": " [BLANK_AUDIO]", "no_speech_prob": 0.0, "avg_logprob": -0.1}
        ]}"#;
        let r = Reply::parse(body).unwrap();
        assert_eq!(
            r.outcome,
            Outcome::Text("Hi Anna, it's Bob. Call me back.".into())
        );
        assert_eq!((r.words, r.dropped), (7, 4));
    }

    #[test]
    fn silence_noise_and_annotations_are_no_speech() {
        let body = br#"{"text": "Thank you.", "segments": [
            {"text": " Thank you.", "no_speech_prob": 0.85, "avg_logprob": -0.4}]}"#;
        assert_eq!(Reply::parse(body).unwrap().outcome, Outcome::NoSpeech);
        assert_eq!(
            Reply::parse(br#"{"text": " [BLANK_AUDIO]"}"#)
                .unwrap()
                .outcome,
            Outcome::NoSpeech
        );
        assert_eq!(
            Reply::parse(br#"{"text": "   "}"#).unwrap().outcome,
            Outcome::NoSpeech
        );
        assert_eq!(
            Reply::parse(br#"{"text": "x", "segments": []}"#)
                .unwrap()
                .outcome,
            Outcome::NoSpeech,
            "no segment at all is no speech, whatever `text` says"
        );
    }

    #[test]
    fn json_without_segments_is_taken_as_it_is() {
        let r = Reply::parse(br#"{"text": "Bonjour, c'est Marie."}"#).unwrap();
        assert_eq!(r.outcome, Outcome::Text("Bonjour, c'est Marie.".into()));
        assert_eq!(r.words, 3);
    }

    #[test]
    fn hostile_answers_are_refused_or_cleaned() {
        assert_eq!(
            Reply::parse(&vec![b' '; MAX_BODY + 1]),
            Err(ReplyError::TooLarge)
        );
        assert!(matches!(
            Reply::parse(b"<html>"),
            Err(ReplyError::NotJson(_))
        ));
        assert!(matches!(
            Reply::parse(b"{\"text\": \"\xff\xfe\"}"),
            Err(ReplyError::NotJson(_))
        ));
        assert!(matches!(
            Reply::parse(br#"{"segments": 3}"#),
            Err(ReplyError::NotJson(_))
        ));
        assert!(matches!(
            Reply::parse(br#"{"other": 1}"#),
            Err(ReplyError::NotJson(_))
        ));
        // Line breaks (an e-mail header), escapes, direction overrides, zero widths.
        let r = Reply::parse(
            br#"{"text": "Call\r\nBcc: x@evil\u001b[31m me\u202e\u200b back\t\u0000now"}"#,
        )
        .unwrap();
        assert_eq!(
            r.outcome,
            Outcome::Text("Call Bcc: x@evil [31m me back now".into())
        );
    }

    #[test]
    fn a_long_transcript_is_cut_on_a_word() {
        assert_eq!(clean("one two three four", 12), "one two...");
        assert_eq!(clean("one two three", 13), "one two three");
        assert_eq!(clean("  spaced \n\n out  ", 100), "spaced out");
        assert_eq!(clean("ééé ààà ççç", 9), "ééé...");
        let long = "word ".repeat(10_000);
        let c = clean(&long, MAX_TEXT_CHARS);
        assert!(c.chars().count() <= MAX_TEXT_CHARS && c.ends_with("word..."));
    }
}
