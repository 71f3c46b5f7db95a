//! The configuration file (docs/configuration.md) and its checks.
//!
//! Every problem becomes one [`ConfigError`] naming the file, the key and the fix.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::acl::PeerFilter;
use crate::number::{LinkPool, Numbering};

mod trust;

pub use trust::{ApiToken, Secret, Secrets};

/// The configuration `boxless serve` uses when no file is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/default.toml");

/// A configuration problem, printed as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config {file}: key `{key}`: {problem}")]
pub struct ConfigError {
    /// The file (or `<embedded default>`).
    pub file: String,
    /// The dotted key, e.g. `servers[1].link_numbers`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where servers keep their SQLite store and audio.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `[router]`
    #[serde(default)]
    pub router: RouterConfig,
    /// `[http]`
    #[serde(default)]
    pub http: HttpConfig,
    /// `[numbering]`
    #[serde(default)]
    pub numbering: NumberingConfig,
    /// `[sms]`
    #[serde(default)]
    pub sms: SmsConfig,
    /// `[email]`
    #[serde(default)]
    pub email: EmailConfig,
    /// `[webhook]`
    #[serde(default)]
    pub webhook: WebhookConfig,
    /// `[retrieval]`
    #[serde(default)]
    pub retrieval: RetrievalConfig,
    /// `[web]`
    #[serde(default)]
    pub web: WebConfig,
    /// `[messages]`
    #[serde(default)]
    pub messages: MessagesConfig,
    /// `[control]`
    #[serde(default)]
    pub control: ControlConfig,
    /// `[store]`: where messages live besides the server's own disk.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[sip]` protocol timers and limits.
    #[serde(default)]
    pub sip: SipConfig,
    /// `[transcription]`: the operator's speech recogniser.
    #[serde(default)]
    pub transcription: TranscriptionConfig,
    /// `[[servers]]`
    #[serde(default)]
    pub servers: Vec<ServerConfig>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("boxless-data")
}

/// How the router directs calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RouterMode {
    /// Answer `302` with the chosen server as Contact.
    #[default]
    Redirect,
    /// Forward statefully and fail over.
    Proxy,
}

/// `[router]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// UDP and TCP address.
    pub listen: SocketAddr,
    /// redirect | proxy
    pub mode: RouterMode,
    /// Proxy mode: how long a server may take to send any response before the next is tried.
    pub proxy_answer_ms: u64,
    /// Seconds a caller is told to wait (Retry-After) when no server is available.
    pub retry_after_seconds: u32,
    /// Seed for the server-choice RNG (0: from the OS).
    pub rng_seed: u64,
    /// SIP OPTIONS probe of each server every this many ms (0: no probes).
    pub probe_interval_ms: u64,
    /// A probe unanswered this long failed.
    pub probe_timeout_ms: u64,
    /// Failed probes in a row before a server is taken out.
    pub probe_down_after: u32,
    /// Good probes in a row before it is back.
    pub probe_up_after: u32,
    /// Redirect mode: Contacts a 302 lists for a deposit (the chosen server, then the next
    /// best available ones in q-order), 1 to 4.
    pub redirect_contacts: u32,
    /// Proxy mode: add Record-Route, so that in-dialog requests pass the router.
    pub record_route: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            listen: ([127, 0, 0, 1], 5060).into(),
            mode: RouterMode::Redirect,
            proxy_answer_ms: 2000,
            retry_after_seconds: 30,
            rng_seed: 0,
            probe_interval_ms: 500,
            probe_timeout_ms: 400,
            probe_down_after: 3,
            probe_up_after: 2,
            redirect_contacts: 2,
            record_route: false,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// none | token
    pub auth: HttpAuth,
    /// PEM certificate chain: serve HTTPS (with `tls_key`).
    pub tls_cert: String,
    /// PEM private key.
    pub tls_key: String,
    /// PEM CA certificates that the servers' API certificates chain to, for a router's
    /// API asking them over HTTPS (default: the certificates in `tls_cert`).
    pub tls_ca: String,
    /// `[[http.tokens]]`: who may call the API.
    pub tokens: Vec<TokenConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: ([127, 0, 0, 1], 8080).into(),
            auth: HttpAuth::None,
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
            tokens: Vec::new(),
        }
    }
}

/// How HTTP requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HttpAuth {
    /// No authentication: allowed only when every HTTP address is loopback.
    #[default]
    None,
    /// `Authorization: Bearer <token>`, checked against `[[http.tokens]]`.
    Token,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET only.
    Read,
    /// Everything.
    Admin,
}

impl Scope {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// One `[[http.tokens]]` entry: the config holds the token's SHA-256, never the token.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (shown in logs instead of the token).
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// read | admin
    pub scope: Scope,
}

