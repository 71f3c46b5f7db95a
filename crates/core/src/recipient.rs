//! A recipient's preferences: how, where and in which language they are told of a
//! message. Parsed once from what an operator sent (`PrefsInput`), then always valid.
//!
//! No entry means: SMS only, to the recipient's number, language from the country code.

use serde::{Deserialize, Serialize};

use crate::PhoneNumber;

/// Other numbers that get the SMS too, at most.
pub const MAX_NOTIFY_NUMBERS: usize = 10;

/// A way to tell someone of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// SMS over the SMSC.
    Sms,
    /// E-mail with the audio.
    Email,
    /// A signed POST to the recipient's URL.
    Webhook,
}

impl Channel {
    /// `sms`, `email`, `webhook`: as the API and the outbox spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }

    /// From its spelling.
    pub fn parse(s: &str) -> Option<Channel> {
        match s {
            "sms" => Some(Channel::Sms),
            "email" => Some(Channel::Email),
            "webhook" => Some(Channel::Webhook),
            _ => None,
        }
    }
}

/// One step of a notice's fallback: who is told, and on which channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An SMS to each number (the recipient and its `notify_numbers`).
    Sms(Vec<PhoneNumber>),
    /// An e-mail with the audio.
    Email(String),
    /// A signed POST.
    Webhook(String),
}

impl Route {
    /// Its channel.
    pub fn channel(&self) -> Channel {
        match self {
            Route::Sms(_) => Channel::Sms,
            Route::Email(_) => Channel::Email,
            Route::Webhook(_) => Channel::Webhook,
        }
    }
}

/// Languages of the prompts and texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// English.
    #[default]
    En,
    /// Spanish.
    Es,
    /// French.
    Fr,
    /// German.
    De,
}

impl Language {
    /// `en`, `es`, `fr`, `de`.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Es => "es",
            Language::Fr => "fr",
            Language::De => "de",
        }
    }

    /// From its code.
    pub fn parse(s: &str) -> Option<Language> {
        match s {
            "en" => Some(Language::En),
            "es" => Some(Language::Es),
            "fr" => Some(Language::Fr),
            "de" => Some(Language::De),
            _ => None,
        }
    }
}

/// Which of a recipient's greetings (docs/http.md, "A recipient's greeting").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GreetingKind {
    /// Heard by every caller, unless a busy one applies.
    #[default]
    NoAnswer,
    /// Heard by a caller forwarded because the recipient was on the phone.
    Busy,
}

impl GreetingKind {
    /// Both, the no-answer one first.
    pub const ALL: [GreetingKind; 2] = [GreetingKind::NoAnswer, GreetingKind::Busy];

    /// `no-answer`, `busy`: as the API's `?for=` and the key-value bucket spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            GreetingKind::NoAnswer => "no-answer",
            GreetingKind::Busy => "busy",
        }
    }

    /// From its spelling.
    pub fn parse(s: &str) -> Option<GreetingKind> {
        GreetingKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Its number in the store.
    pub fn code(self) -> i64 {
        match self {
            GreetingKind::NoAnswer => 0,
            GreetingKind::Busy => 1,
        }
    }

    /// The greetings a call may hear, best first: a busy-forwarded call its busy
    /// greeting, else the no-answer one (docs/sip.md, "Greetings").
    pub fn for_call(busy: bool) -> &'static [GreetingKind] {
        if busy {
            &GreetingKind::ALL_BUSY_FIRST
        } else {
            &GreetingKind::ALL[..1]
        }
    }

    const ALL_BUSY_FIRST: [GreetingKind; 2] = [GreetingKind::Busy, GreetingKind::NoAnswer];
}

/// The language of a number's texts: its entry's, else its country's
/// (`numbering.language_by_country`, longest code first), else English.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Languages {
    by_country: Vec<(String, Language)>,
}

/// `numbering.language_by_country` when the config does not set it: the countries whose
/// prompts ship with Boxless.
pub const DEFAULT_LANGUAGE_BY_COUNTRY: &[(&str, &str)] =
    &[("1", "en"), ("33", "fr"), ("34", "es"), ("49", "de")];

