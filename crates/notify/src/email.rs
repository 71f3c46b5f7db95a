//! The e-mail channel: the notice's words (written at deposit, in the recipient's
//! language) and the SMTP transport (lettre: SMTPS, or STARTTLS; AUTH when a user is
//! set), with the message's audio attached as WAV.
//!
//! `smtp://` demands STARTTLS except towards a loopback host (a local MTA, where it is
//! used when offered): credentials and recordings never cross a network in clear.

use std::sync::Arc;
use std::time::Duration;

use boxless_core::config::AccessCodePolicy;
use boxless_core::recipient::Language;
use boxless_store::{OutboxJob, SmsFacts, Store};
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::SendError;

/// One SMTP conversation may take this long.
const SMTP_LIMIT: Duration = Duration::from_secs(30);

/// A message's e-mail (as [`message_email`] wrote it) with the whole transcript after
/// its body, labelled as machine text.
pub fn with_transcript(mail: String, transcript: &str, lang: Language) -> String {
    let label = match lang {
        Language::En => "What was said (automatic transcript, may contain errors):",
        Language::Fr => "Ce qui a été dit (transcription automatique, peut contenir des erreurs) :",
        Language::Es => "Lo que se dijo (transcripción automática, puede contener errores):",
        Language::De => "Was gesagt wurde (automatische Abschrift, kann Fehler enthalten):",
    };
    format!("{mail}\n\n{label}\n\"{transcript}\"")
}

