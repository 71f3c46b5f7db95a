//! The trust-boundary keys (docs/configuration.md; docs/sip.md, "Trust boundary"): trusted SIP peers, API tokens,
//! secrets read from files, and the refusal to expose an unauthenticated API or an
//! unauthenticated control plane beyond this host.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, ControlBackend, HttpAuth, Scope};
use crate::acl::PeerFilter;

/// A secret from the config or a file: its `Debug` never shows it, so a logged config
/// cannot leak it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A serialized config shows where a secret is, never the secret.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Passwords after `*_file` keys were read.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// The SMPP password.
    pub sms_password: Secret,
    /// The NATS password, with `control.user`.
    pub control_password: Option<Secret>,
    /// The webhook signing key (`webhook.secret_file`): events to `webhook.url` and
    /// notices to recipients' own webhooks are signed with it.
    pub webhook_secret: Option<Secret>,
    /// The SMTP password, with `email.user`.
    pub email_password: Option<Secret>,
    /// The recogniser's Bearer token (`transcription.token_file`).
    pub transcription_token: Option<Secret>,
}

/// An API token as the server checks it: the SHA-256 of the token, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Who holds it.
    pub name: String,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// What it may do.
    pub scope: Scope,
}

/// What [`check`] parsed.
pub(super) struct Trust {
    pub(super) sip_tls: Option<std::net::SocketAddr>,
    pub(super) peers: PeerFilter,
    pub(super) tokens: Vec<ApiToken>,
    pub(super) secrets: Secrets,
}

type Err<'a> = &'a dyn Fn(String, String) -> ConfigError;

/// SIP over TLS: the router's address, with the certificate every TLS listener uses.
fn sip_tls(c: &Config, err: Err<'_>) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let e = |k: &str, p: &str| err(k.to_string(), p.to_string());
    let s = &c.sip;
    if s.tls_cert.is_empty() != s.tls_key.is_empty() {
        return Err(e(
            "sip.tls_key",
            "set both sip.tls_cert and sip.tls_key (PEM files), or neither",
        ));
    }
    readable(&s.tls_cert, "sip.tls_cert", err)?;
    readable(&s.tls_key, "sip.tls_key", err)?;
    let listen = match s.tls_listen.trim() {
        "" => None,
        a => Some(a.parse().map_err(|_| {
            err(
                "sip.tls_listen".into(),
                format!("`{a}` is not an address; write IP:port, e.g. \"0.0.0.0:5061\", or \"\" for no SIP over TLS"),
            )
        })?),
    };
    let servers_tls = c.servers.iter().position(|v| v.tls_listen.is_some());
    if s.tls_cert.is_empty() {
        if listen.is_some() {
            return Err(e(
                "sip.tls_cert",
                "sip.tls_listen needs a certificate: set sip.tls_cert and sip.tls_key (PEM files)",
            ));
        }
        if let Some(i) = servers_tls {
            return Err(err(
                format!("servers[{i}].tls_listen"),
                "needs a certificate: set sip.tls_cert and sip.tls_key (PEM files)".into(),
            ));
        }
    }
    Ok(listen)
}

