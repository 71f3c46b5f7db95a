//! The webhook channel: every event of one server's store, POSTed as JSON to
//! `webhook.url`, signed, in the order the store wrote them, each until the receiver
//! answers 2xx.
//!
//! Body: `{"id": "<server>-e<n>", "type": "message.deposited", "created_at": RFC 3339,
//! "server": "<id>", "data": {...}}`. Headers: `X-Boxless-Signature: sha256=<hex
//! HMAC-SHA256(secret, body)>`, `X-Boxless-Event`, and the id again as `X-Boxless-Event-Id`
//! and `Idempotency-Key`: a crash between the receiver's 2xx and our record of it sends
//! that one event again, with the same id, so the receiver can drop the copy.
//! A receiver that fails is retried with the outbox's backoff; later events wait behind
//! it (order is kept), none is lost.

use std::sync::Arc;
use std::time::Duration;

use boxless_core::{now_ms, rfc3339};
use boxless_net::http::{Url, post};
use boxless_store::{Event, Store};

use crate::backoff::Backoff;

/// How long one POST may take.
const POST_LIMIT: Duration = Duration::from_secs(10);

/// Where and how events go.
#[derive(Clone)]
pub struct WebhookSettings {
    /// The receiver.
    pub url: Url,
    /// The HMAC key.
    pub secret: Vec<u8>,
    /// HTTPS roots.
    pub tls: Arc<rustls::ClientConfig>,
    /// This server's id (the events' id prefix).
    pub server: String,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log.
        f.debug_struct("WebhookSettings")
            .field("url", &self.url)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256=");
    for b in tag.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The body of `e`.
pub fn body(server: &str, e: &Event) -> String {
    serde_json::json!({
        "id": format!("{server}-e{}", e.id),
        "type": e.kind,
        "created_at": rfc3339(e.created_ms),
        "server": server,
        "data": e.data,
    })
    .to_string()
}

/// The body POSTed to a recipient's own `webhook_url` for a new message (written at
/// deposit, in the outbox row).
pub fn notice_body(
    f: &boxless_store::SmsFacts<'_>,
    server: &str,
    transcript: Option<&str>,
) -> String {
    serde_json::json!({
        "type": "message.notice",
        "server": server,
        "recipient": f.message.recipient.to_string(),
        "caller": f.message.caller.map(|c| c.to_string()),
        "received_at": rfc3339(f.message.received_at_ms),
        "duration_ms": f.duration_ms,
        "link_number": f.link_number.to_string(),
        "web_url": f.web_link,
        "transcript": transcript,
    })
    .to_string()
}

/// POSTs notices to recipients' own webhooks, signed like the events (the receiver
/// checks `X-Boxless-Signature` with the operator's `webhook.secret_file` key).
#[derive(Clone)]
pub struct NoticePoster {
    /// The HMAC key.
    pub secret: Vec<u8>,
    /// HTTPS roots.
    pub tls: Arc<rustls::ClientConfig>,
    /// This server's id.
    pub server: String,
}

impl std::fmt::Debug for NoticePoster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoticePoster")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl NoticePoster {
    /// One POST of `job`'s body: 2xx is taken; 4xx but 408/429 is refused for good (the
    /// next channel); anything else is retried.
    pub async fn send(&self, job: &boxless_store::OutboxJob) -> Result<(), crate::SendError> {
        use crate::SendError;
        let url = job
            .address
            .as_deref()
            .and_then(Url::parse)
            .ok_or_else(|| SendError::permanent("the recipient's webhook_url is not usable"))?;
        let mid = job.message_id.clone().unwrap_or_default();
        let key = format!("{}-n{}", self.server, job.id);
        let sig = signature(&self.secret, job.text.as_bytes());
        let headers = [
            ("Content-Type", "application/json"),
            ("X-Boxless-Signature", sig.as_str()),
            ("X-Boxless-Event", "message.notice"),
            ("X-Boxless-Message-Id", mid.as_str()),
            ("Idempotency-Key", key.as_str()),
        ];
        match post(&url, &headers, job.text.as_bytes(), &self.tls, POST_LIMIT).await {
            Ok(a) if (200..300).contains(&a.status) => Ok(()),
            Ok(a) if (400..500).contains(&a.status) && a.status != 408 && a.status != 429 => {
                Err(SendError::permanent(format!(
                    "the recipient's webhook answered HTTP {}",
                    a.status
                )))
            }
            Ok(a) => Err(SendError::retry(format!("webhook: HTTP {}", a.status))),
            Err(e) => Err(SendError::retry(format!("webhook: {e}"))),
        }
    }
}

