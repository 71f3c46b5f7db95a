//! Statements prepared once per connection.
//!
//! rusqlite's `Connection::execute` and `query_row` parse their SQL on every call: on the
//! deposit path, about a tenth of the store writer's CPU in a profile of
//! `bench/deposit-load.sh` (bench/RESULTS.md, "Deposit path"). [`Cached`] runs the same
//! calls through the connection's statement cache, sized by [`CACHE`] to hold every
//! statement the store runs.

use rusqlite::trace::{TraceEvent, TraceEventCodes};
use rusqlite::{Connection, Params, Row};

/// Statements kept per connection: more than the store has (about a hundred), so none is
/// parsed twice.
const CACHE: usize = 192;

/// `execute` and `query_row` through the statement cache.
pub(crate) trait Cached {
    /// Runs one statement; the rows it changed.
    fn run<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    /// The first row of a query, through `f`.
    fn one<T, P: Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn run<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn one<T, P: Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// Sizes `conn`'s statement cache for the store's statements, and keeps each statement's
/// plan from depending on the values bound to it.
///
/// Without the query planner stability guarantee (QPSG), SQLite marks a statement whose
/// plan could change with a bound value (a `?` compared with a column that a partial index
/// covers, a `LIMIT ?`) and parses it again at the next step after a new value is bound:
/// the cache would then save nothing. The store's statements name the states a partial
/// index covers as literals, so their plans do not need the values (the query-plan test in
/// `lib.rs` checks the ones that matter).
///
/// A statement that runs longer than [`SLOW`] is logged (its SQL, never its values) and
/// counted in `boxless_store_slow_statements_total`: the store's writer is one thread, and
/// a slow statement on it delays every deposit's `200` behind it.
pub(crate) fn prepare_once(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(CACHE);
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.trace_v2(TraceEventCodes::SQLITE_TRACE_PROFILE, Some(slow))
}

/// How long a statement may take before it is logged as slow.
const SLOW: std::time::Duration = std::time::Duration::from_millis(100);

fn slow(e: TraceEvent<'_>) {
    if let TraceEvent::Profile(stmt, took) = e
        && took >= SLOW
    {
        metrics::counter!("boxless_store_slow_statements_total").increment(1);
        tracing::warn!(
            ms = took.as_millis() as u64,
            // One line, however the statement was written.
            statement = %stmt.sql().split_whitespace().collect::<Vec<_>>().join(" "),
            "slow store statement"
        );
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use crate::outbox::Lane;
    use crate::{LINKS_IN_USE, NewMessage, outbox, tests};

    /// The statements a deposit and the notice worker run at each call are parsed once:
    /// SQLite would parse them again after each new binding without QPSG.
    #[test]
    fn a_deposit_s_statements_are_parsed_once() {
        let dir = tests::tempdir();
        let s = tests::store(&dir);
        let samples = vec![0i16; 8000];
        for i in 0..3 {
            let msg = NewMessage {
                recipient: tests::n(&format!("+1555123000{i}")),
                caller: None,
                received_at_ms: 1 + i as u64,
                samples: &samples,
                sample_rate: 8000,
                encoding: crate::Encoding::Pcm16,
            };
            s.deposit(&msg, |_| "x".into()).unwrap();
            s.due(boxless_core::now_ms(), 10, Lane::Sms).unwrap();
        }
        let status = |db: &rusqlite::Connection, sql: &str| {
            let st = db.prepare_cached(sql).unwrap();
            let steps = st.get_status(StatementStatus::VmStep);
            (steps, st.get_status(StatementStatus::RePrepare))
        };
        let (steps, again) = status(&s.db(), LINKS_IN_USE);
        assert!(steps > 0, "choose_link ran through the cache");
        assert_eq!(again, 0, "choose_link parsed again");
        // The worker's query ran on whichever reader was free.
        let readers: Vec<_> = s
            .readers
            .iter()
            .map(|r| status(&r.lock().unwrap(), outbox::DUE))
            .collect();
        assert!(
            readers.iter().any(|&(steps, _)| steps > 0),
            "due ran through the cache"
        );
        assert!(
            readers.iter().all(|&(_, again)| again == 0),
            "due parsed again: {readers:?}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