/// Checks and parses the trust-boundary keys.
pub(super) fn check(c: &Config, err: Err<'_>) -> Result<Trust, ConfigError> {
    let e = |k: &str, p: &str| err(k.to_string(), p.to_string());
    if c.sip.trusted_peers.is_empty() {
        return Err(e(
            "sip.trusted_peers",
            "lists no network, so no call could arrive; list the router's and the SBCs' networks, e.g. [\"10.0.0.0/24\"]",
        ));
    }
    let peers =
        PeerFilter::parse(&c.sip.trusted_peers).map_err(|p| err("sip.trusted_peers".into(), p))?;
    if c.sip.max_invites_per_second_per_peer == 0 {
        return Err(e(
            "sip.max_invites_per_second_per_peer",
            "must be at least 1 (default 500)",
        ));
    }
    let sip_tls = sip_tls(c, err)?;
    let tokens = tokens(c, err)?;
    let h = &c.http;
    if h.tls_cert.is_empty() != h.tls_key.is_empty() {
        return Err(e(
            "http.tls_key",
            "set both http.tls_cert and http.tls_key (PEM files), or neither",
        ));
    }
    for (key, path) in [
        ("http.tls_cert", &h.tls_cert),
        ("http.tls_key", &h.tls_key),
        ("http.tls_ca", &h.tls_ca),
        ("control.credentials_file", &c.control.credentials_file),
        ("control.tls_ca_file", &c.control.tls_ca_file),
    ] {
        readable(path, key, err)?;
    }
    let sms_password = match (&c.sms.password, c.sms.password_file.as_str()) {
        (Some(_), f) if !f.is_empty() => {
            return Err(e(
                "sms.password_file",
                "set sms.password or sms.password_file, not both",
            ));
        }
        (_, f) if !f.is_empty() => read_secret(f, "sms.password_file", err)?,
        (Some(p), _) => p.clone(),
        (None, _) => Secret::new("secret"),
    };
    for (i, p) in c.sms.allowed_prefixes.iter().enumerate() {
        let digits = p.strip_prefix('+').unwrap_or("");
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(
                format!("sms.allowed_prefixes[{i}]"),
                format!(
                    "`{p}` is not an E.164 prefix; write `+` and digits, e.g. \"+1\" or \"+4420\""
                ),
            ));
        }
    }
    if c.sms.max_per_recipient_per_hour == 0 {
        return Err(e(
            "sms.max_per_recipient_per_hour",
            "must be at least 1 (default 10); notices past it are merged into a digest",
        ));
    }
    if c.sms.fallback_after_seconds == 0 {
        return Err(e(
            "sms.fallback_after_seconds",
            "must be at least 1 (default 300): how long a notice may go undelivered before the next channel",
        ));
    }
    if !(1..=8).contains(&c.sms.max_parts) {
        return Err(e(
            "sms.max_parts",
            "must be 1 to 8 (default 3): the SMS parts one notice may take",
        ));
    }
    if c.sms.missed_call_merge_minutes > 60 {
        return Err(e(
            "sms.missed_call_merge_minutes",
            "must be 0 (no merging) to 60 (default 10)",
        ));
    }
    if c.retrieval.max_wrong_codes_per_link == 0 {
        return Err(e(
            "retrieval.max_wrong_codes_per_link",
            "must be at least 1 (default 10)",
        ));
    }
    if c.retrieval.lockout_minutes == 0 {
        return Err(e("retrieval.lockout_minutes", "must be at least 1"));
    }
    let control_password = control(c, err)?;
    let webhook_secret = match (c.webhook.url.trim(), c.webhook.secret_file.as_str()) {
        ("", _) => None,
        (u, _) if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < 10 => {
            return Err(e(
                "webhook.url",
                "an http:// or https:// URL, or empty for no webhooks",
            ));
        }
        (_, "") => {
            return Err(e(
                "webhook.secret_file",
                "required with webhook.url: a file with the signing key (receivers check X-Boxless-Signature with it)",
            ));
        }
        (_, f) => Some(read_secret(f, "webhook.secret_file", err)?),
    };
    // Without `webhook.url` the key still signs notices to recipients' own webhooks.
    let webhook_secret = match (webhook_secret, c.webhook.secret_file.as_str()) {
        (None, f) if !f.is_empty() => Some(read_secret(f, "webhook.secret_file", err)?),
        (s, _) => s,
    };
    let email_password = email(c, err)?;
    let transcription_token = transcription(c, err)?;
    Ok(Trust {
        sip_tls,
        peers,
        tokens,
        secrets: Secrets {
            sms_password,
            control_password,
            webhook_secret,
            email_password,
            transcription_token,
        },
    })
}

/// The most requests at once to the recogniser.
const MAX_TRANSCRIPTION_CONCURRENCY: u32 = 64;

