//! The words of each SMS, and their coding for SMPP (GSM 03.38 7-bit, else UCS-2).

use boxless_core::recipient::Language;
use boxless_core::util::civil;
use boxless_core::{PhoneNumber, config::AccessCodePolicy};
use boxless_store::SmsFacts;

// The texts in English, French, Spanish and German. Spanish is written without the
// accents GSM-7 lacks (á, í, ó, ú), as operators do, so that it stays one 160-character
// SMS; French and German need none outside GSM-7.

/// "an unknown number" in the text's language.
fn unknown(lang: Language) -> &'static str {
    match lang {
        Language::En => "an unknown number",
        Language::Fr => "un numéro inconnu",
        Language::Es => "un numero desconocido",
        Language::De => "Unbekannt",
    }
}

fn from_of(caller: Option<PhoneNumber>, lang: Language) -> String {
    caller.map_or_else(|| unknown(lang).to_string(), |c| c.to_string())
}

/// The label before the access code, per language (masked in logs).
const CODE_LABELS: [&str; 2] = [" Code ", " Clave "];

/// The notification for a stored message, e.g.
/// `Voice message from +15551230001, 0:23, 14:05. Call +18005550100 to listen. Code 123456.`
pub fn message_sms(
    f: &SmsFacts<'_>,
    policy: AccessCodePolicy,
    utc_offset_min: i32,
    lang: Language,
) -> String {
    let secs = f.duration_ms.div_ceil(1000);
    let (_, _, _, h, m, _) = civil(f.message.received_at_ms / 1000, utc_offset_min);
    let from = from_of(f.message.caller, lang);
    let (len, at, link) = (
        format!("{}:{:02}", secs / 60, secs % 60),
        format!("{h:02}:{m:02}"),
        f.link_number,
    );
    // With a web link the text says "listen" once and offers both ways, so that it still
    // fits one GSM-7 SMS with a base URL of up to 26 characters and the access code.
    let mut s = match (lang, f.web_link) {
        (Language::En, None) => {
            format!("Voice message from {from}, {len}, {at}. Call {link} to listen.")
        }
        (Language::En, Some(web)) => {
            format!("Voice message from {from}, {len}, {at}. Listen: {web} or call {link}.")
        }
        (Language::Fr, None) => {
            format!("Message vocal de {from}, {len}, {at}. Appelez le {link} pour l'écouter.")
        }
        (Language::Fr, Some(web)) => {
            format!("Message vocal de {from}, {len}, {at}. Écoutez : {web} ou appelez le {link}.")
        }
        (Language::Es, None) => {
            format!("Mensaje de voz de {from}, {len}, {at}. Llame al {link} para escucharlo.")
        }
        (Language::Es, Some(web)) => {
            format!("Mensaje de voz de {from}, {len}, {at}. Escuche: {web} o llame al {link}.")
        }
        (Language::De, None) => format!(
            "Sprachnachricht von {from}, {len}, {at}. Rufen Sie {link} an, um sie abzuhören."
        ),
        (Language::De, Some(web)) => {
            format!("Sprachnachricht von {from}, {len}, {at}. Anhören: {web} oder {link} anrufen.")
        }
    };
    if policy != AccessCodePolicy::Never {
        let label = if lang == Language::Es {
            "Clave"
        } else {
            "Code"
        };
        s.push_str(&format!(" {label} {}.", f.access_code));
    }
    s
}

/// The label before a transcript's words: the reader knows a machine wrote them.
fn transcript_label(lang: Language) -> &'static str {
    match lang {
        Language::En => "Automatic transcript:",
        Language::Fr => "Transcription automatique :",
        Language::Es => "Transcripcion automatica:",
        Language::De => "Automatische Abschrift:",
    }
}

/// Typographic marks recognisers like, as the GSM-7 characters that look the same: one
/// curly apostrophe would turn the whole SMS into UCS-2, with less than half the room.
fn plain_marks(c: char) -> char {
    match c {
        '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{2032}' => '\'',
        '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{00ab}' | '\u{00bb}' => '"',
        '\u{2010}'..='\u{2015}' | '\u{2212}' => '-',
        '\u{00a0}' | '\u{2009}' | '\u{202f}' => ' ',
        c => c,
    }
}

