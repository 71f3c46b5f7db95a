//! The outbox driver: drains due SMS through a [`Sender`], records each outcome, and
//! sleeps until the next one is due or a deposit wakes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use boxless_core::now_ms;
use boxless_store::Store;
use tokio::sync::Notify;

use crate::backoff::Backoff;
use crate::sender::Sender;
use crate::spend::SpendPolicy;

/// Pending SMS above this make the notifier report itself unhealthy.
pub const MAX_BACKLOG: u64 = 100_000;

/// Shared handles of one server's notifier.
#[derive(Debug, Default)]
pub struct NotifierHandle {
    /// Wakes the worker after a deposit.
    pub wake: Notify,
    /// True while the worker runs and its backlog is bounded.
    pub healthy: AtomicBool,
}

/// Runs until `stop` is set and nothing is due; errors of the store are logged and retried.
pub async fn run(
    store: Arc<Store>,
    mut sender: Sender,
    mut backoff: Backoff,
    spend: SpendPolicy,
    handle: Arc<NotifierHandle>,
) {
    handle.healthy.store(true, Ordering::Relaxed);
    loop {
        let now = now_ms();
        let s = store.clone();
        let jobs = match tokio::task::spawn_blocking(move || s.due(now, 64)).await {
            Ok(Ok(j)) => j,
            other => {
                tracing::error!(?other, "outbox: reading due SMS failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let full = jobs.len() == 64;
        for job in jobs {
            let span = tracing::info_span!("outbox", job = job.id, to = %job.destination);
            let _e = span.enter();
            if !spend.allows(job.destination) {
                metrics::counter!("boxless_sms_blocked_total", "reason" => "prefix").increment(1);
                tracing::warn!("SMS blocked: destination outside sms.allowed_prefixes");
                let s = store.clone();
                let res = tokio::task::spawn_blocking(move || {
                    s.blocked(&job, "destination not in sms.allowed_prefixes")
                })
                .await;
                if let Ok(Err(e)) = res {
                    tracing::error!(error = %e, "outbox: recording a block failed");
                }
                continue;
            }
            let outcome = sender.submit(&job).await;
            let s = store.clone();
            let now = now_ms();
            let res = match outcome {
                Ok(()) => {
                    metrics::counter!("boxless_sms_sent_total").increment(1);
                    tokio::task::spawn_blocking(move || s.sent(&job, now)).await
                }
                Err(e) => {
                    metrics::counter!("boxless_sms_failed_total").increment(1);
                    let delay = backoff.delay_ms(job.attempts + 1);
                    tracing::warn!(error = %e, attempt = job.attempts + 1, retry_in_ms = delay, "SMS not accepted");
                    let detail = e.detail;
                    tokio::task::spawn_blocking(move || s.failed(&job, now + delay, &detail)).await
                }
            };
            if let Ok(Err(e)) | Err(e) = res
                .map_err(|e| e.to_string())
                .map(|r| r.map_err(|e| e.to_string()))
            {
                tracing::error!(error = %e, "outbox: recording an outcome failed");
            }
        }
        if full {
            continue;
        }
        let s = store.clone();
        let (next, pending) = tokio::task::spawn_blocking(move || {
            (s.next_due().ok().flatten(), s.pending().unwrap_or(0))
        })
        .await
        .unwrap_or((None, 0));
        handle
            .healthy
            .store(pending < MAX_BACKLOG, Ordering::Relaxed);
        metrics::gauge!("boxless_sms_pending").set(pending as f64);
        let wait = next.map_or(1000, |t| t.saturating_sub(now_ms()).min(1000));
        tokio::select! {
            _ = handle.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }
}
