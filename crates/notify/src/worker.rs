//! The outbox drivers: one drains due SMS through a [`Sender`], the other e-mail and
//! webhook notices ([`Notices`]); each records every outcome and sleeps until its next
//! notice is due or a deposit wakes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use boxless_core::now_ms;
use boxless_core::recipient::Languages;
use boxless_store::{Directory, JobKind, Lane, OutboxJob, Outlook, Store};
use tokio::sync::Notify;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::limits::Limits;
use crate::sender::Sender;
use crate::spend::{Spend, SpendPolicy};

/// Pending SMS above this make the notifier report itself unhealthy.
pub const MAX_BACKLOG: u64 = 100_000;
/// Due SMS read in one turn; a full batch means more wait, and the next turn reads at once.
const SMS_BATCH: usize = 64;
/// Due e-mail and webhook notices read in one turn: fewer than SMS, since each may hold the
/// worker for a mail server's or a webhook's answer.
const NOTICE_BATCH: usize = 16;

/// Shared handles of one server's notifier.
#[derive(Debug, Default)]
pub struct NotifierHandle {
    /// Wakes the SMS worker after a deposit.
    pub wake: Notify,
    /// Wakes the e-mail and webhook worker after a deposit.
    pub wake_others: Notify,
    /// True while the worker runs and its backlog is bounded.
    pub healthy: AtomicBool,
    /// The limits counted across the cluster, shared by the process's servers.
    pub limits: Arc<Limits>,
}

/// What the SMS worker applies to each due SMS.
#[derive(Debug, Clone)]
pub struct SmsRules {
    /// Prefixes and the hourly limit.
    pub spend: SpendPolicy,
    /// Minutes east of UTC for the times a digest prints.
    pub utc_offset_min: i32,
    /// The language of a digest (written when it goes).
    pub languages: Languages,
}

/// Runs until the process ends; errors of the store are logged and retried.
pub async fn run(
    store: Arc<Store>,
    directory: Arc<Directory>,
    mut sender: Sender,
    mut backoff: Backoff,
    rules: SmsRules,
    limits: Arc<Limits>,
    handle: Arc<NotifierHandle>,
) {
    handle.healthy.store(true, Ordering::Relaxed);
    // Shared with each job's blocking step without copying the prefix list.
    let rules = Arc::new(rules);
    let turn = Turn {
        store: &store,
        directory: &directory,
        rules: &rules,
        limits: &limits,
        handle: &handle,
    };
    loop {
        let Some(due) = outlook(&store, SMS_BATCH, Lane::Sms).await else {
            continue;
        };
        let (full, batch) = (due.jobs.len() == SMS_BATCH, due.jobs.len() as u64);
        // Every job went and is settled: the outlook's next time still holds, and the
        // pending count is short of the batch.
        let mut all_went = true;
        for job in due.jobs {
            // Entered only while the job's own future runs: a guard held across its awaits
            // would tag whatever else this thread polled meanwhile.
            let span = tracing::info_span!("outbox", job = job.id, to = %job.destination);
            all_went &= submit_one(&turn, &mut sender, &mut backoff, job)
                .instrument(span)
                .await;
        }
        if full {
            continue;
        }
        let (next, pending) = if all_went {
            (due.later, due.pending.saturating_sub(batch))
        } else {
            let s = store.clone();
            s.read(move |s| {
                (
                    s.next_due(Lane::Sms).ok().flatten(),
                    s.pending().unwrap_or(0),
                )
            })
            .await
            .unwrap_or((None, 0))
        };
        handle
            .healthy
            .store(pending < MAX_BACKLOG, Ordering::Relaxed);
        metrics::gauge!("boxless_sms_pending").set(pending as f64);
        sender.keep_bound().await;
        until_due(next, &handle.wake).await;
    }
}

/// What the SMS worker's turn hands each job.
struct Turn<'a> {
    store: &'a Arc<Store>,
    directory: &'a Arc<Directory>,
    rules: &'a Arc<SmsRules>,
    limits: &'a Limits,
    handle: &'a NotifierHandle,
}