/// `[transcription]`: the URL (callers' voices leave the host: over TLS unless the
/// recogniser is on this host), the bounds, and the token file.
fn transcription(c: &Config, err: Err<'_>) -> Result<Option<Secret>, ConfigError> {
    let e = |key: &str, problem: String| err(key.to_string(), problem);
    let t = &c.transcription;
    let url = t.url.trim();
    if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://"))
        || url.len() == "https://".len()
        || url.contains(char::is_whitespace)
    {
        return Err(e(
            "transcription.url",
            "an http:// or https:// URL of the recogniser's OpenAI-compatible route, e.g. \"https://asr.internal/v1/audio/transcriptions\", or empty for no transcripts".into(),
        ));
    }
    if url.starts_with("http://") && !url_is_loopback(url) {
        return Err(e(
            "transcription.url",
            format!(
                "`{url}` would send callers' voices across the network in clear: use https:// (a TLS proxy before the recogniser) or a recogniser on this host"
            ),
        ));
    }
    if t.timeout_seconds == 0 || t.timeout_seconds > 600 {
        return Err(e(
            "transcription.timeout_seconds",
            format!("must be 1 to 600 (default 60); got {}", t.timeout_seconds),
        ));
    }
    if !(1..=MAX_TRANSCRIPTION_CONCURRENCY).contains(&t.concurrency) {
        return Err(e(
            "transcription.concurrency",
            format!(
                "must be 1 to {MAX_TRANSCRIPTION_CONCURRENCY} (default 2): requests at once to the recogniser; got {}",
                t.concurrency
            ),
        ));
    }
    if t.max_seconds == 0 {
        return Err(e(
            "transcription.max_seconds",
            "must be at least 1 (default 300): how much of a message is transcribed".into(),
        ));
    }
    if t.sms_wait_seconds > t.timeout_seconds.min(60) {
        return Err(e(
            "transcription.sms_wait_seconds",
            format!(
                "must be 0 to {} (at most timeout_seconds and 60: a notice late by more than a minute is no notice); got {}",
                t.timeout_seconds.min(60),
                t.sms_wait_seconds
            ),
        ));
    }
    // It goes into a multipart field as is.
    if t.model.is_empty()
        || t.model.len() > 200
        || !t.model.bytes().all(|b| b.is_ascii_graphic() && b != b'"')
    {
        return Err(e(
            "transcription.model",
            "the recogniser's model name, e.g. \"whisper-1\" (1 to 200 printable ASCII characters, no spaces or quotes)".into(),
        ));
    }
    match t.token_file.as_str() {
        "" => Ok(None),
        f => Ok(Some(read_secret(f, "transcription.token_file", err)?)),
    }
}

/// `[email]`: the SMTP URL, the From address, and the password file with a user.
fn email(c: &Config, err: Err<'_>) -> Result<Option<Secret>, ConfigError> {
    let e = |key: &str, problem: &str| err(key.to_string(), problem.to_string());
    let m = &c.email;
    if m.smtp.trim().is_empty() {
        return Ok(None);
    }
    if let Err(why) = super::parse_smtp_url(m.smtp.trim()) {
        return Err(e(
            "email.smtp",
            &format!("{why}; no user in it (email.user), or empty for no e-mail"),
        ));
    }
    if !crate::recipient::valid_email(&m.from) {
        return Err(e("email.from", "an address like voicemail@example.net"));
    }
    match (m.user.trim(), m.password_file.as_str()) {
        ("", _) => Ok(None),
        (_, "") => Err(e(
            "email.password_file",
            "required with email.user: a file with the SMTP password",
        )),
        (_, f) => Ok(Some(read_secret(f, "email.password_file", err)?)),
    }
}

fn tokens(c: &Config, err: Err<'_>) -> Result<Vec<ApiToken>, ConfigError> {
    let mut out: Vec<ApiToken> = Vec::with_capacity(c.http.tokens.len());
    for (i, t) in c.http.tokens.iter().enumerate() {
        let key = |k: &str| format!("http.tokens[{i}].{k}");
        if t.name.trim().is_empty() {
            return Err(err(
                key("name"),
                "give the token a name (who holds it)".into(),
            ));
        }
        if out.iter().any(|o| o.name == t.name) {
            return Err(err(
                key("name"),
                format!("`{}` is used twice; names must be unique", t.name),
            ));
        }
        let sha256 = parse_sha256(&t.sha256).ok_or_else(|| {
            err(
                key("sha256"),
                "must be 64 hex digits: the SHA-256 of the token, as `boxless token new` prints it"
                    .into(),
            )
        })?;
        out.push(ApiToken {
            name: t.name.clone(),
            sha256,
            scope: t.scope,
        });
    }
    if c.http.auth == HttpAuth::Token && out.is_empty() {
        return Err(err(
            "http.tokens".into(),
            "auth = \"token\" needs at least one [[http.tokens]] entry; `boxless token new --name ops --scope admin` prints one".into(),
        ));
    }
    Ok(out)
}