/// `[numbering]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NumberingConfig {
    /// Completes national numbers.
    pub country_code: String,
    /// Country code -> language of the SMS texts (and prompts) for numbers there, when
    /// the recipient's entry names none.
    pub language_by_country: std::collections::BTreeMap<String, String>,
}

impl Default for NumberingConfig {
    fn default() -> Self {
        NumberingConfig {
            country_code: "1".into(),
            language_by_country: crate::recipient::DEFAULT_LANGUAGE_BY_COUNTRY
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// How SMS leave the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmsTransport {
    /// Written to the log.
    #[default]
    Log,
    /// SMPP 3.4 to an SMSC.
    Smpp,
}

/// `[webhook]`: every event POSTed as JSON, signed.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL; empty: no webhooks.
    pub url: String,
    /// A file holding the HMAC-SHA256 key (its first line); required with `url`.
    pub secret_file: String,
}

/// `[email]`: the e-mail channel (recipients whose entry lists `email`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// `smtp://host:port` (STARTTLS) or `smtps://host:port` (TLS); empty: no e-mail.
    pub smtp: String,
    /// SMTP AUTH user; empty: no AUTH.
    pub user: String,
    /// A file holding the SMTP password (its first line); required with `user`.
    pub password_file: String,
    /// The From address.
    pub from: String,
    /// Attach the recording as WAV.
    pub attach_audio: bool,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            smtp: String::new(),
            user: String::new(),
            password_file: String::new(),
            from: "voicemail@example.net".into(),
            attach_audio: true,
        }
    }
}

/// `[web]`: web playback (the SMS carries `base_url/m/<token>`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Where browsers reach the HTTP listener (or the proxy before it); empty: no link.
    pub base_url: String,
    /// Reverse proxies (and routers) whose `X-Forwarded-For` names the real client, for
    /// the per-source limit on wrong links.
    pub trusted_proxies: Vec<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            base_url: String::new(),
            trusted_proxies: vec!["127.0.0.1/32".into(), "::1/128".into()],
        }
    }
}

/// `[web]`, checked.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// `web.base_url`; None: messages get no web link.
    pub base_url: Option<crate::web::BaseUrl>,
    /// `web.trusted_proxies`.
    pub proxies: PeerFilter,
}

/// The SMTP server's address as `email.smtp` names it: (implicit TLS, host, port).
pub fn parse_smtp_url(url: &str) -> Result<(bool, String, u16), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("smtps://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("smtp://") {
        (false, r)
    } else {
        return Err("\"smtp://host:port\" (STARTTLS) or \"smtps://host:port\" (TLS)".into());
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(p) if p > 0 => (h, p),
            _ => return Err(format!("{p:?} is not a port")),
        },
        _ => (rest, if tls { 465 } else { 587 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', '@', ' ', '?', '#']) {
        return Err(
            "a host name or address after the scheme, e.g. smtps://mail.example.net:465".into(),
        );
    }
    Ok((tls, host.to_string(), port))
}

/// How a text too long for one SMS reaches the SMSC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LongText {
    /// Parts carrying a user data header (esm_class UDHI): what most SMSCs expect.
    #[default]
    Udh,
    /// Parts with the `sar_*` TLVs: the SMSC builds the headers.
    Sar,
}

/// `[sms]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// log | smpp
    pub transport: SmsTransport,
    /// The SMSC (smpp).
    pub address: String,
    /// SMPP system_id.
    pub system_id: String,
    /// SMPP password (default `secret`; or `password_file`).
    pub password: Option<Secret>,
    /// A file holding the SMPP password instead (its first line).
    pub password_file: String,
    /// Seconds between enquire_link PDUs.
    pub enquire_link_seconds: u64,
    /// First retry delay after a failed submit, doubled per attempt.
    pub retry_initial_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// Minutes east of UTC for the time printed in the SMS.
    pub utc_offset_minutes: i32,
    /// SMS go only to numbers starting with one of these (`+1`, `+4420`); empty: any.
    pub allowed_prefixes: Vec<String>,
    /// SMS to one number per rolling hour (per server); past it, notices are merged into
    /// a digest.
    pub max_per_recipient_per_hour: u32,
    /// Missed-call alerts from one caller to one recipient this close together are one SMS.
    pub missed_call_merge_minutes: u32,
    /// Ask the SMSC for delivery receipts (registered_delivery = 1): a notification is
    /// `accepted`, then `delivered`, `undeliverable` or `expired`.
    pub delivery_receipts: bool,
    /// `udh` | `sar`: how the parts of a long text are marked.
    pub long_text: LongText,
    /// No `delivered` by then (or `undeliverable` before): the recipient's next channel.
    pub fallback_after_seconds: u64,
    /// The most SMS parts one notice may take: a transcript is cut to fit.
    pub max_parts: u32,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            transport: SmsTransport::Log,
            address: "127.0.0.1:2775".into(),
            system_id: "boxless".into(),
            password: None,
            password_file: String::new(),
            enquire_link_seconds: 30,
            retry_initial_ms: 500,
            retry_max_ms: 60_000,
            utc_offset_minutes: 0,
            allowed_prefixes: Vec::new(),
            max_per_recipient_per_hour: 10,
            missed_call_merge_minutes: 10,
            delivery_receipts: true,
            long_text: LongText::Udh,
            fallback_after_seconds: 300,
            max_parts: 3,
        }
    }
}

