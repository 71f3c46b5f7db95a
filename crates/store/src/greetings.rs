//! The recipients' own greetings (docs/http.md, "A recipient's greeting"), kept in the
//! [`Directory`] beside their preferences: one row per recipient and kind, the audio as
//! 8 kHz µ-law octets (8 KB a second, bounded by `messages.greeting_max_seconds`).
//!
//! A row is written whole in one transaction, so a call never hears half a greeting. As for
//! preferences, with NATS each row carries the key-value bucket's revision, so a late copy
//! never overwrites a newer one; [`Directory::greetings_seen`] is the highest revision the
//! copy's follower has applied (a removal included), where following starts again.

use boxless_core::PhoneNumber;
use boxless_core::recipient::GreetingKind;
use rusqlite::{OptionalExtension, params};

use crate::directory::{Directory, key};
use crate::sql::Cached as _;
use crate::{Error, Result, sql_ms};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS greetings (
    number INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    ulaw BLOB NOT NULL,
    revision INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (number, kind)
);
CREATE TABLE IF NOT EXISTS greetings_seen (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    revision INTEGER NOT NULL
);
";

/// Which greeting a call hears, and its revision: enough to know whether a cached copy of
/// its audio is still the one stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreetingVersion {
    /// Which one.
    pub kind: GreetingKind,
    /// Its revision.
    pub revision: u64,
}

impl Directory {
    /// The greeting a call to `n` hears, when it has one of `kinds` (the first found):
    /// read from the primary key alone, without the audio.
    pub fn greeting_version(
        &self,
        n: PhoneNumber,
        kinds: &[GreetingKind],
    ) -> Result<Option<GreetingVersion>> {
        let db = self.db();
        for &kind in kinds {
            if let Some(r) = stored_revision(&db, n, kind)? {
                return Ok(Some(GreetingVersion {
                    kind,
                    revision: r.max(0) as u64,
                }));
            }
        }
        Ok(None)
    }

