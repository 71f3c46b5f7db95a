//! What became of each SMS after the SMSC took it: its parts' message ids and the delivery
//! receipts that settle them.
//!
//! A notice is `accepted` once every part got its `submit_sm_resp`; it becomes `delivered`
//! when every part's receipt says so, `undeliverable` or `expired` as soon as one part's
//! does. Receipts are matched by the SMSC's message id; SMSCs that print the id in hex in
//! one PDU and in decimal in the other are matched too. A receipt may come before the
//! `submit_sm_resp` it belongs to is recorded (the SMSC is fast, or we crashed in between):
//! it waits in `early_receipts`, bounded in rows and age since a stranger SMSC could send
//! receipts for ids we never had, and is applied when its part is recorded. A receipt for a
//! part already settled changes nothing.
//!
//! Every function takes `now`, so tests run on virtual time.

use crate::sql::Cached as _;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::{Result, Store, sql_ms};

/// Receipts kept for ids not (yet) known, at most.
pub const MAX_EARLY_RECEIPTS: i64 = 10_000;

/// An early receipt older than this is dropped: its `submit_sm_resp` is not coming.
pub const KEEP_EARLY_MS: u64 = 3_600_000;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sms_parts (
    outbox_id INTEGER NOT NULL,
    part INTEGER NOT NULL,
    smsc_id TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'accepted',
    error TEXT,
    final_ms INTEGER,
    PRIMARY KEY (outbox_id, part)
);
CREATE INDEX IF NOT EXISTS sms_parts_smsc_id ON sms_parts(smsc_id);
CREATE TABLE IF NOT EXISTS early_receipts (
    smsc_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    error TEXT,
    received_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS early_receipts_age ON early_receipts(received_ms);
";

/// What a receipt says became of a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// On the phone.
    Delivered,
    /// Never will be (rejected, unknown subscriber, not a mobile, deleted).
    Undeliverable,
    /// The SMSC gave up (validity period over: the phone stayed off).
    Expired,
}

impl Delivery {
    /// The notification state it leads to.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Undeliverable => "undeliverable",
            Delivery::Expired => "expired",
        }
    }

    /// From [`Delivery::as_str`].
    pub fn parse(s: &str) -> Option<Delivery> {
        match s {
            "delivered" => Some(Delivery::Delivered),
            "undeliverable" => Some(Delivery::Undeliverable),
            "expired" => Some(Delivery::Expired),
            _ => None,
        }
    }
}

/// A receipt kept while no part has its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyReceipt {
    /// The SMSC's message id.
    pub smsc_id: String,
    /// What it says.
    pub delivery: Delivery,
    /// Its error, if any.
    pub error: Option<String>,
}

/// A receipt applied to a known part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The outbox row.
    pub job: i64,
    /// Its message, if it notifies one.
    pub message_id: Option<String>,
    /// The state the notice reached with this receipt (None: other parts still to come,
    /// or it had reached one already).
    pub state: Option<Delivery>,
    /// From acceptance to this receipt, when the notice reached its state.
    pub latency_ms: Option<u64>,
}

/// What a receipt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipted {
    /// It settled a part.
    Settled(Settled),
    /// That part was settled already (a receipt sent twice).
    Duplicate,
    /// No part has that id yet: kept for a while, in case its `submit_sm_resp` is late.
    Early,
}

/// The forms one SMSC message id may take in another PDU: as given (lower case), and the
/// same number in hex or decimal.
pub fn id_forms(id: &str) -> Vec<String> {
    let id = id.trim().to_ascii_lowercase();
    let mut v = vec![id.clone()];
    if !id.is_empty() && id.len() <= 16 {
        if id.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = id.parse::<u64>()
        {
            v.push(format!("{n:x}"));
        }
        if id.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(n) = u64::from_str_radix(&id, 16)
        {
            v.push(n.to_string());
        }
    }
    v.dedup();
    v
}