/// `[transcription]`: the operator's recogniser, behind the OpenAI-compatible
/// `POST /v1/audio/transcriptions` (docs/transcription.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranscriptionConfig {
    /// The route's whole URL; empty: no transcripts.
    pub url: String,
    /// Sent as the `model` field.
    pub model: String,
    /// A file whose first line is the Bearer token; empty: none.
    pub token_file: String,
    /// One request's whole exchange, audio up and text down.
    pub timeout_seconds: u64,
    /// Requests at once; jobs beyond wait in a bounded queue.
    pub concurrency: u32,
    /// Messages up to this long are transcribed whole; of longer ones, this much.
    pub max_seconds: u64,
    /// The SMS waits at most this long for the transcript.
    pub sms_wait_seconds: u64,
}

impl Default for TranscriptionConfig {
    fn default() -> Self {
        TranscriptionConfig {
            url: String::new(),
            model: "whisper-1".into(),
            token_file: String::new(),
            timeout_seconds: 60,
            concurrency: 2,
            max_seconds: 300,
            sms_wait_seconds: 8,
        }
    }
}

impl TranscriptionConfig {
    /// True with a recogniser configured.
    pub fn on(&self) -> bool {
        !self.url.trim().is_empty()
    }
}

/// When retrieval asks for the access code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AccessCodePolicy {
    /// Never.
    Never,
    /// When the caller-ID is not the recipient.
    #[default]
    WhenCallerIdMismatch,
    /// Always.
    Always,
}

/// Which caller-IDs may stand in for the access code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TrustCallerId {
    /// Any caller-ID that arrives from a trusted peer.
    #[default]
    TrustedPeer,
    /// Only one that carries `verstat=TN-Validation-Passed` (STIR/SHAKEN, RFC 8588).
    Verified,
}

/// `[retrieval]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalConfig {
    /// never | when-caller-id-mismatch | always
    pub access_code: AccessCodePolicy,
    /// trusted-peer | verified
    pub trust_caller_id: TrustCallerId,
    /// Wrong codes in one call before it is ended.
    pub max_wrong_codes: u32,
    /// Wrong codes on one link number, from all callers together, per lockout window;
    /// past it no code opens that link number until the window ends.
    pub max_wrong_codes_per_link: u32,
    /// The lockout window.
    pub lockout_minutes: u32,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        RetrievalConfig {
            access_code: AccessCodePolicy::WhenCallerIdMismatch,
            trust_caller_id: TrustCallerId::TrustedPeer,
            max_wrong_codes: 3,
            max_wrong_codes_per_link: 10,
            lockout_minutes: 15,
        }
    }
}

/// `[messages]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesConfig {
    /// Recording stops here.
    pub max_seconds: u32,
    /// Shorter: no message, a missed-call alert.
    pub min_seconds: u32,
    /// This much silence ends the recording.
    pub silence_seconds: u32,
    /// `digits` ("You have reached \<digits\>..." then a tone) or `tone` (the tone alone).
    pub greeting: Greeting,
    /// Heard messages are deleted this many days after they were heard (saved ones stay).
    pub keep_heard_days: u32,
    /// Unheard messages expire this many days after they arrived (a reminder SMS goes a day before).
    pub keep_unheard_days: u32,
    /// How the audio is kept on disk.
    pub audio_format: AudioFormat,
    /// The longest personal greeting kept, in seconds (3 to 60: a greeting is kept as
    /// 8 kHz µ-law, 8 KB a second, and one NATS message holds it whole).
    pub greeting_max_seconds: u32,
}

/// `messages.greeting_max_seconds` at most: 60 s of 8 kHz µ-law is 480 KB, under the
/// 1 MB a NATS message carries by default.
pub const GREETING_MAX_SECONDS: u32 = 60;

/// `messages.audio_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AudioFormat {
    /// The G.711 law the caller sent (µ-law or A-law WAV, 8 kB/s); a G.722 call wideband
    /// 16-bit PCM.
    #[default]
    G711,
    /// 16-bit PCM (16 kB/s at 8 kHz).
    Pcm16,
}