fn control(c: &Config, err: Err<'_>) -> Result<Option<Secret>, ConfigError> {
    let k = &c.control;
    let e = |key: &str, p: &str| err(key.to_string(), p.to_string());
    let password = match (&k.password, k.password_file.as_str()) {
        (Some(_), f) if !f.is_empty() => {
            return Err(e(
                "control.password_file",
                "set control.password or control.password_file, not both",
            ));
        }
        (_, f) if !f.is_empty() => Some(read_secret(f, "control.password_file", err)?),
        (p, _) => p.clone(),
    };
    if k.user.is_empty() != password.is_none() {
        return Err(e(
            "control.user",
            "NATS user and password go together: set control.user and control.password_file",
        ));
    }
    if !k.user.is_empty() && !k.credentials_file.is_empty() {
        return Err(e(
            "control.credentials_file",
            "use a credentials file or user/password, not both",
        ));
    }
    let authenticated = !k.user.is_empty() || !k.credentials_file.is_empty();
    let far = k
        .url
        .split(',')
        .map(str::trim)
        .find(|u| !u.is_empty() && !url_is_loopback(u));
    if k.backend == ControlBackend::Nats
        && !authenticated
        && let Some(far) = far
    {
        return Err(err(
            "control.user".into(),
            format!(
                "NATS at `{far}` is not on this host, and whoever can publish there steers every call; set control.user + control.password_file (or control.credentials_file) and enable authorization on NATS (deploy/nats-server.conf)"
            ),
        ));
    }
    Ok(password)
}

/// Refuses an API without authentication on any address but loopback.
pub(super) fn check_http_exposure(c: &Config, err: Err<'_>) -> Result<(), ConfigError> {
    if c.http.auth != HttpAuth::None {
        return Ok(());
    }
    let mut addrs: Vec<(String, SocketAddr)> = vec![("http.listen".into(), c.http.listen)];
    for (i, s) in c.servers.iter().enumerate() {
        addrs.push((format!("servers[{i}].http"), s.http));
    }
    if let Some((key, addr)) = addrs.into_iter().find(|(_, a)| !a.ip().is_loopback()) {
        return Err(err(
            "http.auth".into(),
            format!(
                "is \"none\" but `{key}` = {addr} is reachable from other hosts, where anyone could read and delete messages; set auth = \"token\" with [[http.tokens]] (`boxless token new`), or listen on 127.0.0.1"
            ),
        ));
    }
    Ok(())
}

/// `nats://127.0.0.1:4222`, `tls://localhost`, `[::1]:4222`: on this host.
fn url_is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split([':', '/']).next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let s = s.trim().as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        let hex = |b: u8| (b as char).to_digit(16);
        out[i] = (hex(pair[0])? * 16 + hex(pair[1])?) as u8;
    }
    Some(out)
}

/// A file a key names must be there to read (empty: not set), so that start-up, not the
/// first HTTPS client or NATS reconnect, says which key is wrong.
fn readable(path: &str, key: &str, err: Err<'_>) -> Result<(), ConfigError> {
    if path.is_empty() {
        return Ok(());
    }
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| err(key.into(), format!("cannot read `{path}`: {e}")))
}

