//! The recipients' preferences as this process knows them (`recipients.sqlite`): the
//! operator's entries and the numbers that texted STOP.
//!
//! With the `local` control backend this file is the truth; with `nats` it is the copy a
//! process keeps of the JetStream key-value bucket (each entry with the bucket's revision,
//! so an older update never overwrites a newer one), and what it uses while NATS is away.
//! The recipients' own greetings live in the same file (`crate::greetings`).

use crate::sql::Cached as _;
use std::path::Path;
use std::sync::Mutex;

use boxless_core::PhoneNumber;
use boxless_core::recipient::{Prefs, PrefsInput};
use rusqlite::{Connection, OptionalExtension, params};

use crate::{Error, Result, sql_ms};

/// Entries at most: STOP from any phone makes one, so the table is bounded.
pub const MAX_ENTRIES: i64 = 1_000_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS recipients (
    number INTEGER PRIMARY KEY,
    prefs TEXT NOT NULL,
    revision INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS notify_members (
    member INTEGER NOT NULL,
    recipient INTEGER NOT NULL,
    PRIMARY KEY (member, recipient)
);
";

/// The recipients' preferences.
#[derive(Debug)]
pub struct Directory {
    conn: Mutex<Connection>,
    pub(crate) max_entries: i64,
}

pub(crate) fn key(n: PhoneNumber) -> i64 {
    n.as_u64() as i64
}

/// Prefs as stored (the input form, JSON).
pub fn to_json(p: &Prefs) -> String {
    serde_json::to_string(&p.input()).expect("prefs serialise")
}

/// Prefs from their stored form.
pub fn from_json(number: PhoneNumber, s: &[u8]) -> Option<Prefs> {
    let i: PrefsInput = serde_json::from_slice(s).ok()?;
    Prefs::parse(number, i).ok()
}

impl Directory {
    /// Opens (creating) `path`.
    pub fn open(path: &Path) -> Result<Directory> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        crate::sql::prepare_once(&mut conn)?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::greetings::SCHEMA)?;
        Ok(Directory {
            conn: Mutex::new(conn),
            max_entries: MAX_ENTRIES,
        })
    }

    pub(crate) fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry for `n`.
    pub fn get(&self, n: PhoneNumber) -> Result<Option<Prefs>> {
        let db = self.db();
        let raw: Option<String> = db
            .one(
                "SELECT prefs FROM recipients WHERE number = ?1",
                [key(n)],
                |r| r.get(0),
            )
            .optional()?;
        Ok(raw.and_then(|r| from_json(n, r.as_bytes())))
    }

    /// The stored revision of `n` (0: none).
    pub fn revision(&self, n: PhoneNumber) -> Result<u64> {
        let v: Option<i64> = self
            .db()
            .one(
                "SELECT revision FROM recipients WHERE number = ?1",
                [key(n)],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    /// Sets `n`'s entry at `revision` (None: one above the stored). An update older than
    /// the stored one is ignored; returns whether it was applied.
    pub fn put(&self, n: PhoneNumber, p: &Prefs, revision: Option<u64>, now: u64) -> Result<bool> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let stored: Option<i64> = tx
            .one(
                "SELECT revision FROM recipients WHERE number = ?1",
                [key(n)],
                |r| r.get(0),
            )
            .optional()?;
        let rev = match (revision, stored) {
            (Some(r), Some(s)) if (r as i64) < s => return Ok(false),
            (Some(r), _) => r as i64,
            (None, s) => s.unwrap_or(0) + 1,
        };
        if stored.is_none() {
            let count: i64 = tx.one("SELECT COUNT(*) FROM recipients", [], |r| r.get(0))?;
            if count >= self.max_entries {
                return Err(Error::Full("recipients"));
            }
        }
        tx.run(
            "INSERT OR REPLACE INTO recipients (number, prefs, revision, updated_ms) VALUES (?1, ?2, ?3, ?4)",
            params![key(n), to_json(p), rev, sql_ms(now)],
        )?;
        tx.run("DELETE FROM notify_members WHERE recipient = ?1", [key(n)])?;
        for m in &p.notify_numbers {
            tx.run(
                "INSERT OR IGNORE INTO notify_members (member, recipient) VALUES (?1, ?2)",
                params![key(*m), key(n)],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Removes `n`'s entry (when `revision` is not older than the stored one).
    pub fn delete(&self, n: PhoneNumber, revision: Option<u64>) -> Result<bool> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let gone = tx.run(
            "DELETE FROM recipients WHERE number = ?1 AND (?2 IS NULL OR revision <= ?2)",
            params![key(n), revision.map(|r| r as i64)],
        )?;
        if gone > 0 {
            tx.run("DELETE FROM notify_members WHERE recipient = ?1", [key(n)])?;
        }
        tx.commit()?;
        Ok(gone > 0)
    }

    /// True when `n` takes no SMS.
    pub fn opted_out(&self, n: PhoneNumber) -> bool {
        matches!(self.get(n), Ok(Some(p)) if p.opted_out)
    }

    /// True when a call from `caller` counts as one from `recipient`: the same number, or
    /// one of its `notify_numbers`.
    pub fn stands_for(&self, caller: PhoneNumber, recipient: PhoneNumber) -> bool {
        caller == recipient
            || self
                .db()
                .one(
                    "SELECT 1 FROM notify_members WHERE member = ?1 AND recipient = ?2",
                    params![key(caller), key(recipient)],
                    |_| Ok(()),
                )
                .optional()
                .ok()
                .flatten()
                .is_some()
    }

    /// Entries held.
    pub fn len(&self) -> Result<u64> {
        let v: i64 = self
            .db()
            .one("SELECT COUNT(*) FROM recipients", [], |r| r.get(0))?;
        Ok(v as u64)
    }

    /// True when it holds no entry.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use boxless_core::Rng;

    pub(crate) fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse_e164(s).unwrap()
    }

    /// A directory of its own in a fresh temporary folder (returned to be removed).
    pub(crate) fn dir() -> (Directory, std::path::PathBuf) {
        let d = std::env::temp_dir().join(format!(
            "boxless-dir-{}-{}",
            std::process::id(),
            Rng::from_entropy().next_u64()
        ));
        (Directory::open(&d.join("recipients.sqlite")).unwrap(), d)
    }

    #[test]
    fn entries_with_revisions_and_members() {
        let (d, path) = dir();
        let r = n("+15551230002");
        let mut p = Prefs {
            notify_numbers: vec![n("+15551230009")],
            ..Prefs::default()
        };
        assert!(d.put(r, &p, Some(5), 1).unwrap());
        assert_eq!(d.get(r).unwrap(), Some(p.clone()));
        assert!(d.stands_for(n("+15551230009"), r));
        assert!(d.stands_for(r, r));
        assert!(!d.stands_for(n("+15551230008"), r));
        // An older update (a late copy from the bucket) changes nothing.
        p.opted_out = true;
        assert!(!d.put(r, &p, Some(4), 2).unwrap());
        assert!(!d.opted_out(r));
        assert!(d.put(r, &p, None, 3).unwrap());
        assert_eq!(d.revision(r).unwrap(), 6);
        assert!(d.opted_out(r));
        assert!(!d.delete(r, Some(5)).unwrap(), "older than the entry");
        assert!(d.delete(r, None).unwrap());
        assert_eq!(d.get(r).unwrap(), None);
        assert!(!d.stands_for(n("+15551230009"), r));
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn the_table_is_bounded() {
        let (mut d, path) = dir();
        d.max_entries = 3;
        for k in 0..3 {
            d.put(n(&format!("+1555123000{k}")), &Prefs::default(), None, 0)
                .unwrap();
        }
        assert!(matches!(
            d.put(n("+15551230009"), &Prefs::default(), None, 0),
            Err(Error::Full(_))
        ));
        // Updating an existing entry still works.
        d.put(n("+15551230000"), &Prefs::default(), None, 1)
            .unwrap();
        std::fs::remove_dir_all(path).unwrap();
    }
}