/// The default greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Greeting {
    /// Speaks the recipient's digits, then the tone.
    #[default]
    Digits,
    /// The tone alone.
    Tone,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        MessagesConfig {
            max_seconds: 180,
            min_seconds: 1,
            silence_seconds: 10,
            greeting: Greeting::Digits,
            keep_heard_days: 7,
            keep_unheard_days: 30,
            audio_format: AudioFormat::G711,
            greeting_max_seconds: 30,
        }
    }
}

/// Where server status travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ControlBackend {
    /// In-process (serve).
    #[default]
    Local,
    /// NATS.
    Nats,
}

/// Where a server's messages live besides its own disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Replication {
    /// This host's disk only (one box).
    #[default]
    None,
    /// Also the NATS JetStream cluster (docs/configuration.md, `[store]`).
    Jetstream,
}

/// The most `[[servers]]` with replication: a status names whom it serves among them as
/// bits of one word (`ServerSlot::set_serves`).
pub const MAX_TAKEOVER_SERVERS: usize = 64;

/// `[store]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `none` or `jetstream` (needs `control.backend = "nats"`).
    pub replication: Replication,
    /// Copies JetStream keeps of each message (1, 3 or 5).
    pub replicas: usize,
    /// A server whose status has been absent this long is taken over by one live server.
    pub takeover_after_seconds: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            replication: Replication::None,
            replicas: 3,
            takeover_after_seconds: 30,
        }
    }
}

/// `[control]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// local | nats
    pub backend: ControlBackend,
    /// The NATS server.
    pub url: String,
    /// A status older than this is not available.
    pub ttl_seconds: u64,
    /// While NATS is unreachable, routers keep routing on the last known status (and
    /// their SIP OPTIONS probes) for at most this long.
    pub outage_grace_seconds: u64,
    /// NATS user (with `password` or `password_file`).
    pub user: String,
    /// NATS password.
    pub password: Option<Secret>,
    /// A file holding the NATS password instead.
    pub password_file: String,
    /// A NATS credentials file (JWT + NKey seed), instead of user/password.
    pub credentials_file: String,
    /// CA certificate (PEM) that the NATS servers' TLS certificates chain to; set, the
    /// connection requires TLS.
    pub tls_ca_file: String,
    /// Copies of the JetStream key-value bucket of recipients' preferences (3 on a
    /// three-node cluster, so one node's loss loses no entry).
    pub kv_replicas: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            backend: ControlBackend::Local,
            url: "nats://127.0.0.1:4222".into(),
            ttl_seconds: 3,
            outage_grace_seconds: 30,
            user: String::new(),
            password: None,
            password_file: String::new(),
            credentials_file: String::new(),
            kv_replicas: 1,
            tls_ca_file: String::new(),
        }
    }
}

/// `[sip]`: RFC 3261 timers and limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// T1, the RTT estimate (ms).
    pub t1_ms: u64,
    /// T2, the longest retransmit interval (ms).
    pub t2_ms: u64,
    /// Largest message accepted, bytes.
    pub max_message_bytes: usize,
    /// Networks (CIDR) whose requests reach call handling; others get `403`.
    pub trusted_peers: Vec<String>,
    /// New INVITEs per second from one address; above it `503` with Retry-After.
    pub max_invites_per_second_per_peer: u32,
    /// The router's SIP-over-TLS address (`""`: none).
    pub tls_listen: String,
    /// PEM certificate chain of every SIP-over-TLS listener.
    pub tls_cert: String,
    /// Its private key.
    pub tls_key: String,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            t1_ms: 500,
            t2_ms: 4000,
            max_message_bytes: 16 * 1024,
            trusted_peers: vec!["127.0.0.0/8".into(), "::1/128".into()],
            max_invites_per_second_per_peer: 500,
            tls_listen: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

/// One `[[servers]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Unique id.
    pub id: String,
    /// SIP address (UDP and TCP).
    pub listen: SocketAddr,
    /// SIP over TLS on this address too (with `sip.tls_cert`).
    #[serde(default)]
    pub tls_listen: Option<SocketAddr>,
    /// Its own HTTP API when run as `boxless server`.
    pub http: SocketAddr,
    /// `"FIRST-LAST"` RTP ports (even ports used).
    pub rtp_ports: String,
    /// Concurrent calls.
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// Link-number ranges or single numbers.
    pub link_numbers: Vec<String>,
    /// Share of new calls relative to the other servers (0: standby, chosen only when
    /// no server with a weight is available).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_capacity() -> u32 {
    100
}

fn default_weight() -> u32 {
    1
}

/// The largest `weight`.
pub const MAX_WEIGHT: u32 = 1000;

/// A server entry after its checks.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// The entry as written.
    pub config: ServerConfig,
    /// Parsed link numbers.
    pub pool: LinkPool,
    /// First and last RTP port.
    pub rtp_ports: (u16, u16),
}

