//! Wrong access codes per link number, from every caller together, kept in the store so
//! that neither a new caller-ID nor a restart resets them (SECURITY.md, attacker 2).
//!
//! A window opens at the first wrong code and lasts `window_ms`; `max` wrong codes within
//! it lock the link number for `window_ms` from the one that reached the limit. While
//! locked no code opens it; only the recipient's own trusted caller-ID still does. One
//! row per link number of this server's pool: the table is bounded by the pool.

use crate::sql::Cached as _;
use boxless_core::PhoneNumber;
use rusqlite::{OptionalExtension, params};

use crate::{Result, Store, sql_ms};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lockouts (
    link_number INTEGER PRIMARY KEY,
    window_start_ms INTEGER NOT NULL,
    wrong INTEGER NOT NULL,
    locked_until_ms INTEGER NOT NULL
);
";

impl Store {
    /// True while `link` is locked at `now`.
    pub fn link_locked(&self, link: PhoneNumber, now: u64) -> Result<bool> {
        let until: Option<i64> = self
            .read_db()
            .one(
                "SELECT locked_until_ms FROM lockouts WHERE link_number = ?1",
                [link.as_u64() as i64],
                |r| r.get(0),
            )
            .optional()?;
        Ok(until.is_some_and(|u| u as u64 > now))
    }

    /// Counts a wrong code on `link` at `now`; returns true when the link is locked after
    /// it. Only numbers of this server's pool, and those of messages it keeps for a server
    /// it took over, are counted (the table stays bounded by them).
    pub fn wrong_code(
        &self,
        link: PhoneNumber,
        now: u64,
        max: u32,
        window_ms: u64,
    ) -> Result<bool> {
        if !self.pool.contains(link) && !self.holds_link(link)? {
            return Ok(false);
        }
        let mut db = self.db();
        let tx = db.transaction()?;
        let row: Option<(i64, i64, i64)> = tx
            .one(
                "SELECT window_start_ms, wrong, locked_until_ms FROM lockouts WHERE link_number = ?1",
                [link.as_u64() as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (start, wrong, until) = match row {
            Some((s, w, u)) if (u as u64) > now || now < s as u64 + window_ms => {
                (s as u64, w as u32, u as u64)
            }
            // No window, or it is over and no lock runs: a new one starts here.
            _ => (now, 0, 0),
        };
        let wrong = wrong.saturating_add(1);
        let until = if wrong >= max && until <= now {
            now + window_ms
        } else {
            until
        };
        tx.run(
            "INSERT INTO lockouts (link_number, window_start_ms, wrong, locked_until_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(link_number) DO UPDATE SET window_start_ms = ?2, wrong = ?3, locked_until_ms = ?4",
            params![link.as_u64() as i64, sql_ms(start), wrong as i64, sql_ms(until)],
        )?;
        tx.commit()?;
        Ok(until > now)
    }
}

impl Store {
    /// True when a message kept here has `link` as its link number.
    fn holds_link(&self, link: PhoneNumber) -> Result<bool> {
        Ok(self
            .read_db()
            .one(
                "SELECT 1 FROM messages WHERE link_number = ?1 LIMIT 1",
                [link.as_u64() as i64],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxless_core::{LinkPool, Rng};

    #[test]
    fn wrong_codes_count_per_link_across_callers_and_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!(
            "boxless-lockout-{}-{}",
            std::process::id(),
            Rng::from_entropy().next_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let pool = || LinkPool::parse(&["+18005550100-+18005550101"]).unwrap();
        let link = PhoneNumber::parse_e164("+18005550100").unwrap();
        let other = PhoneNumber::parse_e164("+18005550101").unwrap();
        let min = 60_000;
        let t = 1_000_000;
        {
            let s = Store::open(&dir, "ms1", pool()).unwrap();
            for k in 0..3 {
                assert!(!s.wrong_code(link, t + k, 4, 15 * min).unwrap());
            }
            assert!(!s.link_locked(link, t + 3).unwrap());
        }
        // A restart keeps the count: the fourth wrong code (any caller) locks.
        let s = Store::open(&dir, "ms1", pool()).unwrap();
        assert!(s.wrong_code(link, t + 10, 4, 15 * min).unwrap());
        assert!(s.link_locked(link, t + 11).unwrap());
        assert!(!s.link_locked(other, t + 11).unwrap(), "per link number");
        assert!(s.link_locked(link, t + 10 + 15 * min - 1).unwrap());
        assert!(
            !s.link_locked(link, t + 10 + 15 * min).unwrap(),
            "until the window ends"
        );
        // A window that ends without reaching the limit starts over.
        assert!(!s.wrong_code(other, t, 2, min).unwrap());
        assert!(
            !s.wrong_code(other, t + min, 2, min).unwrap(),
            "a new window"
        );
        assert!(s.wrong_code(other, t + min + 1, 2, min).unwrap());
        // Numbers outside the pool are not counted: the table stays bounded.
        let stranger = PhoneNumber::parse_e164("+15550000000").unwrap();
        assert!(!s.wrong_code(stranger, t, 1, min).unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
