//! Retention (sans-IO policy plus the store's sweep): heard messages are kept
//! `keep_heard`, unheard ones `keep_unheard` with a reminder SMS `remind_before` their
//! expiry; saved messages are kept. Nothing unheard is deleted before its expiry.

use crate::sql::Cached as _;
use boxless_core::PhoneNumber;
use rusqlite::params;

use crate::{Result, Store};

const DAY_MS: u64 = 86_400_000;

/// How long messages live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Heard (and deleted) messages go this long after they were heard.
    pub keep_heard_ms: u64,
    /// Unheard messages go this long after they were received.
    pub keep_unheard_ms: u64,
    /// The reminder goes this long before an unheard message expires.
    pub remind_before_ms: u64,
}

impl Retention {
    /// From days, with the reminder one day before expiry.
    pub fn days(keep_heard: u32, keep_unheard: u32) -> Retention {
        Retention {
            keep_heard_ms: keep_heard as u64 * DAY_MS,
            keep_unheard_ms: keep_unheard as u64 * DAY_MS,
            remind_before_ms: DAY_MS,
        }
    }

    /// What to do with one message now.
    pub fn decide(&self, now_ms: u64, m: &Aging) -> Fate {
        match m.state.as_str() {
            "saved" => Fate::Keep,
            "heard" | "deleted" => {
                if now_ms >= m.state_changed_ms.saturating_add(self.keep_heard_ms) {
                    Fate::Delete
                } else {
                    Fate::Keep
                }
            }
            _ => {
                let expires = m.received_at_ms.saturating_add(self.keep_unheard_ms);
                if now_ms >= expires {
                    Fate::Delete
                } else if !m.reminded && now_ms >= expires.saturating_sub(self.remind_before_ms) {
                    Fate::Remind {
                        expires_ms: expires,
                    }
                } else {
                    Fate::Keep
                }
            }
        }
    }
}

/// A message as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aging {
    /// Store id.
    pub id: String,
    /// new | notified | heard | saved | deleted
    pub state: String,
    /// When it was received.
    pub received_at_ms: u64,
    /// When its state last changed.
    pub state_changed_ms: u64,
    /// True once the expiry reminder was queued.
    pub reminded: bool,
    /// Recipient.
    pub recipient: PhoneNumber,
    /// Caller.
    pub caller: Option<PhoneNumber>,
    /// Link number.
    pub link_number: PhoneNumber,
}

/// The policy's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Nothing to do.
    Keep,
    /// Queue the reminder (the message expires at `expires_ms`).
    Remind {
        /// When it expires.
        expires_ms: u64,
    },
    /// Remove row, outbox rows and audio.
    Delete,
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Messages removed.
    pub deleted: u64,
    /// Reminders queued.
    pub reminded: u64,
}

/// At most this many messages are reminded or removed a sweep (one a minute): a sweep holds
/// the store's writer, and deposits wait behind it. 1,440,000 a day, four times what a store
/// of ten million messages a month expires.
pub const SWEEP_MAX: usize = 1_000;

/// The messages a sweep may act on, each query a range of an index: unheard ones old enough
/// for their reminder or their expiry (`messages_due`), heard or deleted ones kept long
/// enough (`messages_heard`). Nothing else is read, whatever the store holds.
pub(crate) const DUE: &str = "
SELECT id, state, received_at_ms, state_changed_ms, reminded, recipient, caller, link_number
  FROM messages WHERE state IN ('new', 'notified') AND reminded = 0 AND received_at_ms <= ?1
UNION ALL
SELECT id, state, received_at_ms, state_changed_ms, reminded, recipient, caller, link_number
  FROM messages WHERE state IN ('new', 'notified') AND reminded = 1 AND received_at_ms <= ?2
UNION ALL
SELECT id, state, received_at_ms, state_changed_ms, reminded, recipient, caller, link_number
  FROM messages WHERE state IN ('heard', 'deleted') AND state_changed_ms <= ?3
LIMIT ?4";

/// The indexes [`DUE`] reads (made at open; once, on a store from before them).
pub(crate) const SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS messages_due ON messages(state, reminded, received_at_ms);
CREATE INDEX IF NOT EXISTS messages_heard ON messages(state, state_changed_ms)
    WHERE state IN ('heard', 'deleted');";