/// A configuration that passed every check.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The configuration.
    pub config: Config,
    /// Number completion.
    pub numbering: Numbering,
    /// Servers with parsed pools, in file order.
    pub servers: Vec<ServerSpec>,
    /// `sip.trusted_peers`, parsed.
    pub peers: PeerFilter,
    /// `[[http.tokens]]`, parsed.
    pub tokens: Vec<ApiToken>,
    /// Passwords, read from their files where a `*_file` key names one.
    pub secrets: Secrets,
    /// The router's SIP-over-TLS address.
    pub sip_tls: Option<SocketAddr>,
    /// `numbering.language_by_country`, parsed.
    pub languages: crate::recipient::Languages,
    /// `[web]`, parsed.
    pub web: WebSettings,
}

impl Config {
    /// Parses and checks TOML; `file` names the source in errors.
    pub fn load_str(text: &str, file: &str) -> Result<Checked, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| toml_error(text, file, &e))?;
        config.check(file)
    }

    /// The embedded default.
    pub fn embedded() -> Checked {
        // The embedded default is checked by a unit test, so this cannot fail.
        Config::load_str(DEFAULT_CONFIG, "<embedded default>")
            .expect("embedded default config is valid")
    }

    fn check(self, file: &str) -> Result<Checked, ConfigError> {
        let err = |key: String, problem: String| ConfigError {
            file: file.to_string(),
            key,
            problem,
        };
        let numbering = Numbering::new(&self.numbering.country_code).ok_or_else(|| {
            err(
                "numbering.country_code".into(),
                "must be 1 to 3 digits without `+`, e.g. \"1\" or \"44\"".into(),
            )
        })?;
        let m = &self.messages;
        if m.max_seconds == 0 || m.min_seconds >= m.max_seconds {
            return Err(err(
                "messages.min_seconds".into(),
                format!("must be below messages.max_seconds ({})", m.max_seconds),
            ));
        }
        if m.keep_unheard_days < 2 {
            return Err(err(
                "messages.keep_unheard_days".into(),
                "must be at least 2 (the reminder goes one day before expiry)".into(),
            ));
        }
        if !(3..=GREETING_MAX_SECONDS).contains(&m.greeting_max_seconds) {
            return Err(err(
                "messages.greeting_max_seconds".into(),
                format!(
                    "must be 3 to {GREETING_MAX_SECONDS} (a greeting is kept whole in one NATS message)"
                ),
            ));
        }
        if m.silence_seconds == 0 {
            return Err(err(
                "messages.silence_seconds".into(),
                "must be at least 1".into(),
            ));
        }
        let r = &self.router;
        if r.probe_interval_ms > 0
            && (r.probe_timeout_ms == 0 || r.probe_down_after == 0 || r.probe_up_after == 0)
        {
            return Err(err(
                "router.probe_timeout_ms".into(),
                "with probes on, probe_timeout_ms, probe_down_after and probe_up_after must be at least 1".into(),
            ));
        }
        if !(1..=4).contains(&self.router.redirect_contacts) {
            return Err(err(
                "router.redirect_contacts".into(),
                format!("must be 1 to 4; got {}", self.router.redirect_contacts),
            ));
        }
        if r.record_route && r.mode != RouterMode::Proxy {
            return Err(err(
                "router.record_route".into(),
                "applies to proxy mode only (a 302 leaves the dialog); set router.mode = \"proxy\" or remove it".into(),
            ));
        }
        if r.record_route && r.listen.ip().is_unspecified() {
            return Err(err(
                "router.record_route".into(),
                format!(
                    "needs an address callers and servers can reach in its Record-Route; router.listen is {}: set it to the router's own address",
                    r.listen
                ),
            ));
        }
        if self.retrieval.max_wrong_codes == 0 {
            return Err(err(
                "retrieval.max_wrong_codes".into(),
                "must be at least 1".into(),
            ));
        }
        if self.control.backend == ControlBackend::Nats
            && self.control.url.split(',').all(|u| u.trim().is_empty())
        {
            return Err(err(
                "control.url".into(),
                "must name at least one NATS server, e.g. \"nats://127.0.0.1:4222\" (several: comma-separated)".into(),
            ));
        }
        if self.store.replication == Replication::Jetstream
            && self.control.backend != ControlBackend::Nats
        {
            return Err(err(
                "store.replication".into(),
                "\"jetstream\" keeps messages in the NATS cluster: set control.backend = \"nats\" and control.url, or replication = \"none\"".into(),
            ));
        }
        if ![1, 3, 5].contains(&self.store.replicas) {
            return Err(err(
                "store.replicas".into(),
                format!(
                    "must be 1, 3 or 5 (a JetStream stream's copies: one, or a majority that survives one or two nodes); got {}",
                    self.store.replicas
                ),
            ));
        }
        if self.store.takeover_after_seconds < 2 * self.control.ttl_seconds.max(1) {
            return Err(err(
                "store.takeover_after_seconds".into(),
                format!(
                    "must be at least twice control.ttl_seconds ({}): a server whose status is merely late must not be taken over",
                    self.control.ttl_seconds
                ),
            ));
        }
        if self.store.replication == Replication::Jetstream
            && self.servers.len() > MAX_TAKEOVER_SERVERS
        {
            return Err(err(
                "servers".into(),
                format!(
                    "at most {MAX_TAKEOVER_SERVERS} [[servers]] with store.replication = \"jetstream\" (a status names whom it serves among them); got {}",
                    self.servers.len()
                ),
            ));
        }
        if self.control.ttl_seconds == 0 {
            return Err(err(
                "control.ttl_seconds".into(),
                "must be at least 1".into(),
            ));
        }
        if self.sip.t1_ms == 0 || self.sip.t2_ms < self.sip.t1_ms {
            return Err(err(
                "sip.t2_ms".into(),
                "t1_ms must be above 0 and t2_ms at least t1_ms".into(),
            ));
        }
        if self.sip.max_message_bytes < 1024 || self.sip.max_message_bytes > 65_535 {
            return Err(err(
                "sip.max_message_bytes".into(),
                "must be between 1024 and 65535".into(),
            ));
        }
        if self.sms.transport == SmsTransport::Smpp
            && self.sms.address.parse::<SocketAddr>().is_err()
        {
            return Err(err(
                "sms.address".into(),
                "must be IP:PORT of the SMSC, e.g. \"127.0.0.1:2775\"".into(),
            ));
        }
        if self.sms.retry_initial_ms == 0 || self.sms.retry_max_ms < self.sms.retry_initial_ms {
            return Err(err(
                "sms.retry_max_ms".into(),
                "retry_initial_ms must be above 0 and retry_max_ms at least retry_initial_ms"
                    .into(),
            ));
        }
        let trust = trust::check(&self, &err)?;
        let mut servers: Vec<ServerSpec> = Vec::with_capacity(self.servers.len());
        for (i, s) in self.servers.iter().enumerate() {
            let key = |k: &str| format!("servers[{i}].{k}");
            if s.id.is_empty() || !s.id.bytes().all(crate::util::id_byte) {
                return Err(err(key("id"), "must be letters, digits, `-` or `_`".into()));
            }
            if s.capacity == 0 {
                return Err(err(key("capacity"), "must be at least 1".into()));
            }
            if s.weight > MAX_WEIGHT {
                return Err(err(
                    key("weight"),
                    format!("must be 0 (standby) to {MAX_WEIGHT}; got {}", s.weight),
                ));
            }
            let pool = LinkPool::parse(&s.link_numbers).map_err(|p| err(key("link_numbers"), p))?;
            if pool.is_empty() {
                return Err(err(
                    key("link_numbers"),
                    "give the server at least one link number".into(),
                ));
            }
            let rtp_ports = parse_port_range(&s.rtp_ports).ok_or_else(|| {
                err(
                    key("rtp_ports"),
                    "must be \"FIRST-LAST\" with FIRST < LAST, e.g. \"20000-20999\"".into(),
                )
            })?;
            for o in &servers {
                let other = &o.config.id;
                if o.config.id == s.id {
                    return Err(err(
                        key("id"),
                        format!("`{}` is used twice; ids must be unique", s.id),
                    ));
                }
                if o.pool.overlaps(&pool) {
                    return Err(err(
                        key("link_numbers"),
                        format!("overlap with server `{other}`; pools never overlap"),
                    ));
                }
                if o.config.listen == s.listen || o.config.http == s.http {
                    return Err(err(
                        key("listen"),
                        format!("address already used by server `{other}`"),
                    ));
                }
                // RTP ranges may repeat on different hosts, never on one address.
                let (a, b) = (o.config.listen.ip(), s.listen.ip());
                let same_host = a == b || a.is_unspecified() || b.is_unspecified();
                if same_host && o.rtp_ports.0 <= rtp_ports.1 && rtp_ports.0 <= o.rtp_ports.1 {
                    return Err(err(
                        key("rtp_ports"),
                        format!("overlap with server `{other}` on the same address"),
                    ));
                }
            }
            if s.listen == self.router.listen {
                return Err(err(
                    key("listen"),
                    "is the router's address; give the server its own port".into(),
                ));
            }
            servers.push(ServerSpec {
                config: s.clone(),
                pool,
                rtp_ports,
            });
        }
        trust::check_http_exposure(&self, &err)?;
        let languages = crate::recipient::Languages::parse(&self.numbering.language_by_country)
            .map_err(|why| err("numbering.language_by_country".into(), why))?;
        let web = WebSettings {
            base_url: match self.web.base_url.trim() {
                "" => None,
                u => Some(
                    crate::web::BaseUrl::parse(u).map_err(|why| err("web.base_url".into(), why))?,
                ),
            },
            proxies: PeerFilter::parse(&self.web.trusted_proxies)
                .map_err(|why| err("web.trusted_proxies".into(), why))?,
        };
        Ok(Checked {
            config: self,
            numbering,
            languages,
            web,
            servers,
            sip_tls: trust.sip_tls,
            peers: trust.peers,
            tokens: trust.tokens,
            secrets: trust.secrets,
        })
    }
}

fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a > 0 && a < b).then_some((a, b))
}

/// Turns a TOML error into one line naming the key.
fn toml_error(text: &str, file: &str, e: &toml::de::Error) -> ConfigError {
    let problem = e.message().replace('\n', " ").trim().to_string();
    let key = e
        .span()
        .map(|span| key_at(text, span.start))
        .unwrap_or_else(|| "(top level)".into());
    ConfigError {
        file: file.to_string(),
        key,
        problem,
    }
}

/// The dotted key of the line holding byte `pos`: the last `[table]` before it plus the key.
fn key_at(text: &str, pos: usize) -> String {
    let pos = pos.min(text.len());
    let before = &text[..pos];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = text[line_start..line_end].trim();
    let mut table = String::new();
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    for l in text[..line_start].lines() {
        let l = l.trim();
        if let Some(t) = l.strip_prefix("[[").and_then(|t| t.split("]]").next()) {
            let n = index.entry(t.trim().to_string()).or_insert(0);
            table = format!("{}[{}]", t.trim(), *n);
            *n += 1;
        } else if let Some(t) = l.strip_prefix('[').and_then(|t| t.split(']').next()) {
            table = t.trim().to_string();
        }
    }
    // The error is about a table header itself (an unknown table): name that table, not
    // the one before it.
    if let Some(t) = line
        .strip_prefix("[[")
        .and_then(|t| t.split("]]").next())
        .or_else(|| line.strip_prefix('[').and_then(|t| t.split(']').next()))
    {
        return t.trim().to_string();
    }
    let key = line.split('=').next().unwrap_or("").trim();
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "(top level)".into(),
        (true, false) => key.to_string(),
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_name_their_tls_and_port() {
        assert_eq!(
            parse_smtp_url("smtps://mail.example.net"),
            Ok((true, "mail.example.net".into(), 465))
        );
        assert_eq!(
            parse_smtp_url("smtp://127.0.0.1:2525"),
            Ok((false, "127.0.0.1".into(), 2525))
        );
        assert_eq!(
            parse_smtp_url("smtp://[::1]:25"),
            Ok((false, "::1".into(), 25))
        );
        for bad in [
            "mail.example.net",
            "smtp://",
            "smtp://h:0",
            "smtp://u@h:25",
            "http://h",
        ] {
            assert!(parse_smtp_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn embedded_default_is_valid_and_has_two_servers() {
        let c = Config::embedded();
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.config.router.listen, "127.0.0.1:5060".parse().unwrap());
        assert_eq!(c.config.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.config.sms.transport, SmsTransport::Log);
    }

    #[test]
    fn rtp_ranges_may_repeat_on_different_hosts_only() {
        let two = |ip1: &str, ip2: &str| {
            format!(
                "[http]\nauth = \"token\"\n[[http.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nscope = \"admin\"\n\
                 [[servers]]\nid = \"a\"\nlisten = \"{ip1}:5060\"\nhttp = \"{ip1}:8080\"\nrtp_ports = \"20000-20999\"\nlink_numbers = [\"+18005550100\"]\n\
                 [[servers]]\nid = \"b\"\nlisten = \"{ip2}:5062\"\nhttp = \"{ip2}:8082\"\nrtp_ports = \"20500-21999\"\nlink_numbers = [\"+18005550101\"]\n",
                "0".repeat(64)
            )
        };
        assert!(Config::load_str(&two("10.0.0.31", "10.0.0.32"), "x.toml").is_ok());
        for (a, b) in [("10.0.0.31", "10.0.0.31"), ("0.0.0.0", "10.0.0.32")] {
            let e = Config::load_str(&two(a, b), "x.toml").unwrap_err();
            assert_eq!(e.key, "servers[1].rtp_ports", "{a} {b}");
        }
    }

    #[test]
    fn replication_needs_nats_and_a_quorum_size() {
        let e = Config::load_str("[store]\nreplication = \"jetstream\"\n", "x.toml").unwrap_err();
        assert_eq!(e.key, "store.replication");
        assert!(e.problem.contains("control.backend = \"nats\""), "{e}");
        let nats = "[control]\nbackend = \"nats\"\n[store]\nreplication = \"jetstream\"\n";
        let c = Config::load_str(nats, "x.toml").unwrap();
        assert_eq!(c.config.store.replication, Replication::Jetstream);
        assert_eq!(c.config.store.replicas, 3);
        let e = Config::load_str(&format!("{nats}replicas = 2\n"), "x.toml").unwrap_err();
        assert_eq!(e.key, "store.replicas");
        let e =
            Config::load_str(&format!("{nats}takeover_after_seconds = 5\n"), "x.toml").unwrap_err();
        assert_eq!(e.key, "store.takeover_after_seconds");
        assert!(e.problem.contains("twice control.ttl_seconds (3)"), "{e}");
        let e = Config::load_str("[store]\nreplication = \"raft\"\n", "x.toml").unwrap_err();
        assert_eq!(e.key, "store.replication");
        assert_eq!(
            Config::embedded().config.store.replication,
            Replication::None,
            "one box keeps its disk only"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::load_str("[router]\nmode = \"bounce\"\n", "x.toml").unwrap_err();
        assert_eq!(e.key, "router.mode");
        assert!(
            e.to_string()
                .starts_with("config x.toml: key `router.mode`:"),
            "{e}"
        );
        assert!(!e.to_string().contains('\n'));
        let e = Config::load_str("[messages]\nmax_secs = 3\n", "x.toml").unwrap_err();
        assert_eq!(e.key, "messages.max_secs");
        // An unknown table is named itself, not after the table before it.
        let e = Config::load_str("[messages]\nmax_seconds = 30\n[emial]\nx = 1\n", "x.toml")
            .unwrap_err();
        assert_eq!(e.key, "emial", "{e}");
        let e = Config::load_str("[sip]\nt1_ms = 500\n[[servres]]\nid = \"a\"\n", "x.toml")
            .unwrap_err();
        assert_eq!(e.key, "servres", "{e}");
        let e = Config::load_str(
            "[http]\n[[http.tokens]]\nname = \"a\"\nsha256 = \"00\"\nscope = \"root\"\n",
            "x.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "http.tokens[0].scope", "{e}");
        let two = DEFAULT_CONFIG.replace("+18005550150-+18005550199", "+18005550140-+18005550199");
        let e = Config::load_str(&two, "x.toml").unwrap_err();
        assert_eq!(e.key, "servers[1].link_numbers");
        let e = Config::load_str("[numbering]\ncountry_code = \"+1\"\n", "x.toml").unwrap_err();
        assert_eq!(e.key, "numbering.country_code");
        let e = Config::load_str("[web]\nbase_url = \"http://vm.example.net\"\n", "x.toml")
            .unwrap_err();
        assert_eq!(e.key, "web.base_url", "{e}");
        assert!(e.problem.contains("https://"), "{e}");
        let e = Config::load_str("[web]\ntrusted_proxies = [\"proxy\"]\n", "x.toml").unwrap_err();
        assert_eq!(e.key, "web.trusted_proxies", "{e}");
        let e = Config::load_str("[messages]\naudio_format = \"mp3\"\n", "x.toml").unwrap_err();
        assert_eq!(e.key, "messages.audio_format", "{e}");
        assert!(
            e.problem.contains("g711") && e.problem.contains("pcm16"),
            "{e}"
        );
        let ok =
            Config::load_str("[web]\nbase_url = \"https://vm.example.net/\"\n", "x.toml").unwrap();
        assert_eq!(
            ok.web.base_url.map(|b| b.as_str().to_string()).as_deref(),
            Some("https://vm.example.net")
        );
        let e = Config::load_str("[[servers]]\nid = \"a\"\nlisten = \"127.0.0.1:1\"\nhttp = \"127.0.0.1:2\"\nrtp_ports = \"9-3\"\nlink_numbers = [\"+1800\"]\n", "x.toml").unwrap_err();
        assert_eq!(e.key, "servers[0].rtp_ports");
        let e = Config::load_str("[router]\nrecord_route = true\n", "x.toml").unwrap_err();
        assert_eq!(e.key, "router.record_route");
        assert!(e.to_string().contains("proxy mode only"), "{e}");
        let e = Config::load_str(
            "[router]\nmode = \"proxy\"\nlisten = \"0.0.0.0:5060\"\nrecord_route = true\n",
            "x.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "router.record_route");
        assert!(e.to_string().contains("0.0.0.0:5060"), "{e}");
        assert!(
            Config::load_str(
                "[router]\nmode = \"proxy\"\nrecord_route = true\n",
                "x.toml"
            )
            .is_ok()
        );
    }
}
