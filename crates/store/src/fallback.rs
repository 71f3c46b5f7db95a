//! Fallback between a message's channels, all of it in the one outbox.
//!
//! A deposit writes every step of the recipient's channels at once (`deposit_routed`):
//! step 0 due now, step `k` due `k * fallback_after` later. Then, in the transaction of
//! each outcome:
//! - a notice that reached its recipient (an SMS `delivered`, or `accepted` when no
//!   receipts are asked for; an e-mail or webhook the far end took) marks every later
//!   step still pending `skipped`;
//! - a notice that never will (`undeliverable`, `expired`, `blocked`, `opted_out`, or an
//!   SMSC or mail server refusing it for good), once no other notice of its step is still
//!   on its way, makes the next pending step due at once.
//!
//! A digest that went for merged notices stands for them: its outcome is theirs.
//!
//! Since the rows and their due times are all there is, a crash at any point leaves the
//! same plan to resume: nothing delivered is repeated (but for the one in flight, as with
//! any SMS), nothing is lost. Only notices of a message (`kind = 'message'`) fall back;
//! alerts, reminders and digests are SMS only.

use crate::sql::Cached as _;
use rusqlite::{OptionalExtension, Transaction, params};

use crate::{OutboxJob, Result, Store, sql_ms};

/// A row's message and step, when it is a message's notice.
fn place(tx: &Transaction<'_>, job: i64) -> Result<Option<(String, i64, String)>> {
    Ok(tx
        .one(
            "SELECT message_id, step, channel FROM outbox
             WHERE id = ?1 AND kind = 'message' AND message_id IS NOT NULL",
            [job],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?)
}

/// The message notices a digest stands for (none for any other row).
fn merged_into(tx: &Transaction<'_>, job: i64) -> Result<Vec<i64>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id FROM outbox WHERE digest_id = ?1 AND kind = 'message' AND message_id IS NOT NULL",
    )?;
    let v = stmt
        .query_map([job], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(v)
}

/// `job` reached its recipient: later steps are not needed (for a digest: those of every
/// message it stands for). Returns how many were skipped.
pub(crate) fn reached(tx: &Transaction<'_>, job: i64) -> Result<usize> {
    let mut n = 0;
    for m in merged_into(tx, job)? {
        n += reached(tx, m)?;
    }
    let Some((message, step, channel)) = place(tx, job)? else {
        return Ok(n);
    };
    let why = format!("not needed: the {channel} notice reached the recipient");
    Ok(n + tx.run(
        "UPDATE outbox SET state = 'skipped', last_error = ?3
         WHERE message_id = ?1 AND kind = 'message' AND step > ?2 AND state = 'pending'",
        params![message, step, why],
    )?)
}

/// `job` never will reach its recipient: when no other notice of its step is still on
/// its way, the next pending step is due at `now` (for a digest: that of every message
/// it stands for). Returns how many rows were brought forward.
pub(crate) fn gave_up(tx: &Transaction<'_>, job: i64, now: u64) -> Result<usize> {
    let mut n = 0;
    for m in merged_into(tx, job)? {
        // The digest was their notice: they failed with it.
        tx.run(
            "UPDATE outbox SET state = 'undeliverable', last_error = 'its digest was not delivered'
             WHERE id = ?1 AND state = 'merged'",
            [m],
        )?;
        n += gave_up(tx, m, now)?;
    }
    let Some((message, step, _)) = place(tx, job)? else {
        return Ok(n);
    };
    let waiting: bool = tx.one(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE message_id = ?1 AND kind = 'message'
             AND step = ?2 AND state IN ('pending', 'accepted', 'merged'))",
        params![message, step],
        |r| r.get(0),
    )?;
    if waiting {
        return Ok(n);
    }
    Ok(n + tx.run(
        "UPDATE outbox SET next_attempt_ms = MIN(next_attempt_ms, ?3)
         WHERE message_id = ?1 AND kind = 'message' AND state = 'pending' AND step = (
             SELECT MIN(step) FROM outbox WHERE message_id = ?1 AND kind = 'message'
                 AND step > ?2 AND state = 'pending')",
        params![message, step, sql_ms(now)],
    )?)
}