/// Sends the store's events until the process ends.
pub async fn run(store: Arc<Store>, s: WebhookSettings, mut backoff: Backoff) {
    let mut failures: u32 = 0;
    let mut last_prune = 0u64;
    loop {
        let now = now_ms();
        if now.saturating_sub(last_prune) > 60_000 {
            last_prune = now;
            let st = store.clone();
            if let Ok(Ok(dropped)) = st.write(move |st| st.prune_events(now)).await
                && dropped > 0
            {
                metrics::counter!("boxless_webhook_dropped_total").increment(dropped as u64);
                tracing::error!(dropped, "webhook: events undelivered for 7 days dropped");
            }
        }
        let st = store.clone();
        let next = match st.read(move |st| st.next_event()).await {
            Ok(Ok(e)) => e,
            other => {
                tracing::error!(?other, "webhook: reading the next event failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(e) = next else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let id = format!("{}-e{}", s.server, e.id);
        let text = body(&s.server, &e);
        let sig = signature(&s.secret, text.as_bytes());
        let headers = [
            ("Content-Type", "application/json"),
            ("X-Boxless-Signature", sig.as_str()),
            ("X-Boxless-Event", e.kind.as_str()),
            ("X-Boxless-Event-Id", id.as_str()),
            ("Idempotency-Key", id.as_str()),
        ];
        let res = post(&s.url, &headers, text.as_bytes(), &s.tls, POST_LIMIT).await;
        match res {
            Ok(a) if (200..300).contains(&a.status) => {
                let st = store.clone();
                let eid = e.id;
                if let Ok(Err(err)) | Err(err) = st
                    .write(move |st| st.event_sent(eid))
                    .await
                    .map_err(|e| e.to_string())
                    .map(|r| r.map_err(|e| e.to_string()))
                {
                    tracing::error!(error = %err, "webhook: recording a sent event failed; it will go again");
                }
                metrics::counter!("boxless_webhook_sent_total").increment(1);
                metrics::histogram!("boxless_webhook_delay_seconds")
                    .record(now_ms().saturating_sub(e.created_ms) as f64 / 1000.0);
                if failures > 0 {
                    tracing::info!(after = failures, "webhook: the receiver answers again");
                }
                failures = 0;
            }
            other => {
                failures += 1;
                metrics::counter!("boxless_webhook_failed_total").increment(1);
                let why = match other {
                    Ok(a) => format!("HTTP {}", a.status),
                    Err(e) => e.to_string(),
                };
                let delay = backoff.delay_ms(failures);
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(event = %id, error = %why, attempt = failures, retry_in_ms = delay, "webhook: not delivered; later events wait");
                }
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_body_names_the_event_once_and_for_all() {
        let e = Event {
            id: 7,
            kind: "message.heard".into(),
            data: serde_json::json!({"message_id": "ms1-x"}),
            created_ms: 0,
        };
        let v: serde_json::Value = serde_json::from_str(&body("ms1", &e)).unwrap();
        assert_eq!(v["id"], "ms1-e7");
        assert_eq!(v["type"], "message.heard");
        assert_eq!(v["created_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["data"]["message_id"], "ms1-x");
    }
}