impl Default for Languages {
    fn default() -> Languages {
        let map = DEFAULT_LANGUAGE_BY_COUNTRY
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // The default map is four well-formed entries (unit test below).
        Languages::parse(&map).expect("the default map is valid")
    }
}

impl Languages {
    /// Checks the map; the error names the entry and the fix.
    pub fn parse(map: &std::collections::BTreeMap<String, String>) -> Result<Languages, String> {
        let mut by_country = Vec::new();
        for (code, lang) in map {
            if code.is_empty() || code.len() > 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "{code:?}: a country code is 1 to 3 digits, e.g. \"33\""
                ));
            }
            let l = Language::parse(lang)
                .ok_or_else(|| format!("{code:?} = {lang:?}: languages are en, es, fr, de"))?;
            by_country.push((code.clone(), l));
        }
        by_country.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
        Ok(Languages { by_country })
    }

    /// The language for `n`, whose entry (if any) is `prefs`.
    pub fn for_number(&self, n: PhoneNumber, prefs: Option<&Prefs>) -> Language {
        if let Some(l) = prefs.and_then(|p| p.language) {
            return l;
        }
        let digits = n.digits();
        self.by_country
            .iter()
            .find(|(c, _)| digits.starts_with(c.as_str()))
            .map_or(Language::En, |(_, l)| *l)
    }
}

/// An e-mail address as Boxless takes it (a recipient's, `email.from`): `local@domain`
/// with a dotted domain, at most 254 bytes, nothing that could end a header or a list.
pub fn valid_email(e: &str) -> bool {
    e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty()
                && d.contains('.')
                && !d.starts_with('.')
                && !d.ends_with('.')
                && !e.contains(['<', '>', ',', ';', ' ', '\r', '\n', '"'])
        })
}

/// What an operator sends for a recipient (`PUT /api/v1/recipients/{number}`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrefsInput {
    /// E-mail address.
    pub email: Option<String>,
    /// Webhook URL.
    pub webhook_url: Option<String>,
    /// `en` | `es` | `fr` | `de`.
    pub language: Option<String>,
    /// Channels, in the order of fallback.
    pub channels: Option<Vec<String>>,
    /// No SMS at all.
    pub opted_out: Option<bool>,
    /// Other phones that get the SMS too.
    pub notify_numbers: Option<Vec<String>>,
}

/// A recipient's preferences; only valid ones exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefs {
    /// E-mail address (`local@domain`).
    pub email: Option<String>,
    /// `http://` or `https://` URL.
    pub webhook_url: Option<String>,
    /// None: from the country code.
    pub language: Option<Language>,
    /// Non-empty, no repeats, in the order of fallback.
    pub channels: Vec<Channel>,
    /// No SMS to this number (STOP, or the operator).
    pub opted_out: bool,
    /// Other numbers that get the SMS, and whose caller-ID counts as the recipient's.
    pub notify_numbers: Vec<PhoneNumber>,
}

impl Default for Prefs {
    fn default() -> Prefs {
        Prefs {
            email: None,
            webhook_url: None,
            language: None,
            channels: vec![Channel::Sms],
            opted_out: false,
            notify_numbers: Vec::new(),
        }
    }
}

/// Which field is wrong and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {why}")]
pub struct PrefsError {
    /// The field.
    pub field: &'static str,
    /// What is wrong, and the fix.
    pub why: String,
}

fn bad(field: &'static str, why: impl Into<String>) -> PrefsError {
    PrefsError {
        field,
        why: why.into(),
    }
}