/// Submits one due SMS (after the spend policy) and records its outcome; whether it
/// went.
async fn submit_one(
    turn: &Turn<'_>,
    sender: &mut Sender,
    backoff: &mut Backoff,
    job: OutboxJob,
) -> bool {
    let Turn {
        store,
        directory,
        rules,
        limits,
        handle,
    } = turn;
    let spent = apply_spend(store, directory, rules, limits, job).await;
    let Some((mut job, counted_at)) = spent else {
        // Blocked or opted out may have brought the next channel forward.
        handle.wake_others.notify_one();
        return false;
    };
    let outcome = sender.submit(&job).await;
    let went = outcome.is_ok();
    if outcome.is_err() {
        // Not sent: its place in the hour is free again.
        limits.give_back_sms(job.destination, counted_at).await;
    }
    let s = Arc::clone(store);
    let now = now_ms();
    let res = match outcome {
        Ok(parts) => {
            metrics::counter!("boxless_sms_sent_total").increment(1);
            if parts > 1 {
                metrics::counter!("boxless_sms_parts_total").increment(parts as u64);
            }
            // A digest's text is written when it goes: keep what went.
            let text = (job.kind == JobKind::Digest).then(|| std::mem::take(&mut job.text));
            s.write(move |s| {
                s.accepted(&job, parts, text.as_deref(), now)
                    .map(|settled| settled.iter().for_each(crate::peers::record_settled))
            })
            .await
        }
        Err(e) if e.permanent => {
            metrics::counter!("boxless_sms_failed_total").increment(1);
            tracing::warn!(error = %e, "SMS refused for good: the next channel, if any");
            let r = s.write(move |s| s.refused(&job, &e.detail, now)).await;
            handle.wake_others.notify_one();
            r
        }
        Err(e) => {
            metrics::counter!("boxless_sms_failed_total").increment(1);
            let delay = backoff.delay_ms(job.attempts + 1);
            tracing::warn!(error = %e, attempt = job.attempts + 1, retry_in_ms = delay, "SMS not accepted");
            let detail = e.detail;
            s.write(move |s| s.failed(&job, now + delay, &detail)).await
        }
    };
    recorded(res);
    went
}

/// How e-mail and webhook notices go.
#[derive(Debug, Default)]
pub struct Notices {
    /// The e-mail channel, when `[email] smtp` is set.
    pub email: Option<crate::email::Mailer>,
    /// Recipients' own webhooks, when a webhook secret is set.
    pub webhook: Option<crate::webhook::NoticePoster>,
}

impl Notices {
    async fn send(&self, job: &OutboxJob) -> Result<(), crate::SendError> {
        use boxless_core::recipient::Channel;
        match (job.channel, &self.email, &self.webhook) {
            (Channel::Email, Some(m), _) => m.send(job).await,
            (Channel::Webhook, _, Some(w)) => w.send(job).await,
            // Configured when the notice was written, not now: nothing to send it with.
            (c, _, _) => Err(crate::SendError::permanent(format!(
                "no {} channel on this server now",
                c.as_str()
            ))),
        }
    }
}

/// Drains the e-mail and webhook notices of one server's store; a permanent refusal
/// moves the message on to its next channel, anything else is retried with `backoff`.
pub async fn run_notices(
    store: Arc<Store>,
    notices: Notices,
    mut backoff: Backoff,
    handle: Arc<NotifierHandle>,
) {
    loop {
        let Some(due) = outlook(&store, NOTICE_BATCH, Lane::Other).await else {
            continue;
        };
        let full = due.jobs.len() == NOTICE_BATCH;
        let mut all_went = true;
        for job in due.jobs {
            let channel = job.channel.as_str();
            let outcome = notices.send(&job).await;
            all_went &= outcome.is_ok();
            let s = store.clone();
            let now = now_ms();
            let res = match outcome {
                Ok(()) => {
                    metrics::counter!("boxless_notices_sent_total", "channel" => channel)
                        .increment(1);
                    tracing::info!(job = job.id, channel, message = ?job.message_id, "notice taken");
                    s.write(move |s| s.handed_over(&job, now)).await
                }
                Err(e) if e.permanent => {
                    metrics::counter!("boxless_notices_failed_total", "channel" => channel)
                        .increment(1);
                    tracing::warn!(job = job.id, channel, error = %e, "notice refused for good: the next channel, if any");
                    s.write(move |s| s.refused(&job, &e.detail, now)).await
                }
                Err(e) => {
                    metrics::counter!("boxless_notices_failed_total", "channel" => channel)
                        .increment(1);
                    let delay = backoff.delay_ms(job.attempts + 1);
                    tracing::warn!(job = job.id, channel, error = %e, attempt = job.attempts + 1, retry_in_ms = delay, "notice not taken");
                    s.write(move |s| s.failed(&job, now + delay, &e.detail))
                        .await
                }
            };
            recorded(res);
        }
        if full {
            continue;
        }
        let next = if all_went {
            due.later
        } else {
            let s = store.clone();
            s.read(move |s| s.next_due(Lane::Other).ok().flatten())
                .await
                .unwrap_or(None)
        };
        until_due(next, &handle.wake_others).await;
    }
}