/// The words of the e-mail for a stored message: the subject, an empty line, the body.
/// Written at deposit (the store keeps it in the outbox row), like the SMS.
pub fn message_email(
    f: &SmsFacts<'_>,
    policy: AccessCodePolicy,
    utc_offset_min: i32,
    lang: Language,
) -> String {
    let secs = f.duration_ms.div_ceil(1000);
    let len = format!("{}:{:02}", secs / 60, secs % 60);
    let at = boxless_core::util::local_time(f.message.received_at_ms, utc_offset_min);
    let (from, link, code) = (
        f.message
            .caller
            .map_or_else(|| unknown(lang).to_string(), |c| c.to_string()),
        f.link_number,
        f.access_code,
    );
    let code_line = (policy != AccessCodePolicy::Never).then(|| match lang {
        Language::En => format!("If asked, the access code is {code}."),
        Language::Fr => format!("Si on vous le demande, le code d'accès est {code}."),
        Language::Es => format!("Si se le pide, la clave de acceso es {code}."),
        Language::De => format!("Falls danach gefragt wird, lautet der Zugangscode {code}."),
    });
    let (subject, body) = match lang {
        Language::En => (
            format!("Voice message from {from} ({len})"),
            format!(
                "You have a voice message from {from}, received {at}, {len} long.\n\
                 The recording is attached. To hear it by phone, call {link}."
            ),
        ),
        Language::Fr => (
            format!("Message vocal de {from} ({len})"),
            format!(
                "Vous avez un message vocal de {from}, reçu le {at}, d'une durée de {len}.\n\
                 L'enregistrement est joint. Pour l'écouter par téléphone, appelez le {link}."
            ),
        ),
        Language::Es => (
            format!("Mensaje de voz de {from} ({len})"),
            format!(
                "Tiene un mensaje de voz de {from}, recibido el {at}, de {len}.\n\
                 La grabación va adjunta. Para escucharlo por teléfono, llame al {link}."
            ),
        ),
        Language::De => (
            format!("Sprachnachricht von {from} ({len})"),
            format!(
                "Sie haben eine Sprachnachricht von {from}, empfangen am {at}, Länge {len}.\n\
                 Die Aufnahme ist angehängt. Zum Abhören am Telefon rufen Sie {link} an."
            ),
        ),
    };
    let web_line = f.web_link.map(|web| match lang {
        Language::En => format!("To hear it in your browser, open {web}"),
        Language::Fr => format!("Pour l'écouter dans votre navigateur, ouvrez {web}"),
        Language::Es => format!("Para escucharlo en su navegador, abra {web}"),
        Language::De => format!("Zum Abhören im Browser öffnen Sie {web}"),
    });
    let mut out = format!("{subject}\n\n{body}\n");
    for line in [web_line, code_line].into_iter().flatten() {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn unknown(lang: Language) -> &'static str {
    match lang {
        Language::En => "an unknown number",
        Language::Fr => "un numéro inconnu",
        Language::Es => "un número desconocido",
        Language::De => "einer unbekannten Nummer",
    }
}

/// `X-Boxless-Message-Id`: the message the e-mail is about, for the recipient's filters
/// and the operator's support.
#[derive(Debug, Clone)]
struct MessageIdHeader(String);

impl Header for MessageIdHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Boxless-Message-Id")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(MessageIdHeader(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// Where e-mail goes: `[email]` after its checks.
#[derive(Clone)]
pub struct EmailSettings {
    /// `smtp://host:port` or `smtps://host:port`.
    pub smtp: String,
    /// AUTH user (empty: no AUTH).
    pub user: String,
    /// AUTH password.
    pub password: String,
    /// The From address.
    pub from: String,
    /// Attach the recording.
    pub attach_audio: bool,
}

impl std::fmt::Debug for EmailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log.
        f.debug_struct("EmailSettings")
            .field("smtp", &self.smtp)
            .field("user", &self.user)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Sends the e-mail notices of one server's store.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    attach_audio: bool,
    store: Arc<Store>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Checks the settings (the error names the key); connects only when sending.
    pub fn new(s: &EmailSettings, store: Arc<Store>) -> Result<Mailer, String> {
        let (implicit, host, port) = boxless_core::config::parse_smtp_url(s.smtp.trim())
            .map_err(|e| format!("key `email.smtp`: {e}"))?;
        let from: Mailbox = s
            .from
            .parse()
            .map_err(|e| format!("key `email.from`: {e}: an address like voicemail@example.net"))?;
        let params = TlsParameters::new(host.clone())
            .map_err(|e| format!("key `email.smtp`: TLS for {host}: {e}"))?;
        let tls = if implicit {
            Tls::Wrapper(params)
        } else if is_loopback(&host) {
            Tls::Opportunistic(params)
        } else {
            Tls::Required(params)
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(SMTP_LIMIT));
        if !s.user.is_empty() {
            b = b.credentials(Credentials::new(s.user.clone(), s.password.clone()));
        }
        Ok(Mailer {
            transport: b.build(),
            from,
            attach_audio: s.attach_audio,
            store,
        })
    }

    /// Builds and sends `job`'s e-mail. A permanent refusal (5xx) is `permanent`: the
    /// recipient's next channel is tried.
    pub async fn send(&self, job: &OutboxJob) -> Result<(), SendError> {
        let to: Mailbox = job
            .address
            .as_deref()
            .unwrap_or("")
            .parse()
            .map_err(|e| SendError::permanent(format!("recipient address: {e}")))?;
        let (subject, body) = job.text.split_once("\n\n").unwrap_or((&job.text, ""));
        let mid = job.message_id.clone().unwrap_or_default();
        let audio = if self.attach_audio && !mid.is_empty() {
            // As 16-bit PCM WAV, which every mail client's player reads.
            let (store, id) = (self.store.clone(), mid.clone());
            match store.read(move |store| store.audio_file(&id, false)).await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return Err(SendError::retry(format!("reading the audio: {e}"))),
                Err(e) => return Err(SendError::retry(format!("reading the audio: {e}"))),
            }
        } else {
            None
        };
        let text = SinglePart::plain(body.to_string());
        let domain = self.from.email.domain().to_string();
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            // The same Message-ID on a resend (a crash between the 250 and its record),
            // so that mail systems can drop the copy.
            .message_id(Some(format!("<{mid}.n{}@{domain}>", job.id)))
            .header(MessageIdHeader(mid.clone()));
        let message = match audio {
            Some(wav) => builder.multipart(
                MultiPart::mixed().singlepart(text).singlepart(
                    Attachment::new(format!("{mid}.wav"))
                        .body(wav, ContentType::parse("audio/wav").expect("a valid type")),
                ),
            ),
            None => builder.singlepart(text),
        }
        .map_err(|e| SendError::permanent(format!("building the e-mail: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::permanent(format!("SMTP refused: {e}"))),
            Err(e) => Err(SendError::retry(format!("SMTP: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxless_core::PhoneNumber;
    use boxless_store::NewMessage;

    #[test]
    fn the_password_never_reaches_a_log() {
        let s = EmailSettings {
            smtp: "smtps://mail.example.net".into(),
            user: "vm".into(),
            password: "hunter2-smtp".into(),
            from: "voicemail@example.net".into(),
            attach_audio: true,
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn credentials_never_go_in_clear_beyond_loopback() {
        assert!(is_loopback("127.0.0.1") && is_loopback("::1") && is_loopback("localhost"));
        assert!(!is_loopback("mail.example.net") && !is_loopback("10.0.0.1"));
    }

    #[test]
    fn the_email_names_caller_time_length_and_link_in_the_recipients_language() {
        let msg = NewMessage {
            recipient: PhoneNumber::parse_e164("+33612345678").unwrap(),
            caller: PhoneNumber::parse_e164("+15551230001"),
            received_at_ms: 1_764_460_800_000 + (14 * 60 + 5) * 60_000,
            samples: &[],
            sample_rate: 8000,
            encoding: boxless_store::Encoding::Pcm16,
        };
        let f = SmsFacts {
            message: msg.arrival(),
            link_number: PhoneNumber::parse_e164("+18005550100").unwrap(),
            access_code: "123456",
            duration_ms: 23_400,
            web_link: None,
        };
        let en = message_email(&f, AccessCodePolicy::WhenCallerIdMismatch, 0, Language::En);
        let (subject, body) = en.split_once("\n\n").unwrap();
        assert_eq!(subject, "Voice message from +15551230001 (0:24)");
        assert!(
            body.contains("received 2025-11-30 14:05 UTC, 0:24 long"),
            "{body}"
        );
        assert!(body.contains("call +18005550100") && body.contains("123456"));
        let fr = message_email(&f, AccessCodePolicy::Never, 60, Language::Fr);
        assert!(fr.starts_with("Message vocal de +15551230001 (0:24)\n\n"));
        assert!(
            fr.contains("15:05 UTC+01:00") && !fr.contains("123456"),
            "{fr}"
        );
    }
}