/// True when `text` goes in at most `max_parts` SMS.
fn fits(text: &str, max_parts: usize) -> bool {
    let coded = encode(text);
    let parts = split(&coded);
    parts.len() <= max_parts && parts.iter().map(|p| p.len()).sum::<usize>() == coded.octets.len()
}

/// `text` followed by the opening words of `transcript`, quoted and labelled as machine
/// text, as many as keep the notice within `max_parts` SMS once `link` replaces the
/// web-link mark (cut on a word, `...` when cut); `text` alone when not even one word fits.
pub fn with_transcript(
    text: &str,
    link: Option<&str>,
    transcript: &str,
    max_parts: usize,
    lang: Language,
) -> String {
    let plain: String = transcript.chars().map(plain_marks).collect();
    let words: Vec<&str> = plain.split_whitespace().collect();
    let quoted = |k: usize| {
        let cut = if k < words.len() { "..." } else { "" };
        format!(
            "{text} {} \"{}{cut}\"",
            transcript_label(lang),
            words[..k].join(" ")
        )
    };
    let measured = |k: usize| match link {
        Some(l) => quoted(k).replace(boxless_store::WEB_LINK, l),
        None => quoted(k),
    };
    // More words never fit better: the most that fit, found by halving.
    let (mut lo, mut hi) = (0, words.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(&measured(mid), max_parts) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo == 0 {
        return text.to_string();
    }
    quoted(lo)
}

/// The one answer to a STOP (`out`) or a START.
pub fn confirmation(out: bool, lang: Language) -> &'static str {
    match (lang, out) {
        (Language::En, true) => {
            "You will get no more voice message alerts by SMS on this number. Text START to get them again."
        }
        (Language::En, false) => {
            "Voice message alerts by SMS are on again for this number. Text STOP to end them."
        }
        (Language::Fr, true) => {
            "Vous ne recevrez plus d'alertes de messages vocaux par SMS sur ce numéro. Envoyez START pour les réactiver."
        }
        (Language::Fr, false) => {
            "Les alertes de messages vocaux par SMS sont réactivées sur ce numéro. Envoyez STOP pour ne plus les recevoir."
        }
        (Language::Es, true) => {
            "No recibira mas avisos de mensajes de voz por SMS en este numero. Envie START para recibirlos de nuevo."
        }
        (Language::Es, false) => {
            "Los avisos de mensajes de voz por SMS vuelven a estar activos en este numero. Envie STOP para terminarlos."
        }
        (Language::De, true) => {
            "Sie erhalten auf dieser Nummer keine SMS-Hinweise auf Sprachnachrichten mehr. Senden Sie START, um sie wieder zu erhalten."
        }
        (Language::De, false) => {
            "SMS-Hinweise auf Sprachnachrichten sind für diese Nummer wieder an. Senden Sie STOP, um sie zu beenden."
        }
    }
}

/// The text as a log may show it: the digits of its access code (" Code 123456.") and the
/// secret part of its web link (`/m/s1.****`) masked.
pub fn for_log(text: &str) -> String {
    let text = mask_web_token(text);
    match CODE_LABELS
        .iter()
        .filter_map(|l| text.rfind(l).map(|i| i + l.len()))
        .max()
    {
        Some(i) => {
            let (head, tail) = text.split_at(i);
            let masked: String = tail
                .chars()
                .map(|c| if c.is_ascii_digit() { '*' } else { c })
                .collect();
            format!("{head}{masked}")
        }
        None => text,
    }
}