impl Store {
    /// Without delivery receipts an SMS the SMSC took counts as having reached its
    /// recipient (no later channel is tried).
    pub fn accepted_is_final(&self) {
        self.accepted_is_final
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn accepted_final(&self) -> bool {
        self.accepted_is_final
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The job will never be sent (`why` says which limit stopped it); its message stays
    /// stored and retrievable, and its next channel is tried.
    pub fn blocked(&self, job: &OutboxJob, why: &str, now: u64) -> Result<()> {
        self.ended(job, "blocked", why, now)
    }

    /// The destination opted out (STOP): never sent; its message stays stored and
    /// listed, and its next channel is tried.
    pub fn opted_out(&self, job: &OutboxJob, now: u64) -> Result<()> {
        self.ended(job, "opted_out", "the number opted out of SMS (STOP)", now)
    }

    /// The far end refused the notice for good (an SMSC error for a destination that
    /// takes no SMS, a mail server's 5xx): `undeliverable`, and its next channel is due
    /// at once.
    pub fn refused(&self, job: &OutboxJob, why: &str, now: u64) -> Result<()> {
        self.ended(job, "undeliverable", why, now)
    }

    fn ended(&self, job: &OutboxJob, state: &str, why: &str, now: u64) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.run(
            "UPDATE outbox SET state = ?2, last_error = ?3, final_ms = ?4,
                 attempts = attempts + (?2 = 'undeliverable')
             WHERE id = ?1",
            params![job.id, state, why, sql_ms(now)],
        )?;
        if state == "undeliverable" {
            crate::events::emit(
                &tx,
                self.events_on(),
                "notification.failed",
                serde_json::json!({
                    "message_id": job.message_id,
                    "channel": job.channel.as_str(),
                    "to": job.address.clone().unwrap_or_else(|| job.destination.to_string()),
                    "state": state,
                    "detail": why,
                }),
                now,
            )?;
        }
        gave_up(&tx, job.id, now)?;
        tx.commit()?;
        Ok(())
    }

    /// The mail server or the recipient's webhook took the notice: `accepted` (the
    /// furthest we can see), its message `notified`, later channels skipped.
    pub fn handed_over(&self, job: &OutboxJob, now: u64) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.run(
            "UPDATE outbox SET state = 'accepted', attempts = attempts + 1, sent_at_ms = ?2,
                 last_error = NULL
             WHERE id = ?1",
            params![job.id, sql_ms(now)],
        )?;
        tx.run(
            "UPDATE messages SET state = 'notified', state_changed_ms = ?2
             WHERE id = ?1 AND state = 'new'",
            params![job.message_id, sql_ms(now)],
        )?;
        crate::events::emit(
            &tx,
            self.events_on(),
            "notification.delivered",
            serde_json::json!({
                "message_id": job.message_id,
                "channel": job.channel.as_str(),
                "to": job.address,
                "state": "accepted",
            }),
            now,
        )?;
        reached(&tx, job.id)?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use boxless_core::PhoneNumber;
    use boxless_core::recipient::{Channel, Route};

    use crate::{Delivery, Lane, Receipted, Store, temp_store, test_message};

    const MIN: u64 = 60_000;

    fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse_e164(s).unwrap()
    }

    /// A message for +15551230002 notified by SMS (to it and +15551230009), then e-mail,
    /// then webhook, `after` apart.
    fn deposit(s: &Store, after: u64) -> String {
        let routes = [
            Route::Sms(vec![n("+15551230002"), n("+15551230009")]),
            Route::Email("r@example.net".into()),
            Route::Webhook("https://hooks.example.net/r".into()),
        ];
        s.deposit_routed(&test_message(), &routes, after, |_, c| {
            format!("{} text", c.as_str())
        })
        .unwrap()
        .id
    }

    /// A message notified by SMS to its recipient, then by e-mail five minutes later.
    fn sms_then_email(s: &Store) -> String {
        let routes = [
            Route::Sms(vec![n("+15551230002")]),
            Route::Email("r@example.net".into()),
        ];
        s.deposit_routed(&test_message(), &routes, 5 * MIN, |_, _| "t".into())
            .unwrap()
            .id
    }

    fn states(s: &Store, id: &str) -> Vec<(String, String)> {
        s.get(id)
            .unwrap()
            .unwrap()
            .notifications
            .into_iter()
            .map(|n| (n.channel, n.state))
            .collect()
    }

    /// Every lane's due notices: SMS first.
    fn due(s: &Store, at: u64) -> Vec<crate::OutboxJob> {
        let mut v = s.due(at, 10, Lane::Sms).unwrap();
        v.extend(s.due(at, 10, Lane::Other).unwrap());
        v
    }

    fn due_channels(s: &Store, at: u64) -> Vec<Channel> {
        due(s, at).into_iter().map(|j| j.channel).collect()
    }

