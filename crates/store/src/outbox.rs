//! The notification outbox: due jobs, their outcomes, and the spend limits that live in
//! the store so that a restart resets none of them (docs/sms.md, "Limits").
//!
//! - A burst of missed-call alerts from one caller to one recipient is one SMS: a new
//!   alert within `merge_ms` of the previous one joins it (while it waits) or is kept as
//!   `merged` (once it went out).
//! - Past `max_per_recipient_per_hour` SMS sent to a number in the last rolling hour,
//!   further jobs for it are `merged` into one pending digest, due when the window has
//!   room again; the digest counts as an SMS too, so a number never gets more than the
//!   limit per rolling hour from one server.
//!
//! Every function takes `now`, so tests run on virtual time.

use crate::sql::Cached as _;
use boxless_core::PhoneNumber;
use boxless_core::recipient::Channel;
use rusqlite::{Connection, OptionalExtension, params};

use crate::{Result, Store, sql_ms};

/// One rolling hour.
pub const HOUR_MS: u64 = 3_600_000;

/// Finished rows that belong to no message (missed-call alerts, digests and the notices
/// merged into them) are kept this long after their last change, longer than the hour
/// they count in and than any missed-call merge window, then pruned: a flood of short
/// calls cannot grow the outbox without end.
pub const KEEP_FINISHED_MS: u64 = 2 * HOUR_MS;

/// What a job notifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// A stored message.
    Message,
    /// A call too short to keep (possibly several, merged).
    MissedCall,
    /// A message about to expire.
    Reminder,
    /// Notices merged after the hourly limit.
    Digest,
    /// The one answer to a STOP or START: sent even to a number that opted out.
    Confirm,
}

impl JobKind {
    fn parse(s: &str) -> JobKind {
        match s {
            "missed_call" => JobKind::MissedCall,
            "reminder" => JobKind::Reminder,
            "digest" => JobKind::Digest,
            "confirm" => JobKind::Confirm,
            _ => JobKind::Message,
        }
    }
}

/// A notice waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxJob {
    /// Row id.
    pub id: i64,
    /// How it goes.
    pub channel: Channel,
    /// The e-mail address or URL (None for an SMS: it goes to `destination`).
    pub address: Option<String>,
    /// Its place in its message's fallback order (0: first).
    pub step: u32,
    /// The message it notifies (None for a missed-call alert or a digest).
    pub message_id: Option<String>,
    /// What it notifies.
    pub kind: JobKind,
    /// Destination number (for an e-mail or a webhook: the recipient).
    pub destination: PhoneNumber,
    /// Source number (the link number, or the caller for a missed-call alert).
    pub source: Option<PhoneNumber>,
    /// The text (empty for a digest: written when it goes).
    pub text: String,
    /// Attempts so far.
    pub attempts: u32,
}

/// Which worker a notice waits for: SMS go through the SMSC session, e-mail and webhook
/// notices through their own worker, so that a slow mail server never holds SMS back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// SMS.
    Sms,
    /// E-mail and webhook notices.
    Other,
}

/// SMS sent to one number in the last rolling hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// How many.
    pub sent: u32,
    /// When the oldest of them went (ms); the window has room again an hour later.
    pub oldest_ms: Option<u64>,
}

/// What a digest says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DigestFacts {
    /// Voice messages merged into it.
    pub messages: u32,
    /// Missed calls merged into it.
    pub missed_calls: u32,
    /// Reminders merged into it.
    pub reminders: u32,
    /// Distinct callers, most recent first (None: withheld).
    pub callers: Vec<Option<PhoneNumber>>,
    /// The link number of the newest message, to call back.
    pub link: Option<PhoneNumber>,
    /// When the first merged notice was queued (ms).
    pub since_ms: u64,
}