/// `…/m/<server>.<secret>` → `…/m/<server>.****`.
fn mask_web_token(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("/m/") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
            .unwrap_or(tail.len());
        let token = &tail[..end];
        match token.split_once('.') {
            Some((server, _)) => {
                out.push_str(server);
                out.push_str(".****");
                // A sentence's full stop right after the link stays.
                if token.ends_with('.') {
                    out.push('.');
                }
            }
            None => out.push_str(token),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The reminder a day before an unheard message expires.
pub fn reminder_sms(
    caller: Option<PhoneNumber>,
    link: PhoneNumber,
    expires_ms: u64,
    utc_offset_min: i32,
    lang: Language,
) -> String {
    let (_, month, day, h, m, _) = civil(expires_ms / 1000, utc_offset_min);
    let from = from_of(caller, lang);
    match lang {
        Language::En => format!(
            "Reminder: a voice message from {from} is kept until {day:02}/{month:02} {h:02}:{m:02}. Call {link} to listen."
        ),
        Language::Fr => format!(
            "Rappel : un message vocal de {from} est conservé jusqu'au {day:02}/{month:02} {h:02}:{m:02}. Appelez le {link} pour l'écouter."
        ),
        Language::Es => format!(
            "Recordatorio: un mensaje de voz de {from} se guarda hasta el {day:02}/{month:02} {h:02}:{m:02}. Llame al {link} para escucharlo."
        ),
        Language::De => format!(
            "Erinnerung: eine Sprachnachricht von {from} wird bis {day:02}.{month:02}. {h:02}:{m:02} aufbewahrt. Rufen Sie {link} an, um sie abzuhören."
        ),
    }
}

/// The alert for `calls` calls too short to keep (a burst from one caller is one SMS),
/// the last at `at_ms`.
pub fn missed_call_sms(
    caller: Option<PhoneNumber>,
    calls: u32,
    at_ms: u64,
    utc_offset_min: i32,
    lang: Language,
) -> String {
    let (_, _, _, h, m, _) = civil(at_ms / 1000, utc_offset_min);
    let from = from_of(caller, lang);
    let at = format!("{h:02}:{m:02}");
    match (lang, calls <= 1) {
        (Language::En, true) => format!("Missed call from {from} at {at}. No message was left."),
        (Language::En, false) => {
            format!("{calls} missed calls from {from}, the last at {at}. No message was left.")
        }
        (Language::Fr, true) => {
            format!("Appel manqué de {from} à {at}. Aucun message n'a été laissé.")
        }
        (Language::Fr, false) => format!(
            "{calls} appels manqués de {from}, le dernier à {at}. Aucun message n'a été laissé."
        ),
        (Language::Es, true) => format!("Llamada perdida de {from} a las {at}. Sin mensaje."),
        (Language::Es, false) => {
            format!("{calls} llamadas perdidas de {from} hasta las {at}. Sin mensaje.")
        }
        (Language::De, true) => {
            format!("Verpasster Anruf von {from} um {at}. Keine Nachricht hinterlassen.")
        }
        (Language::De, false) => format!(
            "{calls} verpasste Anrufe von {from}, zuletzt um {at}. Keine Nachricht hinterlassen."
        ),
    }
}

/// The words of a digest in one language: (one, many) for each kind of notice.
struct DigestWords {
    message: (&'static str, &'static str),
    missed: (&'static str, &'static str),
    reminder: (&'static str, &'static str),
    notices: &'static str,
    and: &'static str,
    from: &'static str,
    more: (&'static str, &'static str),
    since: &'static str,
}

fn digest_words(lang: Language) -> DigestWords {
    match lang {
        Language::En => DigestWords {
            message: ("voice message", "voice messages"),
            missed: ("missed call", "missed calls"),
            reminder: ("reminder", "reminders"),
            notices: "Notices",
            and: "and",
            from: "from",
            more: ("more", "more"),
            since: "since",
        },
        Language::Fr => DigestWords {
            message: ("message vocal", "messages vocaux"),
            missed: ("appel manqué", "appels manqués"),
            reminder: ("rappel", "rappels"),
            notices: "Avis",
            and: "et",
            from: "de",
            more: ("autre", "autres"),
            since: "depuis",
        },
        Language::Es => DigestWords {
            message: ("mensaje de voz", "mensajes de voz"),
            missed: ("llamada perdida", "llamadas perdidas"),
            reminder: ("recordatorio", "recordatorios"),
            notices: "Avisos",
            and: "y",
            from: "de",
            more: ("mas", "mas"),
            since: "desde las",
        },
        Language::De => DigestWords {
            message: ("Sprachnachricht", "Sprachnachrichten"),
            missed: ("verpasster Anruf", "verpasste Anrufe"),
            reminder: ("Erinnerung", "Erinnerungen"),
            notices: "Hinweise",
            and: "und",
            from: "von",
            more: ("weiterer", "weitere"),
            since: "seit",
        },
    }
}

/// "Call L to listen." in `lang`.
fn call_to_listen(link: PhoneNumber, lang: Language) -> String {
    match lang {
        Language::En => format!(" Call {link} to listen."),
        Language::Fr => format!(" Appelez le {link} pour écouter."),
        Language::Es => format!(" Llame al {link} para escuchar."),
        Language::De => format!(" Rufen Sie {link} an, um abzuhören."),
    }
}

/// The digest that stands for notices past the hourly limit, in the destination's
/// language, e.g. `3 voice messages and 2 missed calls from +15551230001, +15551230003
/// and 1 more since 14:05. Call +18005550100 to listen.` Short enough for one SMS: at
/// most two callers are named.
pub fn digest_sms(f: &boxless_store::DigestFacts, utc_offset_min: i32, lang: Language) -> String {
    let (_, _, _, h, m, _) = civil(f.since_ms / 1000, utc_offset_min);
    let w = digest_words(lang);
    let plural = |n: u32, (one, many): (&str, &str)| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let mut parts = Vec::new();
    if f.messages > 0 {
        parts.push(plural(f.messages, w.message));
    }
    if f.missed_calls > 0 {
        parts.push(plural(f.missed_calls, w.missed));
    }
    if f.reminders > 0 {
        parts.push(plural(f.reminders, w.reminder));
    }
    let mut s = if parts.is_empty() {
        w.notices.to_string()
    } else {
        parts.join(&format!(" {} ", w.and))
    };
    let names: Vec<String> = f
        .callers
        .iter()
        .take(2)
        .map(|c| from_of(*c, lang))
        .collect();
    if !names.is_empty() {
        s.push_str(&format!(" {} {}", w.from, names.join(", ")));
        if f.callers.len() > 2 {
            let more = f.callers.len() - 2;
            let word = if more == 1 { w.more.0 } else { w.more.1 };
            s.push_str(&format!(" {} {more} {word}", w.and));
        }
    }
    s.push_str(&format!(" {} {h:02}:{m:02}.", w.since));
    if let Some(l) = f.link {
        s.push_str(&call_to_listen(l, lang));
    }
    s
}

/// SMPP data_coding and the octets of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coded {
    /// 0x00 (SMSC default alphabet, GSM 03.38) or 0x08 (UCS-2).
    pub data_coding: u8,
    /// Unpacked GSM 7-bit septets (one per octet) or UTF-16BE.
    pub octets: Vec<u8>,
}

const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u{1b}ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM_EXT: [(char, u8); 10] = [
    ('\u{c}', 0x0A),
    ('^', 0x14),
    ('{', 0x28),
    ('}', 0x29),
    ('\\', 0x2F),
    ('[', 0x3C),
    ('~', 0x3D),
    (']', 0x3E),
    ('|', 0x40),
    ('€', 0x65),
];

/// GSM-7 when every character has a septet (basic or extension table), else UCS-2.
pub fn encode(text: &str) -> Coded {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        if let Some(i) = GSM_BASIC
            .chars()
            .position(|g| g == c)
            .filter(|&i| i != 0x1b)
        {
            out.push(i as u8);
        } else if let Some(&(_, code)) = GSM_EXT.iter().find(|(g, _)| *g == c) {
            out.push(0x1b);
            out.push(code);
        } else {
            return Coded {
                data_coding: 0x08,
                octets: text.encode_utf16().flat_map(|u| u.to_be_bytes()).collect(),
            };
        }
    }
    Coded {
        data_coding: 0x00,
        octets: out,
    }
}

