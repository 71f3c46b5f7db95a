//! What the API answers, as types: the handlers serialize these, and the OpenAPI document
//! (`GET /api/v1/openapi.json`, [`crate::openapi::ApiDoc`]) is made from them and from each
//! handler's `#[utoipa::path]`, so the description cannot drift from what is sent. The
//! reference operators read is docs/http.md.

use boxless_core::rfc3339;
use boxless_store::MessageInfo;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error: a short code and what to do about it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// e.g. `not_found`, `bad_request`, `unauthorized`, `store`.
    pub error: String,
    /// What is wrong, and the fix.
    pub detail: String,
}

/// One messaging server as the router sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerView {
    /// Its `[[servers]]` id.
    pub id: String,
    /// Its SIP address.
    pub address: String,
    /// `up`, `draining` or `down`.
    pub state: String,
    /// Calls in progress.
    pub active_calls: u32,
    /// Calls it may hold.
    pub capacity: u32,
    /// Free space on its data disk.
    pub free_disk_bytes: u64,
    /// How long ago its status last came (null: never).
    pub last_seen_ms: Option<u64>,
    /// Its link-number ranges.
    pub link_numbers: Vec<String>,
    /// Its messages not yet in JetStream (`[store] replication`); null when it does not
    /// replicate.
    pub unreplicated: Option<u64>,
    /// The server ids whose link numbers and web links it answers: itself, and any it
    /// took over; empty while it catches up after coming back.
    pub serves: Vec<String>,
}

/// One notice of a message: one channel, one destination.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotificationView {
    /// `sms`, `email` or `webhook`.
    pub channel: String,
    /// A number, an e-mail address or a URL.
    pub to: Option<String>,
    /// Its place in the fallback order (0: first).
    pub step: u32,
    /// `pending`, `accepted`, `delivered`, `undeliverable`, `expired`, `blocked`,
    /// `opted_out`, `merged` or `skipped`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// When the far end took it (RFC 3339).
    pub accepted_at: Option<String>,
    /// When its receipt settled it (RFC 3339).
    pub final_at: Option<String>,
    /// From acceptance to the receipt.
    pub delivery_ms: Option<u64>,
}

/// A stored message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageView {
    /// `<server>-<hex>`.
    pub id: String,
    /// Who it is for (E.164).
    pub recipient: String,
    /// Who left it (E.164), when known.
    pub caller: Option<String>,
    /// When it arrived (RFC 3339).
    pub received_at: String,
    /// Its length.
    pub duration_ms: u64,
    /// The number that plays it.
    pub link_number: String,
    /// The server holding it.
    pub server: String,
    /// `new`, `notified`, `heard`, `saved` or `deleted`.
    pub state: String,
    /// Its notices.
    pub notifications: Vec<NotificationView>,
    /// What was said, as the operator's recogniser heard it (machine text; null unless
    /// `transcript_state` is `done`).
    pub transcript: Option<String>,
    /// `off`, `pending`, `done`, `no_speech` or `failed`.
    pub transcript_state: String,
}

impl From<&MessageInfo> for MessageView {
    fn from(m: &MessageInfo) -> MessageView {
        MessageView {
            id: m.id.clone(),
            recipient: m.recipient.to_string(),
            caller: m.caller.map(|c| c.to_string()),
            received_at: rfc3339(m.received_at_ms),
            duration_ms: m.duration_ms,
            link_number: m.link_number.to_string(),
            server: m.server.clone(),
            state: m.state.as_str().to_string(),
            notifications: m
                .notifications
                .iter()
                .map(|n| NotificationView {
                    channel: n.channel.clone(),
                    to: n.to.clone(),
                    step: n.step,
                    state: n.state.clone(),
                    attempts: n.attempts,
                    last_error: n.last_error.clone(),
                    accepted_at: n.accepted_at_ms.map(rfc3339),
                    final_at: n.final_at_ms.map(rfc3339),
                    delivery_ms: n
                        .accepted_at_ms
                        .zip(n.final_at_ms)
                        .map(|(a, f)| f.saturating_sub(a)),
                })
                .collect(),
            transcript: m.transcript.clone(),
            transcript_state: m.transcript_state.as_str().to_string(),
        }
    }
}

/// The process's health.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, `degraded` (NATS unreachable: routing on the last known status) or
    /// `draining`.
    pub status: String,
    /// False once the process drains.
    pub taking_calls: bool,
    /// The control plane.
    pub control: ControlView,
}

/// The control plane (NATS) as this process sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ControlView {
    /// Connected now.
    pub connected: bool,
    /// Unreachable for this long (null while connected).
    pub down_for_ms: Option<u64>,
    /// Routing on the last known status for this long more.
    pub grace_left_ms: Option<u64>,
}

/// Deposits and notices per minute over the last hour.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActivityView {
    /// Start of the first minute (ms since the epoch).
    pub from_ms: u64,
    /// A bucket's width: 60,000.
    pub minute_ms: u64,
    /// Messages stored, per minute.
    pub deposits: Vec<u32>,
    /// Notices taken by the far end, per minute.
    pub notices: Vec<u32>,
}

/// A recipient's preferences as written (`PUT`) and as shown (with `number`). Fields left
/// out of a `PUT` take their defaults: SMS only, language from the country code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecipientView {
    /// The number (answers only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub number: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// The recipient's own webhook (`http://` or `https://`).
    pub webhook_url: Option<String>,
    /// `en`, `fr`, `es` or `de`.
    pub language: Option<String>,
    /// `sms`, `email`, `webhook`, in the order of fallback.
    pub channels: Option<Vec<String>>,
    /// No SMS at all (STOP).
    pub opted_out: Option<bool>,
    /// Other phones that get the SMS too, and whose caller-ID counts as the recipient's.
    pub notify_numbers: Option<Vec<String>>,
}

/// The answer to a `DELETE` of a recipient.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecipientDeleted {
    /// The number.
    pub number: String,
    /// True.
    pub deleted: bool,
}

/// A recipient's greeting as kept.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GreetingView {
    /// The number.
    pub number: String,
    /// `no-answer` or `busy`.
    #[serde(rename = "for")]
    pub kind: String,
    /// Its length.
    pub seconds: f64,
}

/// The answer to a `DELETE` of a greeting.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GreetingDeleted {
    /// The number.
    pub number: String,
    /// `no-answer` or `busy`.
    #[serde(rename = "for")]
    pub kind: String,
    /// True.
    pub deleted: bool,
}

/// The answer to a `DELETE` of a message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageDeleted {
    /// The message id.
    pub id: String,
    /// `deleted`.
    pub state: String,
}