/// A worker's pause after a turn short of a full batch: until its next notice is due at
/// `next` (ms), or `wake` (a deposit) comes first. A second at most: a receipt brings a
/// fallback forward from another task without waking it.
async fn until_due(next: Option<u64>, wake: &Notify) {
    let wait = next.map_or(1000, |t| t.saturating_sub(now_ms()).min(1000));
    tokio::select! {
        _ = wake.notified() => {}
        _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
    }
}

/// The notices of `lane` due now (at most `limit`) and when the next of the others is:
/// one turn on a reader thread a wake. None after a failed read (logged, a second's pause).
async fn outlook(store: &Arc<Store>, limit: usize, lane: Lane) -> Option<Outlook> {
    let (s, now) = (store.clone(), now_ms());
    match s.read(move |s| s.outlook(now, limit, lane)).await {
        Ok(Ok(j)) => Some(j),
        other => {
            tracing::error!(?other, ?lane, "outbox: reading due notices failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
            None
        }
    }
}

/// Logs an outcome the store could not record (the notice stays due: it goes again).
fn recorded<T>(res: boxless_store::Result<boxless_store::Result<T>>) {
    if let Ok(Err(e)) | Err(e) = res {
        tracing::error!(error = %e, "outbox: recording an outcome failed");
    }
}

/// Applies the spend limits to a due job: the job to submit (a digest with its text and
/// link written now) with the time its SMS was counted at in the cluster's hour, or None
/// when it is blocked, merged or deferred.
async fn apply_spend(
    store: &Arc<Store>,
    directory: &Arc<Directory>,
    rules: &Arc<SmsRules>,
    limits: &Limits,
    job: OutboxJob,
) -> Option<(OutboxJob, u64)> {
    let now = now_ms();
    let to = job.destination;
    // Checked when it is due, so a STOP that came after the deposit counts.
    let opted_out = job.kind != JobKind::Confirm && directory.opted_out(to);
    if opted_out || !rules.spend.allows(to) {
        let res = store
            .write(move |s| {
                if opted_out {
                    metrics::counter!("boxless_sms_opted_out_total").increment(1);
                    tracing::info!(%to, "SMS not sent: the number opted out (STOP)");
                    s.opted_out(&job, now)
                } else {
                    metrics::counter!("boxless_sms_blocked_total", "reason" => "prefix")
                        .increment(1);
                    tracing::warn!(%to, "SMS blocked: destination outside sms.allowed_prefixes");
                    s.blocked(&job, "destination not in sms.allowed_prefixes", now)
                }
            })
            .await;
        recorded(res);
        return None;
    }
    // The hour is the cluster's: counted (and this SMS with it) before deciding, so two
    // servers cannot both take its last place.
    let max = rules.spend.max_per_hour;
    let taken = limits
        .take_sms(to, now, max, job.kind == JobKind::Confirm)
        .await;
    let window = taken.before;
    let spend = rules.spend.decide(&job, window, now);
    if spend == Spend::Send && job.kind != JobKind::Digest {
        // The common case writes nothing: no turn on the store's writer thread (each turn
        // is a wake of a thread gone cold since its last, bench/RESULTS.md).
        return Some((job, now));
    }
    let (s, rules2, dir) = (store.clone(), rules.clone(), directory.clone());
    let res = s
        .write(move |s| -> boxless_store::Result<Option<OutboxJob>> {
            match spend {
                // A digest, written as it goes.
                Spend::Send => {
                    let facts = s.digest_facts(job.id)?;
                    let entry = dir.get(job.destination).ok().flatten();
                    let lang = rules2.languages.for_number(job.destination, entry.as_ref());
                    Ok(Some(OutboxJob {
                        text: crate::text::digest_sms(&facts, rules2.utc_offset_min, lang),
                        source: facts.link,
                        ..job
                    }))
                }
                Spend::Block => {
                    s.blocked(&job, "destination not in sms.allowed_prefixes", now)?;
                    Ok(None)
                }
                Spend::Merge { digest_at } => {
                    metrics::counter!("boxless_sms_merged_total", "reason" => "hourly_limit")
                        .increment(1);
                    tracing::warn!(
                        to = %job.destination,
                        sent_last_hour = window.sent,
                        "SMS merged into a digest: sms.max_per_recipient_per_hour reached"
                    );
                    s.merge(&job, now, digest_at)?;
                    Ok(None)
                }
                Spend::Defer { until } => {
                    s.defer(&job, until)?;
                    Ok(None)
                }
            }
        })
        .await;
    let job = match res {
        Ok(Ok(j)) => j,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "outbox: applying spend limits failed");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "outbox: spend task failed");
            None
        }
    };
    match job {
        Some(job) => Some((job, now)),
        None => {
            if taken.granted {
                limits.give_back_sms(to, now).await;
            }
            None
        }
    }
}
