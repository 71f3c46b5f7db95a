//! The body of `POST /v1/audio/transcriptions`: `multipart/form-data` (RFC 7578) with the
//! fields every OpenAI-compatible recogniser reads: `file` (the WAV as stored: 8 kHz or
//! 16 kHz, 16-bit mono), `model`, `language` (ISO 639-1, when the recipient's is known:
//! it spares the recogniser a guess on the first 30 s) and `response_format`.

/// What the recogniser is asked to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Text with segments and their confidence: what lets [`crate::reply`] drop what the
    /// recogniser doubts. Asked first.
    VerboseJson,
    /// `{"text": ...}` only: for a service that refuses `verbose_json`.
    Json,
}

impl Format {
    /// The `response_format` field's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::VerboseJson => "verbose_json",
            Format::Json => "json",
        }
    }
}

/// One transcription request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The message's WAV file.
    pub wav: &'a [u8],
    /// The `model` field (checked at configuration: printable ASCII, no quotes).
    pub model: &'a str,
    /// ISO 639-1 (`en`, `fr`, `es`, `de`), or None to let the recogniser detect it.
    pub language: Option<&'a str>,
    /// The answer asked for.
    pub format: Format,
}

/// The boundary occurs in the audio: build again with another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundaryInData;

impl<'a> Request<'a> {
    /// The `Content-Type` header's value and the body, with `boundary` (random, from the
    /// caller: randomness is an input here) between the parts. RFC 2046 forbids a boundary
    /// that occurs in a part; with 32 random hex digits it never does in practice, but the
    /// audio is checked rather than trusted.
    pub fn encode(&self, boundary: &str) -> Result<(String, Vec<u8>), BoundaryInData> {
        let delimiter = format!("--{boundary}");
        if self
            .wav
            .windows(delimiter.len())
            .any(|w| w == delimiter.as_bytes())
        {
            return Err(BoundaryInData);
        }
        let mut body = Vec::with_capacity(self.wav.len() + 512);
        let mut field = |name: &str, value: &str| {
            body.extend_from_slice(
                format!(
                    "{delimiter}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        };
        field("model", self.model);
        if let Some(language) = self.language {
            field("language", language);
        }
        field("response_format", self.format.as_str());
        body.extend_from_slice(
            format!(
                "{delimiter}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"message.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(self.wav);
        body.extend_from_slice(format!("\r\n{delimiter}--\r\n").as_bytes());
        Ok((format!("multipart/form-data; boundary={boundary}"), body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_each_field_and_the_audio_between_boundaries() {
        let wav = b"RIFF\x00\x01\r\n--not-it";
        let r = Request {
            wav,
            model: "whisper-1",
            language: Some("fr"),
            format: Format::VerboseJson,
        };
        let (ct, body) = r.encode("b0undary").unwrap();
        assert_eq!(ct, "multipart/form-data; boundary=b0undary");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(
            "--b0undary\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
        ));
        assert!(text.contains("name=\"language\"\r\n\r\nfr\r\n"));
        assert!(text.contains("name=\"response_format\"\r\n\r\nverbose_json\r\n"));
        assert!(text.contains("filename=\"message.wav\"\r\nContent-Type: audio/wav\r\n\r\n"));
        assert!(body.ends_with(b"RIFF\x00\x01\r\n--not-it\r\n--b0undary--\r\n"));
        // No language: the field is left out, not sent empty.
        let r = Request {
            language: None,
            format: Format::Json,
            ..r
        };
        let (_, body) = r.encode("b0undary").unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("language"));
        assert!(text.contains("\r\n\r\njson\r\n"));
    }

    #[test]
    fn a_boundary_found_in_the_audio_is_refused() {
        let r = Request {
            wav: b"xx--abc--yy",
            model: "m",
            language: None,
            format: Format::Json,
        };
        assert_eq!(r.encode("abc"), Err(BoundaryInData));
        assert!(r.encode("abd").is_ok());
    }
}