/// Adds the outbox columns of stores made before spend limits existed.
pub(crate) fn migrate(conn: &Connection) -> Result<()> {
    for (col, ddl) in [
        (
            "kind",
            "ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'message'",
        ),
        ("caller", "ALTER TABLE outbox ADD COLUMN caller INTEGER"),
        (
            "created_ms",
            "ALTER TABLE outbox ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0",
        ),
        (
            "digest_id",
            "ALTER TABLE outbox ADD COLUMN digest_id INTEGER",
        ),
        (
            "merged_count",
            "ALTER TABLE outbox ADD COLUMN merged_count INTEGER NOT NULL DEFAULT 1",
        ),
        (
            "parts_total",
            "ALTER TABLE outbox ADD COLUMN parts_total INTEGER",
        ),
        ("final_ms", "ALTER TABLE outbox ADD COLUMN final_ms INTEGER"),
        (
            "step",
            "ALTER TABLE outbox ADD COLUMN step INTEGER NOT NULL DEFAULT 0",
        ),
        ("address", "ALTER TABLE outbox ADD COLUMN address TEXT"),
    ] {
        crate::add_column(conn, "outbox", col, ddl)?;
    }
    // `sent` meant "the SMSC took it", which is `accepted` now that receipts follow. A
    // message's notices are found by its id (listings, expiry, takeover): without
    // `outbox_message` each look-up reads the whole outbox, a month of notices.
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS outbox_dest_sent ON outbox(destination, sent_at_ms);
         CREATE INDEX IF NOT EXISTS outbox_missed ON outbox(destination, kind, created_ms);
         CREATE INDEX IF NOT EXISTS outbox_message ON outbox(message_id);
         UPDATE outbox SET state = 'accepted', parts_total = 1 WHERE state = 'sent';",
    )?;
    conn.execute_batch(crate::receipts::SCHEMA)?;
    Ok(())
}

fn number(v: Option<i64>) -> Option<PhoneNumber> {
    v.and_then(|v| PhoneNumber::parse_e164(&format!("+{v}")))
}

/// The pending notices of one lane whose time has come, oldest first.
pub(crate) const DUE: &str = "SELECT id, message_id, destination, source, text, attempts, kind,
        channel, address, step
    FROM outbox WHERE state = 'pending' AND next_attempt_ms <= ?1 AND (channel = 'sms') = ?3
    ORDER BY next_attempt_ms, id LIMIT ?2";

/// What [`Store::outlook`] read.
#[derive(Debug, Default)]
pub struct Outlook {
    /// Due now, oldest first.
    pub jobs: Vec<OutboxJob>,
    /// When the first notice of the lane not in `jobs` comes due (ms), if any. Exact for
    /// as long as nothing is queued or re-timed after the read: a queue wakes the notifier,
    /// and a notifier that re-timed one of `jobs` reads again.
    pub later: Option<u64>,
    /// Notices pending, every lane.
    pub pending: u64,
}

