//! Events for the webhook (docs/sms.md, "The operator's events": `message.deposited`,
//! `missed_call`, `notification.delivered`, `notification.failed`, `message.heard`,
//! `message.saved`, `message.deleted`), written in the same transaction as the change they report, so a
//! crash can neither lose one nor report a change that did not happen. A greeting's
//! (`greeting.set`, `greeting.removed`) is kept with the recipients' preferences, not here:
//! its event is written once the change is kept (`Store::write_greeting_event`), so a crash in
//! between loses the event, never reports a change that did not happen.
//!
//! They go out in the order they were written (one cursor): a receiver that is down
//! delays every later event, and gets them all, once each, in order, when it is back. An
//! event is kept until it went out; one still undelivered after [`KEEP_MS`], or past the
//! newest [`MAX_EVENTS`], is dropped and counted, so a receiver gone for good cannot grow
//! the store without end.

use crate::sql::Cached as _;
use boxless_core::PhoneNumber;
use boxless_core::recipient::GreetingKind;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::{Result, Store, sql_ms};

/// Undelivered events older than this are dropped (7 days).
pub const KEEP_MS: u64 = 7 * 24 * 3_600_000;

/// Unsent events kept at most (a flood of short calls writes one each); past it the
/// oldest are dropped, counted like the expired ones.
pub const MAX_EVENTS: i64 = 1_000_000;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS event_cursor (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    last_id INTEGER NOT NULL
);
";

/// An event to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its row; `{server}-e{id}` is its idempotency id.
    pub id: i64,
    /// `message.deposited`, ...
    pub kind: String,
    /// What it is about.
    pub data: Value,
    /// When it happened (ms since the epoch).
    pub created_ms: u64,
}

/// What happened to a recipient's greeting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GreetingChange {
    /// A new one.
    Set {
        /// How long it lasts.
        seconds: f64,
    },
    /// Taken away: callers hear the default again.
    Removed,
}

/// Writes an event inside the caller's transaction, when events are on.
pub(crate) fn emit(tx: &Connection, on: bool, kind: &str, data: Value, now: u64) -> Result<()> {
    if on {
        tx.run(
            "INSERT INTO events (kind, data, created_ms) VALUES (?1, ?2, ?3)",
            params![kind, data.to_string(), sql_ms(now)],
        )?;
    }
    Ok(())
}

impl Store {
    /// Writes events from now on (a webhook is configured).
    pub fn enable_events(&self) {
        self.events_on
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes `greeting.set` or `greeting.removed` about `recipient`'s greeting of `kind`,
    /// changed `by` (`api`, `page`, `phone`). The greeting is kept with the preferences,
    /// not here; its event goes out with this store's events, in their order.
    pub fn write_greeting_event(
        &self,
        change: GreetingChange,
        recipient: PhoneNumber,
        kind: GreetingKind,
        by: &str,
        now: u64,
    ) -> Result<()> {
        let mut data = serde_json::json!({
            "recipient": recipient.to_string(),
            "for": kind.as_str(),
            "by": by,
        });
        let event = match change {
            GreetingChange::Set { seconds } => {
                data["seconds"] = seconds.into();
                "greeting.set"
            }
            GreetingChange::Removed => "greeting.removed",
        };
        emit(&self.db(), self.events_on(), event, data, now)
    }

    pub(crate) fn events_on(&self) -> bool {
        self.events_on.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The oldest event not yet sent.
    pub fn next_event(&self) -> Result<Option<Event>> {
        let db = self.read_db();
        let mut stmt = db.prepare_cached(
            "SELECT id, kind, data, created_ms FROM events
             WHERE id > COALESCE((SELECT last_id FROM event_cursor WHERE one = 1), 0)
             ORDER BY id LIMIT 1",
        )?;
        let row = stmt
            .query_row([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()?;
        Ok(row.map(|(id, kind, data, created)| Event {
            id,
            kind,
            data: serde_json::from_str(&data).unwrap_or(Value::Null),
            created_ms: created.max(0) as u64,
        }))
    }

    /// Event `id` went out: the next one is due.
    pub fn event_sent(&self, id: i64) -> Result<()> {
        self.db().run(
            "INSERT INTO event_cursor (one, last_id) VALUES (1, ?1)
             ON CONFLICT(one) DO UPDATE SET last_id = MAX(last_id, excluded.last_id)",
            [id],
        )?;
        Ok(())
    }

    /// Events not yet sent.
    pub fn events_waiting(&self) -> Result<u64> {
        let v: i64 = self.read_db().one(
            "SELECT COUNT(*) FROM events
             WHERE id > COALESCE((SELECT last_id FROM event_cursor WHERE one = 1), 0)",
            [],
            |r| r.get(0),
        )?;
        Ok(v as u64)
    }

    /// Removes sent events, and unsent ones older than [`KEEP_MS`] or past the newest
    /// [`MAX_EVENTS`]; returns how many unsent ones were dropped.
    pub fn prune_events(&self, now: u64) -> Result<usize> {
        self.prune_events_within(now, MAX_EVENTS)
    }

    fn prune_events_within(&self, now: u64, max: i64) -> Result<usize> {
        let db = self.db();
        let cursor: i64 = db
            .one("SELECT last_id FROM event_cursor WHERE one = 1", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0);
        db.run("DELETE FROM events WHERE id <= ?1", [cursor])?;
        let dropped = db.run(
            "DELETE FROM events WHERE created_ms < ?1
             OR id <= (SELECT MAX(id) FROM events) - ?2",
            params![sql_ms(now.saturating_sub(KEEP_MS)), max],
        )?;
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MessageState;
    use boxless_core::now_ms;

    #[test]
    fn changes_write_events_that_go_once_in_order() {
        let (s, dir) = crate::temp_store("events");
        let m = crate::test_message();
        // Off: nothing written.
        s.deposit(&m, |_| "msg".into()).unwrap();
        assert_eq!(s.events_waiting().unwrap(), 0);
        s.enable_events();
        let info = s.deposit(&m, |_| "msg".into()).unwrap();
        s.set_state(&info.id, MessageState::Heard, 5).unwrap();
        s.set_state(&info.id, MessageState::Saved, 6).unwrap();
        s.delete(&info.id).unwrap();
        let mut kinds = Vec::new();
        while let Some(e) = s.next_event().unwrap() {
            kinds.push(e.kind.clone());
            assert_eq!(e.data["message_id"], info.id.as_str());
            // Not marked sent: the same event again (the receiver was down).
            assert_eq!(s.next_event().unwrap().unwrap().id, e.id);
            s.event_sent(e.id).unwrap();
        }
        assert_eq!(
            kinds,
            [
                "message.deposited",
                "message.heard",
                "message.saved",
                "message.deleted"
            ]
        );
        assert_eq!(s.prune_events(10).unwrap(), 0);
        assert_eq!(s.events_waiting().unwrap(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unsent_events_are_bounded_in_number_and_age() {
        let (s, dir) = crate::temp_store("events-bound");
        s.enable_events();
        for _ in 0..5 {
            s.deposit(&crate::test_message(), |_| "msg".into()).unwrap();
        }
        assert_eq!(s.prune_events_within(0, 3).unwrap(), 2, "the two oldest");
        assert_eq!(s.events_waiting().unwrap(), 3);
        assert_eq!(s.next_event().unwrap().unwrap().id, 3);
        // A week later the rest go too.
        assert_eq!(s.prune_events(now_ms() + KEEP_MS + 1).unwrap(), 3);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