impl Prefs {
    /// Checks what an operator sent for `number`.
    pub fn parse(number: PhoneNumber, i: PrefsInput) -> Result<Prefs, PrefsError> {
        let email = match i
            .email
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
        {
            None => None,
            Some(e) => {
                if !valid_email(&e) {
                    return Err(bad("email", "an address like name@example.net"));
                }
                Some(e)
            }
        };
        let webhook_url = match i
            .webhook_url
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
        {
            None => None,
            Some(u) => {
                let rest = u
                    .strip_prefix("https://")
                    .or_else(|| u.strip_prefix("http://"));
                let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
                if u.len() > 2048
                    || host.is_none_or(|h| h.is_empty())
                    || u.contains(|c: char| c.is_whitespace() || c.is_control())
                {
                    return Err(bad("webhook_url", "an http:// or https:// URL"));
                }
                Some(u)
            }
        };
        let language = match i
            .language
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            None => None,
            Some(l) => {
                Some(Language::parse(l).ok_or_else(|| bad("language", "one of en, es, fr, de"))?)
            }
        };
        let mut channels = Vec::new();
        for c in i.channels.unwrap_or_else(|| vec!["sms".into()]) {
            let Some(ch) = Channel::parse(c.trim()) else {
                return Err(bad("channels", "a list of sms, email, webhook"));
            };
            if !channels.contains(&ch) {
                channels.push(ch);
            }
        }
        if channels.is_empty() {
            return Err(bad("channels", "at least one of sms, email, webhook"));
        }
        if channels.contains(&Channel::Email) && email.is_none() {
            return Err(bad("email", "the email channel needs an address"));
        }
        if channels.contains(&Channel::Webhook) && webhook_url.is_none() {
            return Err(bad("webhook_url", "the webhook channel needs a URL"));
        }
        let mut notify_numbers = Vec::new();
        for n in i.notify_numbers.unwrap_or_default() {
            let p = PhoneNumber::parse_e164(n.trim())
                .ok_or_else(|| bad("notify_numbers", format!("{n:?} is not E.164 (+...)")))?;
            if p != number && !notify_numbers.contains(&p) {
                notify_numbers.push(p);
            }
        }
        if notify_numbers.len() > MAX_NOTIFY_NUMBERS {
            return Err(bad(
                "notify_numbers",
                format!("at most {MAX_NOTIFY_NUMBERS} numbers"),
            ));
        }
        Ok(Prefs {
            email,
            webhook_url,
            language,
            channels,
            opted_out: i.opted_out.unwrap_or(false),
            notify_numbers,
        })
    }

    /// Back to the input form (as stored and replicated).
    pub fn input(&self) -> PrefsInput {
        PrefsInput {
            email: self.email.clone(),
            webhook_url: self.webhook_url.clone(),
            language: self.language.map(|l| l.as_str().to_string()),
            channels: Some(
                self.channels
                    .iter()
                    .map(|c| {
                        match c {
                            Channel::Sms => "sms",
                            Channel::Email => "email",
                            Channel::Webhook => "webhook",
                        }
                        .to_string()
                    })
                    .collect(),
            ),
            opted_out: Some(self.opted_out),
            notify_numbers: Some(self.notify_numbers.iter().map(|n| n.to_string()).collect()),
        }
    }

    /// The numbers that get this recipient's SMS (none when SMS is not a channel).
    pub fn sms_numbers(&self, recipient: PhoneNumber) -> Vec<PhoneNumber> {
        if !self.channels.contains(&Channel::Sms) {
            return Vec::new();
        }
        std::iter::once(recipient)
            .chain(self.notify_numbers.iter().copied())
            .collect()
    }

    /// Who is told of a message for `recipient`, step by step in the order of its
    /// channels; `usable` says which channels this server has (an entry may name e-mail
    /// where no SMTP server is configured: that step is left out).
    pub fn routes(&self, recipient: PhoneNumber, usable: impl Fn(Channel) -> bool) -> Vec<Route> {
        self.channels
            .iter()
            .filter(|c| usable(**c))
            .filter_map(|c| match c {
                Channel::Sms => Some(Route::Sms(self.sms_numbers(recipient))),
                Channel::Email => self.email.clone().map(Route::Email),
                Channel::Webhook => self.webhook_url.clone().map(Route::Webhook),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse_e164(s).unwrap()
    }

    #[test]
    fn parses_a_full_entry_and_round_trips() {
        let i = PrefsInput {
            email: Some(" ann@example.net ".into()),
            webhook_url: Some("https://hooks.example.net/vm".into()),
            language: Some("fr".into()),
            channels: Some(vec!["sms".into(), "email".into(), "sms".into()]),
            opted_out: None,
            notify_numbers: Some(vec!["+15551230009".into(), "+15551230002".into()]),
        };
        let p = Prefs::parse(n("+15551230002"), i).unwrap();
        assert_eq!(p.email.as_deref(), Some("ann@example.net"));
        assert_eq!(p.channels, [Channel::Sms, Channel::Email]);
        assert_eq!(p.language, Some(Language::Fr));
        assert_eq!(p.notify_numbers, [n("+15551230009")], "itself left out");
        assert_eq!(
            p.sms_numbers(n("+15551230002")),
            [n("+15551230002"), n("+15551230009")]
        );
        assert_eq!(Prefs::parse(n("+15551230002"), p.input()).unwrap(), p);
        assert_eq!(
            Prefs::parse(n("+15551230002"), PrefsInput::default()).unwrap(),
            Prefs::default()
        );
    }

    #[test]
    fn language_from_the_entry_else_the_country() {
        let l = Languages::default();
        assert_eq!(l.for_number(n("+33612345678"), None), Language::Fr);
        assert_eq!(l.for_number(n("+4930123456"), None), Language::De);
        assert_eq!(l.for_number(n("+34612345678"), None), Language::Es);
        assert_eq!(l.for_number(n("+15551230002"), None), Language::En);
        assert_eq!(
            l.for_number(n("+81312345678"), None),
            Language::En,
            "not in the map"
        );
        let p = Prefs {
            language: Some(Language::De),
            ..Prefs::default()
        };
        assert_eq!(l.for_number(n("+33612345678"), Some(&p)), Language::De);
        let mut m = std::collections::BTreeMap::new();
        m.insert("3".to_string(), "es".to_string());
        m.insert("33".to_string(), "fr".to_string());
        let l = Languages::parse(&m).unwrap();
        assert_eq!(
            l.for_number(n("+33612345678"), None),
            Language::Fr,
            "longest code wins"
        );
        m.insert("x".into(), "fr".into());
        assert!(Languages::parse(&m).is_err());
        m.remove("x");
        m.insert("44".into(), "it".into());
        assert!(Languages::parse(&m).unwrap_err().contains("en, es, fr, de"));
    }

    #[test]
    fn names_the_wrong_field() {
        let r = n("+15551230002");
        let field = |i: PrefsInput| Prefs::parse(r, i).unwrap_err().field;
        let with = |f: fn(&mut PrefsInput)| {
            let mut i = PrefsInput::default();
            f(&mut i);
            i
        };
        assert_eq!(field(with(|i| i.email = Some("nobody".into()))), "email");
        assert_eq!(
            field(with(|i| i.email = Some("a@b.c>\r\nBcc: x@y.z".into()))),
            "email"
        );
        assert_eq!(
            field(with(|i| i.webhook_url = Some("ftp://x".into()))),
            "webhook_url"
        );
        assert_eq!(field(with(|i| i.language = Some("it".into()))), "language");
        assert_eq!(field(with(|i| i.channels = Some(vec![]))), "channels");
        assert_eq!(
            field(with(|i| i.channels = Some(vec!["fax".into()]))),
            "channels"
        );
        assert_eq!(
            field(with(|i| i.channels = Some(vec!["email".into()]))),
            "email"
        );
        assert_eq!(
            field(with(|i| i.notify_numbers = Some(vec!["5551230009".into()]))),
            "notify_numbers"
        );
        assert_eq!(
            field(with(|i| {
                i.notify_numbers = Some((0..11).map(|k| format!("+1555123010{k:02}")).collect())
            })),
            "notify_numbers"
        );
    }
}