    /// `n`'s greeting of `kind`: its µ-law octets and revision.
    pub fn greeting(&self, n: PhoneNumber, kind: GreetingKind) -> Result<Option<(Vec<u8>, u64)>> {
        Ok(self
            .db()
            .one(
                "SELECT ulaw, revision FROM greetings WHERE number = ?1 AND kind = ?2",
                params![key(n), kind.code()],
                |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?.max(0) as u64)),
            )
            .optional()?)
    }

    /// Sets `n`'s greeting of `kind` at `revision` (None: one above the stored). An update
    /// older than the stored one is ignored; returns whether it was applied.
    pub fn put_greeting(
        &self,
        n: PhoneNumber,
        kind: GreetingKind,
        ulaw: &[u8],
        revision: Option<u64>,
        now: u64,
    ) -> Result<bool> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let done = put(&tx, self.max_entries, n, kind, ulaw, revision, now)?;
        tx.commit()?;
        Ok(done)
    }

    /// Removes `n`'s greeting of `kind` (when `revision` is not older than the stored one);
    /// true when there was one.
    pub fn delete_greeting(
        &self,
        n: PhoneNumber,
        kind: GreetingKind,
        revision: Option<u64>,
    ) -> Result<bool> {
        let db = self.db();
        remove(&db, n, kind, revision)
    }

    /// Applies the bucket's revision `rev` (`change`: the greeting it sets, with its audio,
    /// or removes, without; None: a key that names none) and records it as seen, in one
    /// transaction: the copy never holds a change it would not know it saw.
    pub fn follow_greeting(
        &self,
        rev: u64,
        change: Option<(PhoneNumber, GreetingKind, Option<&[u8]>)>,
        now: u64,
    ) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        match change {
            Some((n, kind, Some(ulaw))) => {
                put(&tx, self.max_entries, n, kind, ulaw, Some(rev), now)?;
            }
            Some((n, kind, None)) => {
                remove(&tx, n, kind, Some(rev))?;
            }
            None => {}
        }
        tx.run(
            "INSERT INTO greetings_seen (one, revision) VALUES (1, ?1)
             ON CONFLICT(one) DO UPDATE SET revision = MAX(revision, excluded.revision)",
            [rev as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The highest bucket revision this copy has applied (0: none yet).
    pub fn greetings_seen(&self) -> Result<u64> {
        let v: Option<i64> = self
            .db()
            .one(
                "SELECT revision FROM greetings_seen WHERE one = 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    /// Forgets every greeting: the bucket was made anew (its revisions started again), so
    /// this copy follows it from its start.
    pub fn clear_greetings(&self) -> Result<()> {
        self.db()
            .execute_batch("DELETE FROM greetings; DELETE FROM greetings_seen;")?;
        Ok(())
    }

    /// Greetings held.
    pub fn greetings_len(&self) -> Result<u64> {
        let v: i64 = self
            .db()
            .one("SELECT COUNT(*) FROM greetings", [], |r| r.get(0))?;
        Ok(v.max(0) as u64)
    }
}

/// The revision of `n`'s greeting of `kind`, when there is one (the primary key alone).
fn stored_revision(
    db: &rusqlite::Connection,
    n: PhoneNumber,
    kind: GreetingKind,
) -> Result<Option<i64>> {
    Ok(db
        .one(
            "SELECT revision FROM greetings WHERE number = ?1 AND kind = ?2",
            params![key(n), kind.code()],
            |r| r.get(0),
        )
        .optional()?)
}

fn put(
    tx: &rusqlite::Connection,
    max_entries: i64,
    n: PhoneNumber,
    kind: GreetingKind,
    ulaw: &[u8],
    revision: Option<u64>,
    now: u64,
) -> Result<bool> {
    let stored = stored_revision(tx, n, kind)?;
    let rev = match (revision, stored) {
        (Some(r), Some(s)) if (r as i64) < s => return Ok(false),
        (Some(r), _) => r as i64,
        (None, s) => s.unwrap_or(0) + 1,
    };
    if stored.is_none() {
        let count: i64 = tx.one("SELECT COUNT(*) FROM greetings", [], |r| r.get(0))?;
        if count >= max_entries {
            return Err(Error::Full("greetings"));
        }
    }
    tx.run(
        "INSERT OR REPLACE INTO greetings (number, kind, ulaw, revision, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![key(n), kind.code(), ulaw, rev, sql_ms(now)],
    )?;
    Ok(true)
}

fn remove(
    db: &rusqlite::Connection,
    n: PhoneNumber,
    kind: GreetingKind,
    revision: Option<u64>,
) -> Result<bool> {
    let gone = db.run(
        "DELETE FROM greetings WHERE number = ?1 AND kind = ?2 AND (?3 IS NULL OR revision <= ?3)",
        params![key(n), kind.code(), revision.map(|r| r as i64)],
    )?;
    Ok(gone > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::tests::{dir, n};

    #[test]
    fn a_busy_call_hears_the_busy_greeting_else_the_no_answer_one() {
        let (d, path) = dir();
        let r = n("+15551230002");
        let busy = GreetingKind::for_call(true);
        let plain = GreetingKind::for_call(false);
        assert_eq!(d.greeting_version(r, busy).unwrap(), None);
        assert!(
            d.put_greeting(r, GreetingKind::NoAnswer, &[1, 2, 3], None, 1)
                .unwrap()
        );
        let v = d.greeting_version(r, busy).unwrap().unwrap();
        assert_eq!((v.kind, v.revision), (GreetingKind::NoAnswer, 1));
        assert!(
            d.put_greeting(r, GreetingKind::Busy, &[4, 5], None, 2)
                .unwrap()
        );
        assert_eq!(
            d.greeting_version(r, busy).unwrap().unwrap().kind,
            GreetingKind::Busy
        );
        assert_eq!(
            d.greeting_version(r, plain).unwrap().unwrap().kind,
            GreetingKind::NoAnswer
        );
        assert_eq!(
            d.greeting(r, GreetingKind::Busy).unwrap(),
            Some((vec![4, 5], 1))
        );
        // Replaced: the revision moves, so a cached copy is known to be old.
        assert!(
            d.put_greeting(r, GreetingKind::NoAnswer, &[9], None, 3)
                .unwrap()
        );
        assert_eq!(
            d.greeting(r, GreetingKind::NoAnswer).unwrap(),
            Some((vec![9], 2))
        );
        assert!(d.delete_greeting(r, GreetingKind::Busy, None).unwrap());
        assert!(!d.delete_greeting(r, GreetingKind::Busy, None).unwrap());
        assert_eq!(
            d.greeting_version(r, busy).unwrap().unwrap().kind,
            GreetingKind::NoAnswer
        );
        assert_eq!(d.greetings_len().unwrap(), 1);
        assert_eq!(
            d.greetings_seen().unwrap(),
            0,
            "local writes carry no bucket revision"
        );
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn the_bucket_s_revisions_order_the_copy_and_say_where_to_follow_from() {
        let (d, path) = dir();
        let r = n("+15551230002");
        assert!(
            d.put_greeting(r, GreetingKind::NoAnswer, &[1], Some(7), 1)
                .unwrap()
        );
        // A late copy of an older value changes nothing.
        assert!(
            !d.put_greeting(r, GreetingKind::NoAnswer, &[0], Some(5), 2)
                .unwrap()
        );
        assert!(
            !d.delete_greeting(r, GreetingKind::NoAnswer, Some(6))
                .unwrap()
        );
        assert_eq!(
            d.greeting(r, GreetingKind::NoAnswer).unwrap(),
            Some((vec![1], 7))
        );
        assert_eq!(
            d.greetings_seen().unwrap(),
            0,
            "only the follower says what it saw"
        );
        d.follow_greeting(9, Some((r, GreetingKind::NoAnswer, None)), 3)
            .unwrap();
        assert_eq!(d.greeting(r, GreetingKind::NoAnswer).unwrap(), None);
        d.follow_greeting(8, None, 4).unwrap();
        assert_eq!(d.greetings_seen().unwrap(), 9, "a removal counts as seen");
        d.follow_greeting(10, Some((r, GreetingKind::Busy, Some(&[5]))), 5)
            .unwrap();
        assert_eq!(
            d.greeting(r, GreetingKind::Busy).unwrap(),
            Some((vec![5], 10))
        );
        assert_eq!(d.greetings_seen().unwrap(), 10);
        d.clear_greetings().unwrap();
        assert_eq!(d.greetings_seen().unwrap(), 0);
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn the_table_is_bounded() {
        let (mut d, path) = dir();
        d.max_entries = 2;
        d.put_greeting(n("+15551230001"), GreetingKind::NoAnswer, &[1], None, 0)
            .unwrap();
        d.put_greeting(n("+15551230001"), GreetingKind::Busy, &[1], None, 0)
            .unwrap();
        assert!(matches!(
            d.put_greeting(n("+15551230002"), GreetingKind::NoAnswer, &[1], None, 0),
            Err(Error::Full("greetings"))
        ));
        // Replacing one still works.
        d.put_greeting(n("+15551230001"), GreetingKind::Busy, &[2], None, 1)
            .unwrap();
        std::fs::remove_dir_all(path).unwrap();
    }
}