/// The first line of a secret file. A file anyone on the host may read is refused: the
/// point of the file is that only the service user can.
fn read_secret(path: &str, key: &str, err: Err<'_>) -> Result<Secret, ConfigError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path)
        .map_err(|e| err(key.into(), format!("cannot read `{path}`: {e}")))?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(err(
            key.into(),
            format!("`{path}` is readable by every user; `chmod o-r {path}` (or 600)"),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(key.into(), format!("cannot read `{path}`: {e}")))?;
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(err(key.into(), format!("`{path}` is empty")));
    }
    Ok(Secret::new(line))
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn load(s: &str) -> Result<super::super::Checked, ConfigError> {
        Config::load_str(s, "x.toml")
    }

    #[test]
    fn defaults_trust_loopback_only() {
        let c = Config::embedded();
        assert!(c.peers.is_loopback_only());
        assert!(c.peers.allows("127.0.0.1".parse().unwrap()));
        assert!(!c.peers.allows("10.0.0.1".parse().unwrap()));
        assert_eq!(c.secrets.sms_password.expose(), "secret");
        assert_eq!(format!("{:?}", c.secrets.sms_password), "Secret(***)");
    }

    #[test]
    fn unauthenticated_api_refused_beyond_loopback() {
        let e = load("[http]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err();
        assert_eq!(e.key, "http.auth");
        assert!(
            e.problem.contains("http.listen") && e.problem.contains("token"),
            "{e}"
        );
        let sha = "ab".repeat(32);
        let ok = format!(
            "[http]\nlisten = \"0.0.0.0:8080\"\nauth = \"token\"\n[[http.tokens]]\nname = \"ops\"\nsha256 = \"{sha}\"\nscope = \"read\"\n"
        );
        let c = load(&ok).unwrap();
        assert_eq!(c.tokens[0].sha256, [0xab; 32]);
        assert_eq!(c.tokens[0].scope, Scope::Read);
        let e = load("[http]\nauth = \"token\"\n").unwrap_err();
        assert_eq!(e.key, "http.tokens");
        let e = load(&ok.replace(&sha, "abc")).unwrap_err();
        assert_eq!(e.key, "http.tokens[0].sha256");
    }

    #[test]
    fn bad_trust_keys_are_named() {
        let e = load("[sip]\ntrusted_peers = [\"10.0.0.0/24\", \"nope\"]\n").unwrap_err();
        assert_eq!(e.key, "sip.trusted_peers");
        assert!(e.problem.contains("nope"));
        let e =
            load("[control]\nbackend = \"nats\"\nurl = \"nats://10.0.0.11:4222\"\n").unwrap_err();
        assert_eq!(e.key, "control.user");
        assert!(load("[control]\nbackend = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\n").is_ok());
        let e = load("[control]\nuser = \"a\"\n").unwrap_err();
        assert_eq!(e.key, "control.user");
        for (text, key) in [
            (
                "[sip]\nmax_invites_per_second_per_peer = 0\n",
                "sip.max_invites_per_second_per_peer",
            ),
            ("[sip]\ntrusted_peers = []\n", "sip.trusted_peers"),
            (
                "[sip]\ntrusted_peers = [\"10.0.0.0/8\", 7]\n",
                "sip.trusted_peers",
            ),
            (
                "[sms]\nmax_per_recipient_per_hour = 0\n",
                "sms.max_per_recipient_per_hour",
            ),
            (
                "[sms]\nmissed_call_merge_minutes = 61\n",
                "sms.missed_call_merge_minutes",
            ),
            ("[sms]\nmax_parts = 0\n", "sms.max_parts"),
            ("[sms]\nmax_parts = 9\n", "sms.max_parts"),
            (
                "[transcription]\nurl = \"ftp://asr\"\n",
                "transcription.url",
            ),
            (
                "[transcription]\nurl = \"http://10.0.0.5:8000/v1/audio/transcriptions\"\n",
                "transcription.url",
            ),
            (
                "[transcription]\nurl = \"http://127.0.0.1:8000/v1\"\nsms_wait_seconds = 61\ntimeout_seconds = 120\n",
                "transcription.sms_wait_seconds",
            ),
            (
                "[transcription]\nsms_wait_seconds = 10\ntimeout_seconds = 5\n",
                "transcription.sms_wait_seconds",
            ),
            (
                "[transcription]\nconcurrency = 0\n",
                "transcription.concurrency",
            ),
            (
                "[transcription]\ntimeout_seconds = 0\n",
                "transcription.timeout_seconds",
            ),
            (
                "[transcription]\nmax_seconds = 0\n",
                "transcription.max_seconds",
            ),
            ("[transcription]\nmodel = \"\"\n", "transcription.model"),
            (
                "[transcription]\ntoken_file = \"/nonexistent/asr-token\"\n",
                "transcription.token_file",
            ),
            (
                "[sms]\nallowed_prefixes = [\"+\"]\n",
                "sms.allowed_prefixes[0]",
            ),
            (
                "[sms]\nallowed_prefixes = [\"+1234567890123456\"]\n",
                "sms.allowed_prefixes[0]",
            ),
            (
                "[retrieval]\nmax_wrong_codes_per_link = 0\n",
                "retrieval.max_wrong_codes_per_link",
            ),
            (
                "[retrieval]\ntrust_caller_id = \"anyone\"\n",
                "retrieval.trust_caller_id",
            ),
            ("[http]\nauth = \"basic\"\n", "http.auth"),
            (
                "[http]\ntls_cert = \"/nonexistent/api.crt\"\n",
                "http.tls_key",
            ),
            (
                "[http]\ntls_cert = \"/nonexistent/a.crt\"\ntls_key = \"/nonexistent/a.key\"\n",
                "http.tls_cert",
            ),
            (
                "[control]\ntls_ca_file = \"/nonexistent/ca.crt\"\n",
                "control.tls_ca_file",
            ),
            (
                "[control]\ncredentials_file = \"/nonexistent/x.creds\"\n",
                "control.credentials_file",
            ),
            (
                "[control]\npassword_file = \"/nonexistent/pw\"\n",
                "control.password_file",
            ),
            (
                "[webhook]\nurl = \"https://hooks.example.net/vm\"\n",
                "webhook.secret_file",
            ),
            (
                "[webhook]\nurl = \"ftp://x.example\"\nsecret_file = \"/x\"\n",
                "webhook.url",
            ),
            (
                "[webhook]\nurl = \"https://hooks.example.net/vm\"\nsecret_file = \"/nonexistent/k\"\n",
                "webhook.secret_file",
            ),
            (
                "[numbering]\nlanguage_by_country = { \"44\" = \"it\" }\n",
                "numbering.language_by_country",
            ),
            (
                "[webhook]\nsecret_file = \"/nonexistent/k\"\n",
                "webhook.secret_file",
            ),
            (
                "[sms]\nfallback_after_seconds = 0\n",
                "sms.fallback_after_seconds",
            ),
            ("[email]\nsmtp = \"mail.example.net:25\"\n", "email.smtp"),
            (
                "[email]\nsmtp = \"smtps://u:p@mail.example.net\"\n",
                "email.smtp",
            ),
            (
                "[email]\nsmtp = \"smtps://mail.example.net\"\nfrom = \"voicemail\"\n",
                "email.from",
            ),
            (
                "[email]\nsmtp = \"smtps://mail.example.net\"\nuser = \"vm\"\n",
                "email.password_file",
            ),
        ] {
            let e = load(text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn secrets_come_from_private_files() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("boxless-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("smpp.pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!("[sms]\npassword_file = \"{}\"\n", f.display());
        let c = load(&text).unwrap();
        assert_eq!(c.secrets.sms_password.expose(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&text).unwrap_err();
        assert_eq!(e.key, "sms.password_file");
        assert!(e.problem.contains("chmod"), "{e}");
        let e = load(&format!("{text}password = \"x\"\n")).unwrap_err();
        assert_eq!(e.key, "sms.password_file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loopback_urls() {
        for u in [
            "nats://127.0.0.1:4222",
            "tls://localhost:4222",
            "nats://[::1]:4222",
            "nats://u:p@127.0.0.2",
        ] {
            assert!(url_is_loopback(u), "{u}");
        }
        for u in ["nats://10.0.0.1:4222", "nats://nats.example.net"] {
            assert!(!url_is_loopback(u), "{u}");
        }
    }
}