/// One SMS carries this many octets of unpacked GSM-7 septets, or of UCS-2.
const SINGLE: [usize; 2] = [160, 140];
/// One part of a concatenated SMS, the 6-octet UDH (or the SMSC's, for `sar_*`) taken.
const PART: [usize; 2] = [153, 134];
/// Parts at most; our texts need two or three, the rest would be a runaway text.
pub const MAX_PARTS: usize = 8;

/// The text's octets as one SMS, or as the parts of a concatenated one: never splitting
/// a GSM-7 escape from its character, nor a UTF-16 surrogate pair.
pub fn split(coded: &Coded) -> Vec<&[u8]> {
    let ucs2 = usize::from(coded.data_coding == 0x08);
    let o = &coded.octets[..];
    if o.len() <= SINGLE[ucs2] {
        return vec![o];
    }
    // Walk character by character: an escape and its character (GSM-7), a surrogate pair
    // (UTF-16) are one unit.
    let width = |i: usize| match (ucs2, o[i]) {
        (1, 0xD8..=0xDB) => 4,
        (1, _) => 2,
        (_, 0x1b) => 2,
        _ => 1,
    };
    let mut parts = Vec::new();
    let mut at = 0;
    while at < o.len() && parts.len() < MAX_PARTS {
        let limit = at + PART[ucs2];
        let mut end = at;
        while end < o.len() && end + width(end) <= limit {
            end += width(end);
        }
        let end = end.min(o.len());
        parts.push(&o[at..end]);
        at = end;
    }
    parts
}