    #[test]
    fn each_step_waits_its_turn_and_a_delivered_sms_skips_the_rest() {
        let (s, d) = temp_store("fallback-delivered");
        let now = boxless_core::now_ms();
        let id = deposit(&s, 5 * MIN);
        assert_eq!(due_channels(&s, now + 1000), [Channel::Sms, Channel::Sms]);
        assert_eq!(
            due_channels(&s, now + 5 * MIN + 1000),
            [Channel::Sms, Channel::Sms, Channel::Email]
        );
        let jobs = due(&s, now + 1000);
        s.part_accepted(jobs[0].id, 0, "abc").unwrap();
        s.accepted(&jobs[0], 1, None, now).unwrap();
        // The second number's SMS is still on its way: one delivery is enough.
        let r = s
            .receipt("abc", Delivery::Delivered, None, now + 2000)
            .unwrap();
        assert!(matches!(r, Receipted::Settled(_)));
        assert_eq!(
            states(&s, &id),
            [
                ("sms".into(), "delivered".into()),
                ("sms".into(), "pending".into()),
                ("email".into(), "skipped".into()),
                ("webhook".into(), "skipped".into())
            ]
        );
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn the_next_channel_is_due_at_once_when_every_sms_of_the_step_failed() {
        let (s, d) = temp_store("fallback-failed");
        let now = boxless_core::now_ms();
        let id = deposit(&s, 5 * MIN);
        let jobs = due(&s, now + 1000);
        s.refused(&jobs[0], "SMSC: ESME_RINVDSTADR", now + 1000)
            .unwrap();
        // The other number's SMS may still arrive: the e-mail waits its turn.
        assert_eq!(due_channels(&s, now + 2000), [Channel::Sms]);
        s.opted_out(&jobs[1], now + 2000).unwrap();
        assert_eq!(due_channels(&s, now + 2000), [Channel::Email]);
        let email = due(&s, now + 2000).remove(0);
        assert_eq!(email.address.as_deref(), Some("r@example.net"));
        assert_eq!(email.text, "email text");
        s.handed_over(&email, now + 3000).unwrap();
        assert_eq!(
            states(&s, &id),
            [
                ("sms".into(), "undeliverable".into()),
                ("sms".into(), "opted_out".into()),
                ("email".into(), "accepted".into()),
                ("webhook".into(), "skipped".into())
            ]
        );
        let m = s.get(&id).unwrap().unwrap();
        assert_eq!(m.state.as_str(), "notified");
        assert!(due(&s, now + 60 * MIN).is_empty());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn an_undeliverable_receipt_moves_on_and_a_reopened_store_keeps_the_plan() {
        let (s, d) = temp_store("fallback-receipt");
        let now = boxless_core::now_ms();
        let id = sms_then_email(&s);
        let sms = due(&s, now + 1000).remove(0);
        s.part_accepted(sms.id, 0, "9").unwrap();
        s.accepted(&sms, 1, None, now + 1000).unwrap();
        s.receipt("9", Delivery::Undeliverable, Some("UNDELIV"), now + 1500)
            .unwrap();
        drop(s);
        // As after a crash: the plan is the rows.
        let pool = boxless_core::LinkPool::parse(&["+18005550100-+18005550109"]).unwrap();
        let s = Store::open(&d, "ms1", pool).unwrap();
        let due = due(&s, now + 2000);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].channel, Channel::Email);
        assert_eq!(states(&s, &id)[0].1, "undeliverable");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_digest_that_reaches_the_recipient_skips_the_later_steps_of_what_it_carries() {
        let (s, d) = temp_store("fallback-digest");
        let now = boxless_core::now_ms();
        let id = sms_then_email(&s);
        let sms = s.due(now + 1000, 10, Lane::Sms).unwrap().remove(0);
        let digest_id = s.merge(&sms, now + 1000, now + 2000).unwrap();
        let digest = s.due(now + 2000, 10, Lane::Sms).unwrap().remove(0);
        assert_eq!(digest.id, digest_id);
        s.part_accepted(digest.id, 0, "d1").unwrap();
        s.accepted(&digest, 1, Some("digest"), now + 2000).unwrap();
        s.receipt("d1", Delivery::Delivered, None, now + 3000)
            .unwrap();
        assert_eq!(
            states(&s, &id),
            [
                ("sms".into(), "merged".into()),
                ("email".into(), "skipped".into())
            ]
        );
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn without_receipts_an_accepted_sms_is_enough() {
        let (s, d) = temp_store("fallback-noreceipts");
        s.accepted_is_final();
        let now = boxless_core::now_ms();
        let id = deposit(&s, MIN);
        for j in due(&s, now + 1000).iter().take(1) {
            s.accepted(j, 1, None, now + 1000).unwrap();
        }
        assert_eq!(states(&s, &id)[2].1, "skipped");
        let _ = std::fs::remove_dir_all(d);
    }
}