impl Store {
    /// Queues a missed-call alert (no message kept). Within `merge_ms` of the previous
    /// alert from the same caller to the same recipient it joins that one: a waiting
    /// alert is rewritten by `render(calls, now)`; one already sent (or blocked) stays the
    /// only SMS and this call is recorded as `merged`. Returns true when an SMS is queued
    /// or rewritten. With `elsewhere`, another server's alert covers this burst (the
    /// cluster's count said so): the call is recorded as `merged` and nothing is queued.
    pub fn missed_call(
        &self,
        recipient: PhoneNumber,
        caller: Option<PhoneNumber>,
        now: u64,
        merge_ms: u64,
        elsewhere: bool,
        render: impl FnOnce(u32) -> String,
    ) -> Result<bool> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let (dest, from) = (recipient.as_u64() as i64, caller.map(|c| c.as_u64() as i64));
        let previous: Option<(i64, String, u32)> = tx
            .one(
                "SELECT id, state, merged_count FROM outbox
                 WHERE destination = ?1 AND kind = 'missed_call' AND caller IS ?2 AND created_ms >= ?3
                 ORDER BY created_ms DESC, id DESC LIMIT 1",
                params![dest, from, sql_ms(now.saturating_sub(merge_ms))],
                |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u32)),
            )
            .optional()?;
        let queued = match previous {
            _ if elsewhere => {
                tx.run(
                    "INSERT INTO outbox (message_id, channel, destination, source, text, state, next_attempt_ms, kind, caller, created_ms, last_error)
                     VALUES (NULL, 'sms', ?1, ?2, '', 'merged', ?3, 'missed_call', ?2, ?3, 'same caller as another server''s alert just now')",
                    params![dest, from, sql_ms(now)],
                )?;
                false
            }
            Some((id, state, count)) if state == "pending" => {
                tx.run(
                    "UPDATE outbox SET merged_count = ?2, created_ms = ?3, text = ?4 WHERE id = ?1",
                    params![id, count + 1, sql_ms(now), render(count + 1)],
                )?;
                true
            }
            Some(_) => {
                tx.run(
                    "INSERT INTO outbox (message_id, channel, destination, source, text, state, next_attempt_ms, kind, caller, created_ms, last_error)
                     VALUES (NULL, 'sms', ?1, ?2, '', 'merged', ?3, 'missed_call', ?2, ?3, 'same caller as an alert just sent')",
                    params![dest, from, sql_ms(now)],
                )?;
                false
            }
            None => {
                tx.run(
                    "INSERT INTO outbox (message_id, channel, destination, source, text, state, next_attempt_ms, kind, caller, created_ms)
                     VALUES (NULL, 'sms', ?1, ?2, ?3, 'pending', ?4, 'missed_call', ?2, ?4)",
                    params![dest, from, render(1), sql_ms(now)],
                )?;
                true
            }
        };
        crate::events::emit(
            &tx,
            self.events_on(),
            "missed_call",
            serde_json::json!({
                "recipient": recipient.to_string(),
                "caller": caller.map(|c| c.to_string()),
                "at": boxless_core::rfc3339(now),
            }),
            now,
        )?;
        tx.commit()?;
        Ok(queued)
    }

    /// Notices of `lane` due at `now`, oldest first.
    pub fn due(&self, now: u64, limit: usize, lane: Lane) -> Result<Vec<OutboxJob>> {
        if self.held() {
            return Ok(Vec::new());
        }
        let db = self.read_db();
        let mut stmt = db.prepare_cached(DUE)?;
        let jobs: Vec<OutboxJob> = stmt
            .query_map(params![sql_ms(now), limit as i64, lane == Lane::Sms], |r| {
                let kind: String = r.get(6)?;
                let channel: String = r.get(7)?;
                Ok(OutboxJob {
                    id: r.get(0)?,
                    channel: Channel::parse(&channel).unwrap_or(Channel::Sms),
                    address: r.get(8)?,
                    step: r.get::<_, i64>(9)?.max(0) as u32,
                    message_id: r.get(1)?,
                    kind: JobKind::parse(&kind),
                    destination: number(r.get(2)?).ok_or(rusqlite::Error::InvalidQuery)?,
                    source: number(r.get(3)?),
                    text: r.get(4)?,
                    attempts: r.get::<_, i64>(5)? as u32,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        drop(stmt);
        drop(db);
        Ok(jobs
            .into_iter()
            .map(|mut j| {
                j.text = self.with_web_link(std::mem::take(&mut j.text), j.message_id.as_deref());
                j
            })
            .collect())
    }

    /// SMS sent to `to` in the rolling hour before `now`.
    pub fn window(&self, to: PhoneNumber, now: u64) -> Result<Window> {
        let (sent, oldest): (i64, Option<i64>) = self.read_db().one(
            "SELECT COUNT(*), MIN(sent_at_ms) FROM outbox
             WHERE destination = ?1 AND sent_at_ms > ?2 AND channel = 'sms'",
            params![to.as_u64() as i64, sql_ms(now.saturating_sub(HOUR_MS))],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Window {
            sent: sent as u32,
            oldest_ms: oldest.map(|v| v as u64),
        })
    }

    /// When the SMS accepted for `to` after `since` went (ms, oldest first, at most
    /// `limit`): what seeds a process's count of the rolling hour after a restart.
    pub fn sent_times(&self, to: PhoneNumber, since: u64, limit: usize) -> Result<Vec<u64>> {
        let db = self.read_db();
        let mut stmt = db.prepare_cached(
            "SELECT sent_at_ms FROM outbox
             WHERE destination = ?1 AND sent_at_ms > ?2 AND channel = 'sms'
             ORDER BY sent_at_ms DESC LIMIT ?3",
        )?;
        let mut v: Vec<u64> = stmt
            .query_map(
                params![to.as_u64() as i64, sql_ms(since), limit as i64],
                |r| r.get::<_, i64>(0),
            )?
            .map(|r| r.map(|v| v as u64))
            .collect::<rusqlite::Result<_>>()?;
        v.reverse();
        Ok(v)
    }

    /// Merges `job` into its destination's pending digest (made, due at `digest_at`, if
    /// there is none). Returns the digest's row id.
    pub fn merge(&self, job: &OutboxJob, now: u64, digest_at: u64) -> Result<i64> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let dest = job.destination.as_u64() as i64;
        let existing: Option<i64> = tx
            .one(
                "SELECT id FROM outbox WHERE destination = ?1 AND kind = 'digest' AND state = 'pending'
                 ORDER BY id LIMIT 1",
                [dest],
                |r| r.get(0),
            )
            .optional()?;
        let digest = match existing {
            Some(id) => id,
            None => {
                tx.run(
                    "INSERT INTO outbox (message_id, channel, destination, source, text, state, next_attempt_ms, kind, created_ms)
                     VALUES (NULL, 'sms', ?1, NULL, '', 'pending', ?2, 'digest', ?3)",
                    params![dest, sql_ms(digest_at), sql_ms(now)],
                )?;
                tx.last_insert_rowid()
            }
        };
        tx.run(
            "UPDATE outbox SET state = 'merged', digest_id = ?2, last_error = 'over sms.max_per_recipient_per_hour: in a digest' WHERE id = ?1",
            params![job.id, digest],
        )?;
        tx.commit()?;
        Ok(digest)
    }

    /// Removes the finished rows of no message older than [`KEEP_FINISHED_MS`] (never one
    /// merged into a digest that is still to go). Returns how many went.
    pub fn prune_outbox(&self, now: u64) -> Result<usize> {
        let db = self.db();
        let n = db.run(
            "DELETE FROM outbox WHERE message_id IS NULL AND state NOT IN ('pending')
             AND COALESCE(sent_at_ms, created_ms) < ?1
             AND NOT EXISTS (SELECT 1 FROM outbox d WHERE d.id = outbox.digest_id AND d.state = 'pending')",
            [sql_ms(now.saturating_sub(KEEP_FINISHED_MS))],
        )?;
        db.run(
            "DELETE FROM sms_parts WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = sms_parts.outbox_id)",
            [],
        )?;
        Ok(n)
    }

    /// A job that may not go before `at` (its number's hour is full): waits, no attempt
    /// counted.
    pub fn defer(&self, job: &OutboxJob, at: u64) -> Result<()> {
        self.db().run(
            "UPDATE outbox SET next_attempt_ms = ?2 WHERE id = ?1",
            params![job.id, sql_ms(at)],
        )?;
        Ok(())
    }

    /// What digest `id` carries.
    pub fn digest_facts(&self, id: i64) -> Result<DigestFacts> {
        let db = self.read_db();
        let mut stmt = db.prepare_cached(
            "SELECT kind, merged_count, caller, source, created_ms FROM outbox
             WHERE digest_id = ?1 ORDER BY created_ms DESC, id DESC",
        )?;
        let mut f = DigestFacts::default();
        let rows = stmt.query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u32,
                number(r.get(2)?),
                number(r.get(3)?),
                r.get::<_, i64>(4)? as u64,
            ))
        })?;
        for row in rows {
            let (kind, count, caller, source, created) = row?;
            let kind = JobKind::parse(&kind);
            match kind {
                JobKind::Message => {
                    f.messages += 1;
                    if f.link.is_none() {
                        f.link = source;
                    }
                }
                JobKind::MissedCall => f.missed_calls += count,
                JobKind::Reminder => f.reminders += 1,
                // A confirmation never waits for the hour (notify::worker), so is never here.
                JobKind::Digest | JobKind::Confirm => continue,
            }
            if kind != JobKind::Reminder && !f.callers.contains(&caller) {
                f.callers.push(caller);
            }
            f.since_ms = created;
        }
        Ok(f)
    }

    /// What a notifier's wake reads, in one turn on a reader thread: the notices of `lane`
    /// due at `now` (at most `limit`, as [`Store::due`]), when the first of the others
    /// comes due, and how many notices are pending in all.
    pub fn outlook(&self, now: u64, limit: usize, lane: Lane) -> Result<Outlook> {
        Ok(Outlook {
            jobs: self.due(now, limit, lane)?,
            later: self.first_pending(lane, sql_ms(now))?,
            pending: self.pending()?,
        })
    }

    /// When the next pending notice of `lane` is due, if any.
    pub fn next_due(&self, lane: Lane) -> Result<Option<u64>> {
        self.first_pending(lane, i64::MIN)
    }

    /// When the first pending notice of `lane` due after `after` (SQL ms) is due.
    fn first_pending(&self, lane: Lane, after: i64) -> Result<Option<u64>> {
        let v: Option<i64> = self.read_db().one(
            "SELECT MIN(next_attempt_ms) FROM outbox
             WHERE state = 'pending' AND next_attempt_ms > ?1 AND (channel = 'sms') = ?2",
            params![after, lane == Lane::Sms],
            |r| r.get(0),
        )?;
        Ok(v.map(|v| v as u64))
    }

    /// Pending SMS count.
    pub fn pending(&self) -> Result<u64> {
        let v: i64 = self.read_db().one(
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(v as u64)
    }

    /// Queues the answer to a STOP or START from `to`.
    pub fn confirm(
        &self,
        to: PhoneNumber,
        from: Option<PhoneNumber>,
        text: &str,
        now: u64,
    ) -> Result<()> {
        self.db().run(
            "INSERT INTO outbox (message_id, channel, destination, source, text, state, next_attempt_ms, kind, created_ms)
             VALUES (NULL, 'sms', ?1, ?2, ?3, 'pending', ?4, 'confirm', ?4)",
            params![to.as_u64() as i64, from.map(|f| f.as_u64() as i64), text, sql_ms(now)],
        )?;
        Ok(())
    }

    /// The attempt failed: try again at `next_at`.
    pub fn failed(&self, job: &OutboxJob, next_at: u64, error: &str) -> Result<()> {
        self.db().run(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?2, last_error = ?3 WHERE id = ?1",
            params![job.id, sql_ms(next_at), error],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewMessage;

    fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse_e164(s).unwrap()
    }

    fn store() -> (Store, std::path::PathBuf) {
        crate::temp_store("outbox")
    }

    fn state(s: &Store, id: i64) -> String {
        s.db()
            .one("SELECT state FROM outbox WHERE id = ?1", [id], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn the_outlook_holds_what_is_due_when_the_rest_is_and_how_many_wait() {
        let (s, dir) = store();
        let min = 60_000;
        let t = 1_000_000_000;
        let call = |to: &str, at: u64| {
            s.missed_call(n(to), Some(n("+15551230001")), at, 0, false, |k| {
                format!("{k} calls")
            })
            .unwrap()
        };
        assert!(call("+15551230002", t) && call("+15551230003", t));
        let jobs = s.due(t, 10, crate::Lane::Sms).unwrap();
        // One fails and is tried again five minutes on.
        s.failed(&jobs[1], t + 5 * min, "SMSC away").unwrap();
        let o = s.outlook(t + min, 10, crate::Lane::Sms).unwrap();
        assert_eq!(o.jobs.len(), 1, "the other is not due yet");
        assert_eq!((o.later, o.pending), (Some(t + 5 * min), 2));
        // Nothing of the other lane: nothing due, nothing later.
        let other = s.outlook(t + min, 10, crate::Lane::Other).unwrap();
        assert!(other.jobs.is_empty() && other.later.is_none());
        s.accepted(&o.jobs[0], 1, None, t + min).unwrap();
        let o = s.outlook(t + 6 * min, 10, crate::Lane::Sms).unwrap();
        assert_eq!((o.jobs.len(), o.later, o.pending), (1, None, 1));
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_burst_of_missed_calls_from_one_caller_is_one_sms() {
        let (s, dir) = store();
        let (r, c) = (n("+15551230002"), Some(n("+15551230001")));
        let min = 60_000;
        let t = 1_000_000_000;
        assert!(
            s.missed_call(r, c, t, 10 * min, false, |k| format!("{k} calls"))
                .unwrap()
        );
        assert!(
            s.missed_call(r, c, t + min, 10 * min, false, |k| format!("{k} calls"))
                .unwrap()
        );
        let jobs = s.due(t + 2 * min, 10, crate::Lane::Sms).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].text, "2 calls");
        assert_eq!(jobs[0].kind, JobKind::MissedCall);
        s.accepted(&jobs[0], 1, None, t + 2 * min).unwrap();
        // Sent already: a third in the burst is kept as merged, not sent again.
        assert!(
            !s.missed_call(r, c, t + 3 * min, 10 * min, false, |k| format!("{k} calls"))
                .unwrap()
        );
        assert!(s.due(t + 4 * min, 10, crate::Lane::Sms).unwrap().is_empty());
        // Another caller, or the same one after a quiet spell, is a new alert.
        assert!(
            s.missed_call(
                r,
                Some(n("+15551230009")),
                t + 4 * min,
                10 * min,
                false,
                |_| "x".into()
            )
            .unwrap()
        );
        assert!(
            s.missed_call(r, c, t + 30 * min, 10 * min, false, |_| "y".into())
                .unwrap()
        );
        assert_eq!(s.due(t + 31 * min, 10, crate::Lane::Sms).unwrap().len(), 2);
        // Another server's alert covers a caller never seen here: merged, nothing queued.
        let other = Some(n("+15551230007"));
        assert!(
            !s.missed_call(r, other, t + 32 * min, 10 * min, true, |_| "z".into())
                .unwrap()
        );
        assert_eq!(s.due(t + 33 * min, 10, crate::Lane::Sms).unwrap().len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn merged_notices_become_one_digest_that_says_what_it_carries() {
        let (s, dir) = store();
        let r = n("+15551230002");
        // Deposits stamp their rows with the wall clock; the rest follows it.
        let t = boxless_core::now_ms();
        let deposit = |caller: &str, at: u64| {
            let m = NewMessage {
                recipient: r,
                caller: Some(n(caller)),
                received_at_ms: at,
                samples: &[0i16; 800],
                sample_rate: 8000,
                encoding: crate::Encoding::Pcm16,
            };
            s.deposit(&m, |_| "msg".into()).unwrap()
        };
        // Two sent in this hour.
        for k in 0..2 {
            deposit("+15551230001", t);
            let j = s.due(u64::MAX / 2, 10, crate::Lane::Sms).unwrap();
            s.accepted(&j[0], 1, None, t + k).unwrap();
        }
        let w = s.window(r, t + 10).unwrap();
        assert_eq!((w.sent, w.oldest_ms), (2, Some(t)));
        assert_eq!(s.sent_times(r, t - 1, 10).unwrap(), vec![t, t + 1]);
        assert_eq!(
            s.sent_times(r, t - 1, 1).unwrap(),
            vec![t + 1],
            "the newest"
        );
        assert!(s.sent_times(r, t + 1, 10).unwrap().is_empty());
        assert_eq!(
            s.window(r, t + HOUR_MS + 1).unwrap().sent,
            0,
            "an hour later"
        );
        // Two more messages and a missed call merge into one digest.
        deposit("+15551230003", t + 20);
        deposit("+15551230004", t + 30);
        s.missed_call(r, Some(n("+15551230005")), t + 10_000, 0, false, |_| {
            "missed".into()
        })
        .unwrap();
        let due = s.due(u64::MAX / 2, 10, crate::Lane::Sms).unwrap();
        assert_eq!(due.len(), 3);
        let digest_at = t + HOUR_MS;
        let ids: Vec<i64> = due
            .iter()
            .map(|j| s.merge(j, t + 50, digest_at).unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "one digest");
        assert!(due.iter().all(|j| state(&s, j.id) == "merged"));
        assert!(
            s.due(digest_at - 1, 10, crate::Lane::Sms)
                .unwrap()
                .is_empty(),
            "not before the hour has room"
        );
        let digest = s.due(digest_at, 10, crate::Lane::Sms).unwrap();
        assert_eq!(digest.len(), 1);
        assert_eq!(digest[0].kind, JobKind::Digest);
        let f = s.digest_facts(digest[0].id).unwrap();
        assert_eq!((f.messages, f.missed_calls, f.reminders), (2, 1, 0));
        assert_eq!(f.callers.len(), 3);
        assert_eq!(f.callers[0], Some(n("+15551230005")), "newest first");
        assert!(f.link.is_some());
        s.accepted(&digest[0], 1, Some("digest text"), digest_at)
            .unwrap();
        let listed = s.list(Some(r), 10).unwrap();
        assert!(
            listed
                .iter()
                .all(|m| m.state == crate::MessageState::Notified)
        );
        assert_eq!(state(&s, digest[0].id), "accepted");
        assert_eq!(
            s.window(r, digest_at + 1).unwrap(),
            Window {
                sent: 1,
                oldest_ms: Some(digest_at)
            },
            "the digest counts; the first two aged out"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