/// The user data header of part `seq` (1-based) of `total`, concatenation with an 8-bit
/// reference (3GPP TS 23.040 §9.2.3.24.1).
pub fn udh(reference: u8, total: u8, seq: u8) -> [u8; 6] {
    [0x05, 0x00, 0x03, reference, total, seq]
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxless_store::NewMessage;

    fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse_e164(s).unwrap()
    }

    #[test]
    fn message_text_names_caller_length_time_and_link() {
        let msg = NewMessage {
            recipient: n("+15551230002"),
            caller: Some(n("+15551230001")),
            received_at_ms: 1_795_694_700_000,
            samples: &[],
            sample_rate: 8000,
            encoding: boxless_store::Encoding::Pcm16,
        };
        let f = SmsFacts {
            message: msg.arrival(),
            link_number: n("+18005550100"),
            access_code: "042917",
            duration_ms: 23_100,
            web_link: None,
        };
        assert_eq!(
            message_sms(&f, AccessCodePolicy::WhenCallerIdMismatch, 0, Language::En),
            "Voice message from +15551230001, 0:24, 12:05. Call +18005550100 to listen. Code 042917."
        );
        assert!(!message_sms(&f, AccessCodePolicy::Never, -300, Language::En).contains("Code"));
        assert_eq!(
            for_log(&message_sms(&f, AccessCodePolicy::Always, 0, Language::En)),
            "Voice message from +15551230001, 0:24, 12:05. Call +18005550100 to listen. Code ******."
        );
        assert!(message_sms(&f, AccessCodePolicy::Never, -300, Language::En).contains("07:05"));
        let fr = message_sms(&f, AccessCodePolicy::Always, 0, Language::Fr);
        assert_eq!(
            fr,
            "Message vocal de +15551230001, 0:24, 12:05. Appelez le +18005550100 pour l'écouter. Code 042917."
        );
        let es = message_sms(&f, AccessCodePolicy::Always, 0, Language::Es);
        assert!(for_log(&es).ends_with("Clave ******."), "{es}");
        // Every language's texts stay GSM-7, one SMS.
        for lang in [Language::En, Language::Fr, Language::Es, Language::De] {
            for t in [
                message_sms(&f, AccessCodePolicy::Always, 0, lang),
                missed_call_sms(f.message.caller, 3, 0, 0, lang),
                missed_call_sms(None, 1, 0, 0, lang),
                reminder_sms(None, f.link_number, 0, 0, lang),
                confirmation(true, lang).to_string(),
                confirmation(false, lang).to_string(),
            ] {
                let c = encode(&t);
                assert_eq!(c.data_coding, 0, "{t}");
                assert!(split(&c).len() <= 2, "{lang:?}: {t}");
            }
            let m = encode(&message_sms(&f, AccessCodePolicy::Always, 0, lang));
            assert_eq!(split(&m).len(), 1, "{lang:?}: the notice is one SMS");
        }
    }

    #[test]
    fn with_a_web_link_the_notice_is_still_one_gsm7_sms_and_logs_hide_the_token() {
        let msg = NewMessage {
            recipient: n("+15551230002"),
            caller: Some(n("+15551230001")),
            received_at_ms: 1_795_694_700_000,
            samples: &[],
            sample_rate: 8000,
            encoding: boxless_store::Encoding::Pcm16,
        };
        // A base URL of 26 characters and a server id of 6: one SMS in every language even
        // for an unknown caller with the access code (longer ones go as two parts).
        let url = "https://voicemail.telco.es/m/east-1.AbCdEfGhIjKlMnOpQr-_";
        let f = SmsFacts {
            message: msg.arrival(),
            link_number: n("+18005550100"),
            access_code: "042917",
            duration_ms: 23_100,
            web_link: Some(url),
        };
        assert_eq!(
            message_sms(&f, AccessCodePolicy::Always, 0, Language::En),
            format!(
                "Voice message from +15551230001, 0:24, 12:05. Listen: {url} or call +18005550100. Code 042917."
            )
        );
        for lang in [Language::En, Language::Fr, Language::Es, Language::De] {
            for caller in [Some(n("+15551230001")), None] {
                let m = NewMessage { caller, ..msg };
                let t = message_sms(
                    &SmsFacts {
                        message: m.arrival(),
                        ..f
                    },
                    AccessCodePolicy::Always,
                    0,
                    lang,
                );
                let c = encode(&t);
                assert_eq!(c.data_coding, 0, "{t}");
                assert_eq!(
                    split(&c).len(),
                    1,
                    "{lang:?}: {t} ({} septets)",
                    c.octets.len()
                );
                assert!(t.contains(url), "{t}");
                let logged = for_log(&t);
                assert!(
                    !logged.contains("AbCd") && !logged.contains("042917"),
                    "{logged}"
                );
                assert!(logged.contains("/m/east-1.****"), "{logged}");
            }
        }
        assert_eq!(
            for_log("see https://x/m/s1.abc."),
            "see https://x/m/s1.****."
        );
        assert_eq!(for_log("/m/ alone"), "/m/ alone");
    }

    #[test]
    fn a_digest_speaks_the_destinations_language_in_one_gsm7_sms() {
        let f = boxless_store::DigestFacts {
            messages: 3,
            missed_calls: 1,
            reminders: 0,
            callers: vec![Some(n("+15551230001")), None, Some(n("+15551230003"))],
            link: Some(n("+18005550100")),
            since_ms: 1_795_694_700_000,
        };
        assert_eq!(
            digest_sms(&f, 0, Language::En),
            "3 voice messages and 1 missed call from +15551230001, an unknown number and 1 more since 12:05. Call +18005550100 to listen."
        );
        assert_eq!(
            digest_sms(&f, 0, Language::Fr),
            "3 messages vocaux et 1 appel manqué de +15551230001, un numéro inconnu et 1 autre depuis 12:05. Appelez le +18005550100 pour écouter."
        );
        for lang in [Language::En, Language::Fr, Language::Es, Language::De] {
            let c = encode(&digest_sms(&f, 0, lang));
            assert_eq!(c.data_coding, 0, "{lang:?}");
            assert_eq!(split(&c).len(), 1, "{lang:?}");
        }
        let none = boxless_store::DigestFacts::default();
        assert_eq!(digest_sms(&none, 0, Language::De), "Hinweise seit 00:00.");
    }

    #[test]
    fn long_texts_split_into_parts_without_breaking_a_character() {
        let short = encode(&"a".repeat(160));
        assert_eq!(split(&short).len(), 1);
        let long = encode(&"a".repeat(161));
        let parts = split(&long);
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [153, 8]);
        // A euro sign (ESC 0x65) across the 153rd octet moves whole to the next part.
        let t = format!("{}€bbbbbbbbbb", "a".repeat(152));
        let c = encode(&t);
        let parts = split(&c);
        assert_eq!(parts[0].len(), 152);
        assert_eq!(parts[1][..3], [0x1b, 0x65, b'b']);
        let c = encode(&format!("{}b€€{}", "a".repeat(150), "a".repeat(20)));
        let parts = split(&c);
        assert_eq!(
            parts[0].len(),
            153,
            "ESC 0x65 ESC fits up to the second escape"
        );
        assert_eq!(&parts[0][151..], [0x1b, 0x65]);
        // UCS-2: 70 characters fit one SMS; 71 need two of 67 + 4; a surrogate pair stays whole.
        assert_eq!(split(&encode(&"Ж".repeat(70))).len(), 1);
        let c = encode(&"Ж".repeat(71));
        assert_eq!(
            split(&c).iter().map(|p| p.len() / 2).collect::<Vec<_>>(),
            [67, 4]
        );
        let c = encode(&format!("{}😀{}", "Ж".repeat(66), "Ж".repeat(5)));
        let parts = split(&c);
        assert_eq!(parts[0].len(), 132);
        assert_eq!(parts[1].len(), 14);
        assert_eq!(split(&encode(&"x".repeat(5000))).len(), MAX_PARTS);
        assert_eq!(udh(7, 2, 1), [5, 0, 3, 7, 2, 1]);
    }

    #[test]
    fn gsm7_when_it_fits_else_ucs2() {
        let c = encode("Hi @ 5€");
        assert_eq!(c.data_coding, 0);
        assert_eq!(c.octets, [0x48, 0x69, 0x20, 0x00, 0x20, 0x35, 0x1b, 0x65]);
        let c = encode("Привет");
        assert_eq!(c.data_coding, 8);
        assert_eq!(c.octets.len(), 12);
        assert_eq!(&c.octets[..2], &[0x04, 0x1f]);
    }

    #[test]
    fn a_transcript_is_quoted_cut_on_a_word_to_fit_the_parts() {
        let base =
            "Voice message from +15551230001, 0:23, 14:05. Listen: {web} or call +18005550100.";
        let link = "https://vm.example.net/m/ms1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        // Short: whole, no dots; the curly apostrophe made plain, so still GSM-7.
        let short = with_transcript(
            base,
            Some(link),
            "It\u{2019}s Anna, call me.",
            3,
            Language::En,
        );
        assert!(
            short.ends_with("Automatic transcript: \"It's Anna, call me.\""),
            "{short}"
        );
        assert_eq!(encode(&short).data_coding, 0);
        // Long: as many words as three parts hold with the real link, then "...".
        let long = "word ".repeat(400);
        for parts in [1, 2, 3, 8] {
            let t = with_transcript(base, Some(link), &long, parts, Language::En);
            let sent = t.replace(boxless_store::WEB_LINK, link);
            assert!(fits(&sent, parts), "{parts} parts: {sent}");
            if parts > 1 {
                assert!(t.ends_with("word...\""), "{t}");
                // One more word would not have fitted.
                let more = sent.replace("word...", "word word...");
                assert!(!fits(&more, parts), "cut too early at {parts}");
            }
        }
        // The notice alone already fills the one part allowed: no transcript at all.
        let one = with_transcript(base, Some(link), &long, 1, Language::En);
        assert!(one == base || one.contains("word"), "{one}");
        // A non-GSM word makes it UCS-2: fewer characters, still within the parts.
        let t = with_transcript(base, Some(link), &format!("Привет {long}"), 3, Language::Fr);
        assert!(t.contains("Transcription automatique : \"Привет"));
        assert!(fits(&t.replace(boxless_store::WEB_LINK, link), 3));
    }
}