/// The part with one of `forms` as its id.
fn find_part(tx: &Connection, forms: &[String]) -> Result<Option<(i64, i64)>> {
    let mut stmt = tx.prepare_cached(
        "SELECT outbox_id, part FROM sms_parts WHERE smsc_id = ?1 ORDER BY outbox_id DESC LIMIT 1",
    )?;
    for f in forms {
        if let Some(p) = stmt
            .query_row([f], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
        {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Settles part `part` of `job`; then the notice, if its parts say so.
fn settle(
    tx: &Transaction<'_>,
    job: i64,
    part: i64,
    d: Delivery,
    error: Option<&str>,
    now: u64,
    events_on: bool,
) -> Result<Receipted> {
    let changed = tx.run(
        "UPDATE sms_parts SET state = ?3, error = ?4, final_ms = ?5
         WHERE outbox_id = ?1 AND part = ?2 AND state = 'accepted'",
        params![job, part, d.as_str(), error, sql_ms(now)],
    )?;
    if changed == 0 {
        return Ok(Receipted::Duplicate);
    }
    Ok(Receipted::Settled(evaluate(tx, job, now, events_on)?))
}

/// Gives an `accepted` notice the state its parts add up to.
fn evaluate(tx: &Transaction<'_>, job: i64, now: u64, events_on: bool) -> Result<Settled> {
    let (state, total, sent_at, message_id): (String, Option<i64>, Option<i64>, Option<String>) =
        tx.one(
            "SELECT state, parts_total, sent_at_ms, message_id FROM outbox WHERE id = ?1",
            [job],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
    let mut settled = Settled {
        job,
        message_id,
        state: None,
        latency_ms: None,
    };
    if state != "accepted" {
        return Ok(settled);
    }
    let mut stmt =
        tx.prepare_cached("SELECT state, error FROM sms_parts WHERE outbox_id = ?1 ORDER BY part")?;
    let parts = stmt
        .query_map([job], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<(String, Option<String>)>>>()?;
    let failed = parts.iter().find_map(|(s, e)| match Delivery::parse(s) {
        Some(d @ (Delivery::Undeliverable | Delivery::Expired)) => Some((d, e.clone())),
        _ => None,
    });
    let delivered = parts.iter().filter(|(s, _)| s == "delivered").count() as i64;
    let (d, error) = match failed {
        Some(f) => f,
        None if Some(delivered) == total => (Delivery::Delivered, None),
        None => return Ok(settled),
    };
    tx.run(
        "UPDATE outbox SET state = ?2, final_ms = ?3, last_error = ?4 WHERE id = ?1",
        params![job, d.as_str(), sql_ms(now), error],
    )?;
    settled.state = Some(d);
    settled.latency_ms = sent_at.map(|t| now.saturating_sub(t.max(0) as u64));
    if d == Delivery::Delivered {
        crate::fallback::reached(tx, job)?;
    } else {
        crate::fallback::gave_up(tx, job, now)?;
    }
    let to: Option<i64> = tx.one("SELECT destination FROM outbox WHERE id = ?1", [job], |r| {
        r.get(0)
    })?;
    crate::events::emit(
        tx,
        events_on,
        if d == Delivery::Delivered {
            "notification.delivered"
        } else {
            "notification.failed"
        },
        serde_json::json!({
            "message_id": settled.message_id,
            "channel": "sms",
            "to": to.map(|t| format!("+{t}")),
            "state": d.as_str(),
            "detail": error,
            "delivery_ms": settled.latency_ms,
        }),
        now,
    )?;
    Ok(settled)
}

impl Store {
    /// The SMSC took part `part` (0-based) of `job` as `smsc_id`.
    pub fn part_accepted(&self, job: i64, part: u8, smsc_id: &str) -> Result<()> {
        self.db().run(
            "INSERT OR REPLACE INTO sms_parts (outbox_id, part, smsc_id) VALUES (?1, ?2, ?3)",
            params![job, part, smsc_id.trim().to_ascii_lowercase()],
        )?;
        Ok(())
    }

    /// The parts of `job` the SMSC has taken (a retry sends only the others).
    pub fn parts_accepted(&self, job: i64) -> Result<Vec<u8>> {
        let db = self.read_db();
        let mut stmt =
            db.prepare_cached("SELECT part FROM sms_parts WHERE outbox_id = ?1 ORDER BY part")?;
        let v = stmt
            .query_map([job], |r| r.get::<_, i64>(0))?
            .map(|p| p.map(|p| p as u8))
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }

    /// Every part of `job` (`parts` of them) was taken: it is `accepted` and its message
    /// `notified`; `text`, when given, is what went (a digest's, written when it went).
    /// Receipts that came first are applied now; returns what they settled.
    pub fn accepted(
        &self,
        job: &crate::OutboxJob,
        parts: u8,
        text: Option<&str>,
        now: u64,
    ) -> Result<Vec<Settled>> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.run(
            "UPDATE outbox SET state = 'accepted', attempts = attempts + 1, sent_at_ms = ?2,
                 last_error = NULL, parts_total = ?3, text = COALESCE(?4, text)
             WHERE id = ?1",
            params![job.id, sql_ms(now), parts, text],
        )?;
        tx.run(
            "UPDATE messages SET state = 'notified', state_changed_ms = ?2
             WHERE state = 'new' AND (id = ?3 OR id IN (SELECT message_id FROM outbox WHERE digest_id = ?1))",
            params![job.id, sql_ms(now), job.message_id],
        )?;
        let ids: Vec<(i64, String)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT part, smsc_id FROM sms_parts WHERE outbox_id = ?1 AND state = 'accepted'",
            )?;
            stmt.query_map([job.id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::new();
        for (part, id) in ids {
            for form in id_forms(&id) {
                let early: Option<(String, Option<String>)> = tx
                    .one(
                        "DELETE FROM early_receipts WHERE smsc_id = ?1 RETURNING state, error",
                        [&form],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((state, error)) = early
                    && let Some(d) = Delivery::parse(&state)
                {
                    if let Receipted::Settled(s) = settle(
                        &tx,
                        job.id,
                        part,
                        d,
                        error.as_deref(),
                        now,
                        self.events_on(),
                    )? {
                        out.push(s);
                    }
                    break;
                }
            }
        }
        if self.accepted_final() {
            crate::fallback::reached(&tx, job.id)?;
        }
        // Parts settled before the last part was taken count now.
        let s = evaluate(&tx, job.id, now, self.events_on())?;
        if s.state.is_some() && !out.iter().any(|o| o.state.is_some()) {
            out.push(s);
        }
        tx.commit()?;
        Ok(out)
    }

    /// A delivery receipt for the SMSC's message `smsc_id`: settles its part here, or is
    /// kept as early.
    pub fn receipt(
        &self,
        smsc_id: &str,
        d: Delivery,
        error: Option<&str>,
        now: u64,
    ) -> Result<Receipted> {
        match self.settle_known(smsc_id, d, error, now)? {
            Some(r) => Ok(r),
            None => {
                self.keep_early(smsc_id, d, error, now, MAX_EARLY_RECEIPTS)?;
                Ok(Receipted::Early)
            }
        }
    }

    /// Settles the part sent as `smsc_id`, when this store sent it.
    pub fn settle_known(
        &self,
        smsc_id: &str,
        d: Delivery,
        error: Option<&str>,
        now: u64,
    ) -> Result<Option<Receipted>> {
        let forms = id_forms(smsc_id);
        let mut db = self.db();
        let tx = db.transaction()?;
        let out = match find_part(&tx, &forms)? {
            Some((job, part)) => Some(settle(&tx, job, part, d, error, now, self.events_on())?),
            None => None,
        };
        tx.commit()?;
        Ok(out)
    }

    /// Keeps a receipt no part matches yet, within `max` rows and [`KEEP_EARLY_MS`].
    pub fn keep_early(
        &self,
        smsc_id: &str,
        d: Delivery,
        error: Option<&str>,
        now: u64,
        max: i64,
    ) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.run(
            "DELETE FROM early_receipts WHERE received_ms < ?1",
            [sql_ms(now.saturating_sub(KEEP_EARLY_MS))],
        )?;
        tx.run(
            "DELETE FROM early_receipts WHERE smsc_id IN (
                 SELECT smsc_id FROM early_receipts ORDER BY received_ms DESC
                 LIMIT -1 OFFSET ?1)",
            [max - 1],
        )?;
        tx.run(
            "INSERT OR REPLACE INTO early_receipts (smsc_id, state, error, received_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![id_forms(smsc_id)[0], d.as_str(), error, sql_ms(now)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Early receipts kept since `since` (oldest first, at most `limit`): another process
    /// sharing the SMPP account may have sent their parts.
    pub fn early_since(&self, since: u64, limit: usize) -> Result<Vec<EarlyReceipt>> {
        let db = self.read_db();
        let mut stmt = db.prepare_cached(
            "SELECT smsc_id, state, error FROM early_receipts WHERE received_ms >= ?1
             ORDER BY received_ms LIMIT ?2",
        )?;
        let v = stmt
            .query_map(params![sql_ms(since), limit as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
            })?
            .filter_map(|row| match row {
                Ok((id, state, error)) => Delivery::parse(&state).map(|d| {
                    Ok(EarlyReceipt {
                        smsc_id: id,
                        delivery: d,
                        error,
                    })
                }),
                Err(e) => Some(Err(e)),
            })
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }

    /// Drops an early receipt (another process settled its part).
    pub fn forget_early(&self, smsc_id: &str) -> Result<()> {
        self.db()
            .run("DELETE FROM early_receipts WHERE smsc_id = ?1", [smsc_id])?;
        Ok(())
    }

    /// Receipts waiting for their `submit_sm_resp`.
    pub fn early_receipts(&self) -> Result<u64> {
        let v: i64 = self
            .read_db()
            .one("SELECT COUNT(*) FROM early_receipts", [], |r| r.get(0))?;
        Ok(v as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MessageState;

    fn store() -> (Store, std::path::PathBuf) {
        crate::temp_store("receipts")
    }

    fn deposit(s: &Store) -> crate::OutboxJob {
        s.deposit(&crate::test_message(), |_| "msg".into()).unwrap();
        s.due(u64::MAX / 2, 10, crate::Lane::Sms).unwrap().remove(0)
    }

    fn row(s: &Store, job: i64) -> (String, Option<String>) {
        s.db()
            .one(
                "SELECT state, last_error FROM outbox WHERE id = ?1",
                [job],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    }

    #[test]
    fn ids_match_across_hex_and_decimal() {
        assert_eq!(id_forms("255"), ["255", "ff", "597"]);
        assert_eq!(id_forms(" 0A1B "), ["0a1b", "2587"]);
        assert_eq!(id_forms("sim7"), ["sim7"]);
        assert_eq!(
            id_forms("12345678901234567890123"),
            ["12345678901234567890123"]
        );
    }

    #[test]
    fn a_receipt_settles_its_notice_with_the_latency_and_twice_changes_nothing() {
        let (s, dir) = store();
        let job = deposit(&s);
        s.part_accepted(job.id, 0, "1F").unwrap();
        assert!(s.accepted(&job, 1, None, 10_000).unwrap().is_empty());
        assert_eq!(row(&s, job.id).0, "accepted");
        assert_eq!(s.list(None, 1).unwrap()[0].state, MessageState::Notified);
        // The receipt names it in decimal.
        let r = s.receipt("31", Delivery::Delivered, None, 12_500).unwrap();
        let Receipted::Settled(st) = r else {
            panic!("{r:?}")
        };
        assert_eq!(st.state, Some(Delivery::Delivered));
        assert_eq!(st.latency_ms, Some(2_500));
        assert_eq!(st.message_id, job.message_id);
        assert_eq!(row(&s, job.id).0, "delivered");
        assert_eq!(
            s.receipt("1f", Delivery::Undeliverable, None, 13_000)
                .unwrap(),
            Receipted::Duplicate
        );
        assert_eq!(row(&s, job.id).0, "delivered");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_receipt_before_the_submit_sm_resp_waits_for_it() {
        let (s, dir) = store();
        let job = deposit(&s);
        assert_eq!(
            s.receipt("abc", Delivery::Undeliverable, Some("err:001"), 9_000)
                .unwrap(),
            Receipted::Early
        );
        assert_eq!(s.early_receipts().unwrap(), 1);
        s.part_accepted(job.id, 0, "ABC").unwrap();
        let settled = s.accepted(&job, 1, None, 9_100).unwrap();
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].state, Some(Delivery::Undeliverable));
        assert_eq!(
            row(&s, job.id),
            ("undeliverable".into(), Some("err:001".into()))
        );
        assert_eq!(s.early_receipts().unwrap(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_long_text_is_delivered_when_every_part_is_and_fails_with_its_first_failed_part() {
        let (s, dir) = store();
        let job = deposit(&s);
        for (p, id) in ["a1", "a2", "a3"].iter().enumerate() {
            s.part_accepted(job.id, p as u8, id).unwrap();
        }
        assert_eq!(s.parts_accepted(job.id).unwrap(), [0, 1, 2]);
        s.accepted(&job, 3, None, 0).unwrap();
        s.receipt("a1", Delivery::Delivered, None, 1).unwrap();
        s.receipt("a3", Delivery::Delivered, None, 2).unwrap();
        assert_eq!(row(&s, job.id).0, "accepted", "a part is still out");
        s.receipt("a2", Delivery::Delivered, None, 3).unwrap();
        assert_eq!(row(&s, job.id).0, "delivered");

        let job = deposit(&s);
        s.part_accepted(job.id, 0, "b1").unwrap();
        s.part_accepted(job.id, 1, "b2").unwrap();
        s.accepted(&job, 2, None, 0).unwrap();
        s.receipt("b2", Delivery::Expired, Some("validity"), 5)
            .unwrap();
        assert_eq!(row(&s, job.id), ("expired".into(), Some("validity".into())));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn receipts_for_ids_never_sent_are_bounded() {
        let (s, dir) = store();
        for k in 0..70 {
            s.keep_early(&format!("x{k}"), Delivery::Delivered, None, k, 50)
                .unwrap();
        }
        assert_eq!(s.early_receipts().unwrap(), 50);
        assert_eq!(
            s.settle_known("x3", Delivery::Delivered, None, 80).unwrap(),
            None,
            "an early receipt settles nothing by itself"
        );
        // An hour later the old ones go.
        s.keep_early("late", Delivery::Delivered, None, KEEP_EARLY_MS + 100, 50)
            .unwrap();
        assert_eq!(s.early_receipts().unwrap(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn early_receipts_are_listed_for_other_processes_and_forgotten_once_settled_there() {
        let (s, dir) = store();
        s.keep_early("A1", Delivery::Undeliverable, Some("UNDELIV"), 10, 50)
            .unwrap();
        s.keep_early("b2", Delivery::Delivered, None, 20, 50)
            .unwrap();
        let all = s.early_since(0, 10).unwrap();
        assert_eq!(
            all[0],
            crate::EarlyReceipt {
                smsc_id: "a1".into(),
                delivery: Delivery::Undeliverable,
                error: Some("UNDELIV".into())
            }
        );
        assert_eq!(s.early_since(15, 10).unwrap().len(), 1);
        s.forget_early("a1").unwrap();
        assert_eq!(s.early_receipts().unwrap(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