impl Store {
    /// Applies `policy` at `now_ms` to the messages it may act on, at most [`SWEEP_MAX`]
    /// of them (the next sweep goes on); `render` writes a reminder's text. The reminders
    /// and removals of a sweep commit together, then the removed messages' audio goes.
    pub fn sweep(
        &self,
        now_ms: u64,
        policy: &Retention,
        render: impl Fn(&Aging, u64) -> String,
    ) -> Result<Swept> {
        let at = |v: u64| v.min(i64::MAX as u64) as i64;
        let expire_cut = now_ms.saturating_sub(policy.keep_unheard_ms);
        let remind_cut = expire_cut.saturating_add(policy.remind_before_ms);
        let heard_cut = now_ms.saturating_sub(policy.keep_heard_ms);
        let mut done = Swept::default();
        let mut gone = Vec::new();
        {
            let mut db = self.db();
            let tx = db.transaction()?;
            let due: Vec<Aging> = {
                let mut stmt = tx.prepare_cached(DUE)?;
                let num = |v: i64| PhoneNumber::parse_e164(&format!("+{v}"));
                stmt.query_map(
                    params![
                        at(remind_cut),
                        at(expire_cut),
                        at(heard_cut),
                        SWEEP_MAX as i64
                    ],
                    |r| {
                        let bad = || {
                            rusqlite::Error::InvalidColumnType(
                                5,
                                "number".into(),
                                rusqlite::types::Type::Integer,
                            )
                        };
                        Ok(Aging {
                            id: r.get(0)?,
                            state: r.get(1)?,
                            received_at_ms: r.get::<_, i64>(2)? as u64,
                            state_changed_ms: r.get::<_, i64>(3)? as u64,
                            reminded: r.get::<_, i64>(4)? != 0,
                            recipient: num(r.get(5)?).ok_or_else(bad)?,
                            caller: r.get::<_, Option<i64>>(6)?.and_then(num),
                            link_number: num(r.get(7)?).ok_or_else(bad)?,
                        })
                    },
                )?
                .collect::<rusqlite::Result<_>>()?
            };
            for m in &due {
                // The query narrows; the policy decides (one rule, tested on its own).
                match policy.decide(now_ms, m) {
                    Fate::Keep => {}
                    Fate::Remind { expires_ms } => {
                        let text = render(m, expires_ms);
                        tx.run("UPDATE messages SET reminded = 1 WHERE id = ?1", [&m.id])?;
                        tx.run(
                            "INSERT INTO outbox (message_id, channel, destination, source, text, state, next_attempt_ms, kind, created_ms)
                             VALUES (?1, 'sms', ?2, ?3, ?4, 'pending', ?5, 'reminder', ?5)",
                            params![m.id, m.recipient.as_u64() as i64, m.link_number.as_u64() as i64, text, now_ms as i64],
                        )?;
                        done.reminded += 1;
                    }
                    Fate::Delete => {
                        tx.run("DELETE FROM outbox WHERE message_id = ?1", [&m.id])?;
                        tx.run("DELETE FROM messages WHERE id = ?1", [&m.id])?;
                        gone.push(m.id.clone());
                        done.deleted += 1;
                    }
                }
            }
            tx.commit()?;
        }
        // After the commit: a crash in between strands a file, which the audio sweep finds.
        for id in gone {
            self.remove_audio(&id)?;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aging(state: &str, received: u64, changed: u64, reminded: bool) -> Aging {
        let n = PhoneNumber::parse_e164("+15551230002").unwrap();
        Aging {
            id: "m".into(),
            state: state.into(),
            received_at_ms: received,
            state_changed_ms: changed,
            reminded,
            recipient: n,
            caller: None,
            link_number: n,
        }
    }

    #[test]
    fn unheard_kept_reminded_then_expired_never_early() {
        let p = Retention::days(7, 30);
        let m = aging("notified", 0, 0, false);
        assert_eq!(p.decide(28 * DAY_MS, &m), Fate::Keep);
        assert_eq!(
            p.decide(29 * DAY_MS, &m),
            Fate::Remind {
                expires_ms: 30 * DAY_MS
            }
        );
        let reminded = aging("notified", 0, 0, true);
        assert_eq!(p.decide(29 * DAY_MS + 1, &reminded), Fate::Keep);
        assert_eq!(
            p.decide(30 * DAY_MS - 1, &reminded),
            Fate::Keep,
            "never before expiry"
        );
        assert_eq!(p.decide(30 * DAY_MS, &reminded), Fate::Delete);
    }

    #[test]
    fn heard_goes_after_keep_heard_and_saved_stays() {
        let p = Retention::days(7, 30);
        let heard = aging("heard", 0, 2 * DAY_MS, false);
        assert_eq!(p.decide(9 * DAY_MS - 1, &heard), Fate::Keep);
        assert_eq!(p.decide(9 * DAY_MS, &heard), Fate::Delete);
        assert_eq!(
            p.decide(10_000 * DAY_MS, &aging("saved", 0, 0, false)),
            Fate::Keep
        );
    }
}
