//! The per-server store: message rows and the notification outbox in SQLite (WAL), audio
//! as WAV files, written so that a committed message survives `kill -9` at any instant.
//!
//! Order of a deposit: the WAV is written and fsynced where it waits (a recording's file,
//! or `audio/incoming/`); then the message row, its link number and its outbox rows are
//! committed in one transaction (`synchronous = FULL`); then the file moves to its place
//! (`audio`: the layout on disk). A crash before the commit leaves a file only where
//! [`Store::open`] looks (it removes it); one after it, a move that open finishes.
#![warn(missing_docs)]

use crate::sql::Cached as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use boxless_core::recipient::{Channel, Route};
use boxless_core::{LinkPool, PhoneNumber, Rng, now_ms};
use rusqlite::{Connection, OptionalExtension, params};

pub mod adopt;
pub mod audio;
pub mod directory;
pub mod events;
pub mod fallback;
pub mod greetings;
mod lockout;
pub mod outbox;
pub mod receipts;
pub mod recording;
pub mod replica;
pub mod retention;
mod sql;
mod threads;
pub mod transcript;
pub mod wav;
pub mod web;

pub use directory::Directory;
pub use events::{Event, GreetingChange};
pub use outbox::{DigestFacts, JobKind, Lane, OutboxJob, Outlook, Window};
pub use receipts::{Delivery, EarlyReceipt, Receipted, Settled};
pub use recording::{Arrival, Recording};
pub use retention::{Aging, Fate, Retention, Swept};
pub use transcript::{Hold, Transcript, TranscriptState};
pub use wav::Encoding;
pub use web::{Activity, WEB_LINK};

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite failed.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The file system failed.
    #[error("audio file: {0}")]
    Io(#[from] std::io::Error),
    /// WAV encoding failed.
    #[error("wav: {0}")]
    Wav(#[from] hound::Error),
    /// A bounded table is full.
    #[error("{0}: full")]
    Full(&'static str),
    /// The store's threads are gone (the store was dropped), or a job on them panicked.
    #[error("the store stopped")]
    Stopped,
}

/// Store result.
pub type Result<T> = std::result::Result<T, Error>;

/// A message's life (docs/http.md, "Routes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// Stored, not yet notified.
    New,
    /// The SMSC accepted the notification.
    Notified,
    /// Played to the end.
    Heard,
    /// Kept by the recipient.
    Saved,
    /// Deleted.
    Deleted,
}

impl MessageState {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::New => "new",
            MessageState::Notified => "notified",
            MessageState::Heard => "heard",
            MessageState::Saved => "saved",
            MessageState::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> MessageState {
        match s {
            "notified" => MessageState::Notified,
            "heard" => MessageState::Heard,
            "saved" => MessageState::Saved,
            "deleted" => MessageState::Deleted,
            _ => MessageState::New,
        }
    }
}

/// A notification's delivery record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// `sms`, `email` or `webhook`.
    pub channel: String,
    /// Where it goes: a number (the recipient, or one of its `notify_numbers`), an
    /// e-mail address or a URL.
    pub to: Option<String>,
    /// Its place in the fallback order (0: first).
    pub step: u32,
    /// `pending` | `accepted` | `delivered` | `undeliverable` | `expired` | `blocked` |
    /// `opted_out` | `merged` | `skipped` (an earlier channel delivered).
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// When the SMSC took it (ms since the epoch).
    pub accepted_at_ms: Option<u64>,
    /// When its receipt settled it.
    pub final_at_ms: Option<u64>,
}

/// A stored message as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// `{server}-{16 hex}`.
    pub id: String,
    /// Who the message is for.
    pub recipient: PhoneNumber,
    /// Who left it, when known.
    pub caller: Option<PhoneNumber>,
    /// ms since the epoch.
    pub received_at_ms: u64,
    /// Length of the audio.
    pub duration_ms: u64,
    /// The number that plays it.
    pub link_number: PhoneNumber,
    /// The server holding it.
    pub server: String,
    /// Lifecycle state.
    pub state: MessageState,
    /// Per-channel delivery.
    pub notifications: Vec<Notification>,
    /// The recogniser's words, once `transcript_state` is `Done`.
    pub transcript: Option<String>,
    /// Where the transcript stands.
    pub transcript_state: TranscriptState,
}

/// What a deposit stores.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// Recipient.
    pub recipient: PhoneNumber,
    /// Caller, if known.
    pub caller: Option<PhoneNumber>,
    /// When the call was answered (ms since epoch).
    pub received_at_ms: u64,
    /// Mono audio at `sample_rate`.
    pub samples: &'a [i16],
    /// 8000 (G.711 calls) or 16000 (G.722: wideband).
    pub sample_rate: u32,
    /// How to keep it on disk (G.711 only at 8 kHz; wideband stays PCM).
    pub encoding: Encoding,
}

impl NewMessage<'_> {
    /// Whose message, from whom, when.
    pub fn arrival(&self) -> Arrival {
        Arrival {
            recipient: self.recipient,
            caller: self.caller,
            received_at_ms: self.received_at_ms,
        }
    }
}

/// An unheard message as retrieval sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMessage {
    /// Store id.
    pub id: String,
    /// Its recipient.
    pub recipient: Option<PhoneNumber>,
    /// Who left it.
    pub caller: Option<PhoneNumber>,
    /// When (ms since epoch).
    pub received_at_ms: u64,
    /// Its access code.
    pub access_code: String,
}

/// Everything the SMS text may mention, handed to the text renderer.
#[derive(Debug, Clone, Copy)]
pub struct SmsFacts<'a> {
    /// Whose message, from whom, when.
    pub message: Arrival,
    /// Its link number.
    pub link_number: PhoneNumber,
    /// Its access code.
    pub access_code: &'a str,
    /// Length of the audio.
    pub duration_ms: u64,
    /// The mark a text writes where the web link goes ([`web::WEB_LINK`]; filled when the
    /// notice is sent), when messages get one.
    pub web_link: Option<&'a str>,
}

/// One server's store.
#[derive(Debug)]
pub struct Store {
    /// The one connection that writes (and reads within a change).
    conn: Mutex<Connection>,
    /// Read-only connections: reads beside the writes (WAL).
    readers: Vec<Mutex<Connection>>,
    /// The next reader to try first.
    next_reader: std::sync::atomic::AtomicUsize,
    /// The writer and reader threads async code reaches the store through.
    threads: threads::Threads,
    dir: PathBuf,
    web: std::sync::OnceLock<web::WebLinks>,
    /// Set while transcripts are on: how long new messages' notices wait for theirs.
    transcripts: std::sync::OnceLock<transcript::Hold>,
    audio: audio::AudioDir,
    server_id: String,
    pool: LinkPool,
    rng: Mutex<Rng>,
    events_on: std::sync::atomic::AtomicBool,
    /// Without delivery receipts, an SMS the SMSC took is as delivered as it gets.
    accepted_is_final: std::sync::atomic::AtomicBool,
    /// No notice is due while set: a server that was taken over catches up first
    /// ([`Store::hold_notices`]).
    held: std::sync::atomic::AtomicBool,
    /// Tests only: how long each access stalls ([`Store::slow_down`]).
    #[cfg(debug_assertions)]
    stall_ms: std::sync::atomic::AtomicU64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    recipient INTEGER NOT NULL,
    caller INTEGER,
    received_at_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    link_number INTEGER NOT NULL,
    access_code TEXT NOT NULL,
    state TEXT NOT NULL,
    state_changed_ms INTEGER NOT NULL,
    reminded INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_recipient ON messages(recipient, state);
CREATE INDEX IF NOT EXISTS messages_link ON messages(link_number, recipient);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT,
    channel TEXT NOT NULL,
    destination INTEGER NOT NULL,
    source INTEGER,
    text TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    sent_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_ms);
";

impl Store {
    /// Opens (creating) `dir/messages.sqlite` and `dir/audio/`, removing leftovers of an
    /// interrupted deposit.
    pub fn open(dir: &Path, server_id: &str, pool: LinkPool) -> Result<Store> {
        let audio = audio::AudioDir::open(dir.join("audio"))?;
        let mut conn = Connection::open(dir.join("messages.sqlite"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        sql::prepare_once(&mut conn)?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(lockout::SCHEMA)?;
        // Stores made before reminders and web links existed lack these columns.
        add_column(
            &conn,
            "messages",
            "reminded",
            "ALTER TABLE messages ADD COLUMN reminded INTEGER NOT NULL DEFAULT 0",
        )?;
        add_column(
            &conn,
            "messages",
            "web_hash",
            "ALTER TABLE messages ADD COLUMN web_hash BLOB",
        )?;
        // Replication's bookkeeping (`replica`): a row's revision and the one JetStream has.
        add_column(
            &conn,
            "messages",
            "revision",
            "ALTER TABLE messages ADD COLUMN revision INTEGER NOT NULL DEFAULT 1",
        )?;
        add_column(
            &conn,
            "messages",
            "replicated",
            "ALTER TABLE messages ADD COLUMN replicated INTEGER NOT NULL DEFAULT 0",
        )?;
        // The server a message was taken over from (NULL: this server's own).
        add_column(
            &conn,
            "messages",
            "origin",
            "ALTER TABLE messages ADD COLUMN origin TEXT",
        )?;
        transcript::migrate(&conn)?;
        conn.execute_batch(replica::SCHEMA)?;
        // Web tokens are found by their hash; the operator's page counts by minute.
        conn.execute_batch(
            "CREATE UNIQUE INDEX IF NOT EXISTS messages_web ON messages(web_hash);
             CREATE INDEX IF NOT EXISTS messages_received ON messages(received_at_ms);",
        )?;
        conn.execute_batch(retention::SCHEMA)?;
        outbox::migrate(&conn)?;
        conn.execute_batch("CREATE INDEX IF NOT EXISTS outbox_sent ON outbox(sent_at_ms)")?;
        conn.execute_batch(events::SCHEMA)?;
        let path = dir.join("messages.sqlite");
        let readers = (0..threads::READERS)
            .map(|_| {
                let mut r = Connection::open_with_flags(
                    &path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                r.busy_timeout(std::time::Duration::from_secs(5))?;
                sql::prepare_once(&mut r)?;
                Ok(Mutex::new(r))
            })
            .collect::<Result<Vec<_>>>()?;
        let checkpointer = Connection::open(&path)?;
        checkpointer.pragma_update(None, "synchronous", "FULL")?;
        checkpointer.busy_timeout(std::time::Duration::from_secs(5))?;
        // Reading the mode opens the WAL: a checkpoint on a connection that has not read
        // the database yet does nothing.
        let _: String = checkpointer.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        let threads = threads::Threads::start(server_id, checkpointer)?;
        threads.checkpoint_beside(&mut conn)?;
        let store = Store {
            conn: Mutex::new(conn),
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            threads,
            dir: dir.to_path_buf(),
            web: std::sync::OnceLock::new(),
            transcripts: std::sync::OnceLock::new(),
            audio,
            server_id: server_id.to_string(),
            pool,
            rng: Mutex::new(Rng::from_entropy()),
            events_on: std::sync::atomic::AtomicBool::new(false),
            accepted_is_final: std::sync::atomic::AtomicBool::new(false),
            held: std::sync::atomic::AtomicBool::new(false),
            #[cfg(debug_assertions)]
            stall_ms: std::sync::atomic::AtomicU64::new(0),
        };
        store.finish_incoming()?;
        Ok(store)
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock is a bug elsewhere; the connection itself stays usable.
        let db = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        self.stall();
        db
    }

    /// A read-only connection: a free one if any, else the next in turn.
    fn read_db(&self) -> std::sync::MutexGuard<'_, Connection> {
        let first = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = self.readers.len();
        let db = (0..n)
            .find_map(|i| self.readers[(first + i) % n].try_lock().ok())
            .unwrap_or_else(|| {
                self.readers[first % n]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
            });
        self.stall();
        db
    }

    /// Tests only (debug builds: an optimized build has neither this nor the check behind
    /// it): from now on every access to the database and every read of audio takes `by`
    /// longer, the connection held meanwhile, as on a busy cloud disk. Not a cargo
    /// feature: a dev-dependency's feature would reach the release binary the interop
    /// suite runs, and make it differ from (and be built beside) `cargo build --release`'s.
    #[cfg(debug_assertions)]
    pub fn slow_down(&self, by: std::time::Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.stall_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    #[inline]
    fn stall(&self) {
        #[cfg(debug_assertions)]
        match self.stall_ms.load(std::sync::atomic::Ordering::Relaxed) {
            0 => {}
            ms => std::thread::sleep(std::time::Duration::from_millis(ms)),
        }
    }

    /// The server this store belongs to.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// Where a message's audio lives.
    pub fn audio_path(&self, id: &str) -> PathBuf {
        self.audio.path(id)
    }

    /// A new message id: `<server>-<16 hex>` ([`server_of`] reads the server back).
    fn new_id(&self) -> String {
        let r = self
            .rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_u64();
        format!(
            "{}-{:010x}{:06x}",
            self.server_id,
            now_ms() & 0xff_ffff_ffff,
            r & 0xff_ffff
        )
    }

    /// A 6-digit access code from the OS's randomness (not the id generator, whose
    /// outputs the API shows), uniform by rejection.
    fn new_code(&self) -> Result<String> {
        loop {
            let mut b = [0u8; 4];
            getrandom::fill(&mut b).map_err(|e| Error::Io(std::io::Error::other(e)))?;
            let v = u32::from_le_bytes(b);
            // 4_294_000_000 is the largest multiple of 10^6 below 2^32.
            if v < 4_294_000_000 {
                return Ok(format!("{:06}", v % 1_000_000));
            }
        }
    }

    /// Stores a message durably and queues its SMS to the recipient; returns what was
    /// stored. `render` writes the SMS text from the facts chosen inside the transaction.
    pub fn deposit(
        &self,
        msg: &NewMessage<'_>,
        render: impl FnOnce(&SmsFacts<'_>) -> String,
    ) -> Result<MessageInfo> {
        let mut render = Some(render);
        self.deposit_routed(msg, &[Route::Sms(vec![msg.recipient])], 0, |f, _| {
            render.take().map(|r| r(f)).unwrap_or_default()
        })
    }

    /// Stores a message durably and queues its notices in one transaction: for each step
    /// of `routes` (the recipient's channels in order), one row per destination, the
    /// first due now and step `k` due `k * fallback_after_ms` later unless an earlier step
    /// delivers first (then it is `skipped`) or fails for good first (then it is due at
    /// once): [`fallback`]. `render(facts, channel)` writes each channel's text once.
    pub fn deposit_routed(
        &self,
        msg: &NewMessage<'_>,
        routes: &[Route],
        fallback_after_ms: u64,
        mut render: impl FnMut(&SmsFacts<'_>, Channel) -> String,
    ) -> Result<MessageInfo> {
        let id = self.new_id();
        let duration_ms = msg.samples.len() as u64 * 1000 / u64::from(msg.sample_rate.max(1));
        self.stage_audio(
            &id,
            &wav::encode(msg.samples, msg.sample_rate, msg.encoding),
        )?;
        self.commit_message(
            &id,
            msg.arrival(),
            duration_ms,
            routes,
            fallback_after_ms,
            &mut render,
        )?;
        self.publish_audio(&id)?;
        self.get(&id).map(|m| m.expect("row committed above"))
    }

    /// The message row, its link number, access code and notices, in one transaction (its
    /// audio is durable already).
    fn commit_message(
        &self,
        id: &str,
        msg: Arrival,
        duration_ms: u64,
        routes: &[Route],
        fallback_after_ms: u64,
        render: &mut impl FnMut(&SmsFacts<'_>, Channel) -> String,
    ) -> Result<()> {
        let code = self.new_code()?;
        let mut db = self.db();
        let tx = db.transaction()?;
        let link = choose_link(&tx, &self.pool, msg.recipient)?;
        let now = now_ms();
        let web_hash = self.own_web_hash(id);
        let hold = self.transcript_hold();
        let transcript = if hold.is_some() {
            TranscriptState::Pending
        } else {
            TranscriptState::Off
        };
        tx.run(
            "INSERT INTO messages (id, recipient, caller, received_at_ms, duration_ms, link_number, access_code, state, state_changed_ms, web_hash, transcript_state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'new', ?8, ?9, ?10)",
            params![id, msg.recipient.as_u64() as i64, msg.caller.map(|c| c.as_u64() as i64), msg.received_at_ms as i64, duration_ms as i64, link.as_u64() as i64, code, now as i64, web_hash, transcript.as_str()],
        )?;
        let facts = SmsFacts {
            message: msg,
            link_number: link,
            access_code: &code,
            duration_ms,
            web_link: web_hash.is_some().then_some(web::WEB_LINK),
        };
        events::emit(
            &tx,
            self.events_on(),
            "message.deposited",
            serde_json::json!({
                "message_id": id,
                "recipient": msg.recipient.to_string(),
                "caller": msg.caller.map(|c| c.to_string()),
                "link_number": link.to_string(),
                "duration_ms": duration_ms,
                "received_at": boxless_core::rfc3339(msg.received_at_ms),
            }),
            now,
        )?;
        let when = Schedule {
            now,
            fallback_after_ms,
            hold,
        };
        queue_notices(&tx, id, &facts, routes, when, render)?;
        tx.commit()?;
        Ok(())
    }

    /// Writes message `id`'s WAV file durably (whole, or not at all) where it waits for
    /// its row's commit; [`Store::publish_audio`] then moves it to its place.
    pub(crate) fn stage_audio(&self, id: &str, bytes: &[u8]) -> Result<()> {
        self.audio.stage(id, bytes)
    }

    /// Moves message `id`'s staged audio to its place, once its row has committed.
    pub(crate) fn publish_audio(&self, id: &str) -> Result<()> {
        self.audio.publish(id, &self.audio.staged(id))
    }

    /// One message.
    pub fn get(&self, id: &str) -> Result<Option<MessageInfo>> {
        let db = self.read_db();
        let row = db
            .one(select_message!("WHERE id = ?1"), [id], |r| self.row(r))
            .optional()?;
        match row {
            Some(mut m) => {
                m.notifications = notifications(&db, &m.id)?;
                Ok(Some(m))
            }
            None => Ok(None),
        }
    }

    /// Messages, newest first, optionally for one recipient.
    pub fn list(&self, recipient: Option<PhoneNumber>, limit: usize) -> Result<Vec<MessageInfo>> {
        let db = self.read_db();
        // Two statements, not `?1 IS NULL OR recipient = ?1`: SQLite plans a statement once,
        // and with the OR it walks every message newest first until the limit is met (67 ms
        // at a million messages for a recipient with six). By recipient, the index
        // `messages_recipient` reaches that recipient's rows alone, whatever the store holds.
        let mut out: Vec<MessageInfo> = match recipient {
            Some(r) => db
                .prepare_cached(BY_RECIPIENT)?
                .query_map(params![r.as_u64() as i64, limit as i64], |r| self.row(r))?
                .collect::<rusqlite::Result<_>>()?,
            None => db
                .prepare_cached(select_message!("ORDER BY received_at_ms DESC, id LIMIT ?1"))?
                .query_map(params![limit as i64], |r| self.row(r))?
                .collect::<rusqlite::Result<_>>()?,
        };
        for m in &mut out {
            m.notifications = notifications(&db, &m.id)?;
        }
        Ok(out)
    }

    fn row(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageInfo> {
        let num = |v: i64| PhoneNumber::parse_e164(&format!("+{v}"));
        let recipient: i64 = r.get(1)?;
        let caller: Option<i64> = r.get(2)?;
        let link: i64 = r.get(5)?;
        let state: String = r.get(6)?;
        let bad = || {
            rusqlite::Error::InvalidColumnType(1, "number".into(), rusqlite::types::Type::Integer)
        };
        Ok(MessageInfo {
            id: r.get(0)?,
            recipient: num(recipient).ok_or_else(bad)?,
            caller: caller.and_then(num),
            received_at_ms: r.get::<_, i64>(3)? as u64,
            duration_ms: r.get::<_, i64>(4)? as u64,
            link_number: num(link).ok_or_else(bad)?,
            server: self.server_id.clone(),
            state: MessageState::parse(&state),
            notifications: Vec::new(),
            transcript: r.get(7)?,
            transcript_state: TranscriptState::parse(&r.get::<_, String>(8)?),
        })
    }

    /// What a call to `link` from `caller` may hear: the unheard messages of that caller on
    /// that link number when there are any (`true`: the caller-ID is the recipient), else
    /// every unheard message on the link number (`false`: only an access code opens them).
    /// Each comes with its access code, oldest first.
    pub fn for_link(
        &self,
        link: PhoneNumber,
        caller: Option<PhoneNumber>,
        stands_for: impl Fn(PhoneNumber, PhoneNumber) -> bool,
    ) -> Result<(Vec<LinkMessage>, bool)> {
        let db = self.read_db();
        let mut stmt = db.prepare_cached(
            "SELECT id, recipient, caller, received_at_ms, access_code FROM messages
             WHERE link_number = ?1 AND state IN ('new', 'notified') ORDER BY received_at_ms, id",
        )?;
        let all: Vec<LinkMessage> = stmt
            .query_map([link.as_u64() as i64], |r| {
                let num =
                    |v: Option<i64>| v.and_then(|v| PhoneNumber::parse_e164(&format!("+{v}")));
                Ok(LinkMessage {
                    id: r.get(0)?,
                    recipient: num(r.get(1)?),
                    caller: num(r.get(2)?),
                    received_at_ms: r.get::<_, i64>(3)? as u64,
                    access_code: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        // The recipient's own caller-ID, or one of its notify_numbers.
        let mine: Vec<LinkMessage> = all
            .iter()
            .filter(|m| match (caller, m.recipient) {
                (Some(c), Some(r)) => stands_for(c, r),
                _ => false,
            })
            .cloned()
            .collect();
        Ok(if mine.is_empty() {
            (all, false)
        } else {
            (mine, true)
        })
    }

    /// Records what retrieval did with a message: `heard` (played through; only from
    /// `new`/`notified`), `saved` or `deleted` (audio removed). False if no such message.
    pub fn set_state(&self, id: &str, state: MessageState, now_ms: u64) -> Result<bool> {
        if state == MessageState::Deleted {
            return self.delete(id);
        }
        let sql = match state {
            MessageState::Heard => {
                "UPDATE messages SET state = 'heard', state_changed_ms = ?2 WHERE id = ?1 AND state IN ('new', 'notified')"
            }
            MessageState::Saved => {
                "UPDATE messages SET state = 'saved', state_changed_ms = ?2 WHERE id = ?1 AND state != 'deleted'"
            }
            _ => return Ok(false),
        };
        self.changed(id, sql, state.as_str(), now_ms)
    }

    /// Runs `sql` (?1 = id, ?2 = now) and, when it changed the message, writes its
    /// `message.<state>` event in the same transaction.
    fn changed(&self, id: &str, sql: &str, state: &str, now: u64) -> Result<bool> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let n = tx.run(sql, params![id, now as i64])?;
        if n > 0 {
            let recipient: Option<i64> = tx
                .one("SELECT recipient FROM messages WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?;
            events::emit(
                &tx,
                self.events_on(),
                &format!("message.{state}"),
                serde_json::json!({
                    "message_id": id,
                    "recipient": recipient.map(|r| format!("+{r}")),
                }),
                now,
            )?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// A message's audio, mono, and its sample rate (8 or 16 kHz), whatever its encoding.
    pub fn audio(&self, id: &str) -> Result<(u32, Vec<i16>)> {
        self.stall();
        let b = fs::read(self.audio_path(id))?;
        wav::decode(&b).ok_or_else(|| not_our_wav(id))
    }

    /// A message's audio file: as stored (`original`), else as 16-bit PCM WAV (what every
    /// player reads). None when it has none (deleted, or never stored).
    pub fn audio_file(&self, id: &str, original: bool) -> Result<Option<Vec<u8>>> {
        let Some(file) = audio::open_if_present(&self.audio_path(id))? else {
            return Ok(None);
        };
        let (b, _) = audio::read_from(&file, 0, u64::MAX)?;
        if original {
            return Ok(Some(b));
        }
        wav::to_pcm16(b).map(Some).ok_or_else(|| not_our_wav(id))
    }

    /// Marks a message deleted and removes its audio. False if there is no such message.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let deleted = self.changed(
            id,
            "UPDATE messages SET state = 'deleted', state_changed_ms = ?2 WHERE id = ?1 AND state != 'deleted'",
            "deleted",
            now_ms(),
        )?;
        // Deleting a deleted message changes nothing (no second event) and is no error.
        let n = usize::from(
            deleted
                || self
                    .db()
                    .one("SELECT 1 FROM messages WHERE id = ?1", [id], |_| Ok(()))
                    .optional()?
                    .is_some(),
        );
        if n > 0 {
            self.remove_audio(id)?;
        }
        Ok(n > 0)
    }

    /// Free bytes on the file system holding the audio.
    pub fn free_disk(&self) -> u64 {
        free_bytes(self.audio.root()).unwrap_or(0)
    }
}

fn not_our_wav(id: &str) -> Error {
    Error::Io(std::io::Error::other(format!(
        "{id}: not a WAV file we wrote"
    )))
}

/// Runs `ddl` (an `ALTER TABLE ... ADD COLUMN`) unless `table` already has `column`: a
/// store made by an older version gains it on open.
/// The server that recorded message `id` (`<server>-<16 hex>`; a server id may hold `-`,
/// the hex part never does).
pub fn server_of(id: &str) -> Option<&str> {
    id.rsplit_once('-')
        .map(|(server, _)| server)
        .filter(|s| !s.is_empty())
}

/// When a message's notices are due.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// When they are queued.
    pub now: u64,
    /// Step `k` is due `k * fallback_after_ms` after `now`.
    pub fallback_after_ms: u64,
    /// While its transcript is awaited, none is due before `now` plus its channel's hold.
    pub hold: Option<Hold>,
}

/// Queues message `id`'s notices within `tx`: for each step of `routes`, one row per
/// destination, due as `when` says (see [`Store::deposit_routed`]).
pub(crate) fn queue_notices(
    tx: &Connection,
    id: &str,
    facts: &SmsFacts<'_>,
    routes: &[Route],
    when: Schedule,
    render: &mut impl FnMut(&SmsFacts<'_>, Channel) -> String,
) -> Result<()> {
    let caller = facts.message.caller.map(|c| c.as_u64() as i64);
    let link = facts.link_number.as_u64() as i64;
    let now = when.now;
    for (step, route) in routes.iter().enumerate() {
        let due = now.saturating_add((step as u64).saturating_mul(when.fallback_after_ms));
        // Held for the transcript; its outcome brings the row forward
        // (`Store::transcribed`), the hold's end sends it without.
        let held = when
            .hold
            .map_or(0, |h| now.saturating_add(h.of(route.channel())));
        let due = due.max(held);
        let text = render(facts, route.channel());
        let insert = |to: PhoneNumber, address: Option<&str>| {
            tx.run(
                "INSERT INTO outbox (message_id, channel, destination, source, text, state, next_attempt_ms, kind, caller, created_ms, step, address)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, 'message', ?7, ?8, ?9, ?10)",
                params![id, route.channel().as_str(), to.as_u64() as i64, link, text, sql_ms(due), caller, now as i64, step as i64, address],
            )
        };
        match route {
            Route::Sms(numbers) => {
                for to in numbers {
                    insert(*to, None)?;
                }
            }
            Route::Email(a) | Route::Webhook(a) => {
                insert(facts.message.recipient, Some(a))?;
            }
        }
    }
    Ok(())
}

pub(crate) fn add_column(conn: &Connection, table: &str, column: &str, ddl: &str) -> Result<()> {
    let has = conn
        .prepare_cached("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
        .exists([table, column])?;
    if !has {
        conn.execute_batch(ddl)?;
    }
    Ok(())
}

/// `SELECT` of the columns [`Store::row`] reads, in its order, followed by the rest.
macro_rules! select_message {
    ($rest:literal) => {
        concat!(
            "SELECT id, recipient, caller, received_at_ms, duration_ms, link_number, state, transcript, transcript_state FROM messages ",
            $rest
        )
    };
}
pub(crate) use select_message;

/// A recipient's messages, newest first: through `messages_recipient`, that recipient's
/// rows alone ([`Store::list`]).
const BY_RECIPIENT: &str =
    select_message!("WHERE recipient = ?1 ORDER BY received_at_ms DESC, id LIMIT ?2");

/// The lowest link number of the pool that no unheard message of `recipient` uses; when
/// every number is in use, the one with the fewest such messages (the number is then shared
/// and retrieval plays them one after another).
/// How many unheard messages of a recipient each link number holds.
const LINKS_IN_USE: &str = "SELECT link_number, COUNT(*) FROM messages
    WHERE recipient = ?1 AND state IN ('new', 'notified') GROUP BY link_number";

fn choose_link(
    tx: &rusqlite::Transaction<'_>,
    pool: &LinkPool,
    recipient: PhoneNumber,
) -> Result<PhoneNumber> {
    let mut stmt = tx.prepare_cached(LINKS_IN_USE)?;
    let used: std::collections::HashMap<i64, i64> = stmt
        .query_map([recipient.as_u64() as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut best: Option<(i64, PhoneNumber)> = None;
    for n in pool.iter() {
        let count = used.get(&(n.as_u64() as i64)).copied().unwrap_or(0);
        if count == 0 {
            return Ok(n);
        }
        if best.is_none_or(|(c, _)| count < c) {
            best = Some((count, n));
        }
    }
    // Config checks guarantee a non-empty pool, so some number was seen.
    Ok(best.expect("link pool is not empty").1)
}

fn notifications(db: &Connection, id: &str) -> Result<Vec<Notification>> {
    let mut stmt = db.prepare_cached(
        "SELECT channel, state, attempts, last_error, sent_at_ms, final_ms, destination, address, step
         FROM outbox WHERE message_id = ?1 ORDER BY id",
    )?;
    let v = stmt
        .query_map([id], |r| {
            Ok(Notification {
                channel: r.get(0)?,
                state: r.get(1)?,
                attempts: r.get::<_, i64>(2)? as u32,
                last_error: r.get(3)?,
                accepted_at_ms: r.get::<_, Option<i64>>(4)?.map(|v| v.max(0) as u64),
                final_at_ms: r.get::<_, Option<i64>>(5)?.map(|v| v.max(0) as u64),
                to: match r.get::<_, Option<String>>(7)? {
                    Some(a) => Some(a),
                    None => r.get::<_, Option<i64>>(6)?.map(|v| format!("+{v}")),
                },
                step: r.get::<_, i64>(8)?.max(0) as u32,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(v)
}

/// A store of server `ms1` (links +18005550100-09) in a fresh temporary directory, for
/// the tests of this crate; returns the directory too, for its removal.
#[cfg(test)]
pub(crate) fn temp_store(tag: &str) -> (Store, PathBuf) {
    let d = std::env::temp_dir().join(format!(
        "boxless-{tag}-{}-{}",
        std::process::id(),
        Rng::from_entropy().next_u64()
    ));
    fs::create_dir_all(&d).expect("temp dir");
    let s = Store::open(
        &d,
        "ms1",
        LinkPool::parse(&["+18005550100-+18005550109"]).expect("pool"),
    )
    .expect("store opens");
    (s, d)
}

/// 0.1 s of silence from +15551230001 for +15551230002, for the tests of this crate.
#[cfg(test)]
pub(crate) fn test_message() -> NewMessage<'static> {
    NewMessage {
        recipient: PhoneNumber::parse_e164("+15551230002").expect("E.164"),
        caller: PhoneNumber::parse_e164("+15551230001"),
        received_at_ms: 1_000,
        samples: &[0i16; 800],
        sample_rate: 8000,
        encoding: crate::Encoding::Pcm16,
    }
}

/// A time in ms as SQLite's signed integer (saturating).
fn sql_ms(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// Free bytes (for unprivileged users) of the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse_e164(s).unwrap()
    }

    pub(crate) fn store(dir: &Path) -> Store {
        Store::open(
            dir,
            "ms1",
            LinkPool::parse(&["+18005550100-+18005550101"]).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn deposit_is_listed_with_audio_and_outbox() {
        let dir = tempdir();
        let s = store(&dir);
        let samples: Vec<i16> = (0..8000).map(|i| (i % 100) as i16).collect();
        let msg = NewMessage {
            recipient: n("+15551230002"),
            caller: Some(n("+15551230001")),
            received_at_ms: 1,
            samples: &samples,
            sample_rate: 8000,
            encoding: crate::Encoding::Pcm16,
        };
        let m = s
            .deposit(&msg, |f| {
                format!("from {} link {}", f.message.caller.unwrap(), f.link_number)
            })
            .unwrap();
        assert_eq!(m.duration_ms, 1000);
        assert_eq!(m.link_number, n("+18005550100"));
        assert_eq!(m.state, MessageState::New);
        let r = hound::WavReader::open(s.audio_path(&m.id)).unwrap();
        assert_eq!(r.spec().sample_rate, 8000);
        let back: Vec<i16> = r.into_samples::<i16>().map(|x| x.unwrap()).collect();
        assert_eq!(back, samples);
        let jobs = s.due(u64::MAX, 10, crate::Lane::Sms).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].text, "from +15551230001 link +18005550100");
        s.failed(&jobs[0], u64::MAX - 1, "down").unwrap();
        assert!(s.due(now_ms(), 10, crate::Lane::Sms).unwrap().is_empty());
        s.accepted(&jobs[0], 1, None, 5).unwrap();
        let m = s.get(&m.id).unwrap().unwrap();
        assert_eq!(m.state, MessageState::Notified);
        assert_eq!(m.notifications[0].attempts, 2);
        assert_eq!(s.pending().unwrap(), 0);
    }

    #[test]
    fn pcmu_is_kept_as_sent_in_half_the_space_and_served_as_pcm() {
        let dir = tempdir();
        let s = store(&dir);
        // A minute of what a µ-law decoder gives.
        let samples: Vec<i16> = (0..480_000u32)
            .map(|i| audio_codec_algorithms::decode_ulaw((i % 251) as u8))
            .collect();
        let msg = NewMessage {
            recipient: n("+15551230002"),
            caller: None,
            received_at_ms: 1,
            samples: &samples,
            sample_rate: 8000,
            encoding: Encoding::Mulaw,
        };
        let m = s.deposit(&msg, |_| "t".into()).unwrap();
        assert_eq!(m.duration_ms, 60_000);
        let size = std::fs::metadata(s.audio_path(&m.id)).unwrap().len();
        assert!(size <= 500_000, "a minute of PCMU takes {size} bytes");
        assert_eq!(s.audio(&m.id).unwrap(), (8000, samples.clone()));
        let original = s.audio_file(&m.id, true).unwrap().unwrap();
        assert_eq!(original.len() as u64, size);
        assert_eq!(wav::parse(&original).unwrap().encoding, Encoding::Mulaw);
        let pcm = s.audio_file(&m.id, false).unwrap().unwrap();
        assert_eq!(pcm.len(), 44 + 2 * samples.len(), "served as 16-bit PCM");
        assert!(s.delete(&m.id).unwrap());
        assert_eq!(s.audio_file(&m.id, false).unwrap(), None);
    }

    #[test]
    fn link_numbers_lowest_free_then_shared() {
        let dir = tempdir();
        let s = store(&dir);
        let r = n("+15551230002");
        let msg = NewMessage {
            recipient: r,
            caller: None,
            received_at_ms: 1,
            samples: &[0; 80],
            sample_rate: 8000,
            encoding: crate::Encoding::Pcm16,
        };
        let links: Vec<_> = (0..4)
            .map(|_| {
                s.deposit(&msg, |_| String::new())
                    .unwrap()
                    .link_number
                    .to_string()
            })
            .collect();
        assert_eq!(
            links,
            [
                "+18005550100",
                "+18005550101",
                "+18005550100",
                "+18005550101"
            ]
        );
        let other = NewMessage {
            recipient: n("+15551239999"),
            ..msg
        };
        assert_eq!(
            s.deposit(&other, |_| String::new()).unwrap().link_number,
            n("+18005550100")
        );
        assert_eq!(s.list(Some(r), 100).unwrap().len(), 4);
        // A shared number plays each of the recipient's messages on it, oldest first.
        let (shared, mine) = s
            .for_link(n("+18005550100"), Some(r), |c, r| c == r)
            .unwrap();
        assert!(mine);
        assert_eq!(shared.len(), 2, "pool exhaustion loses no message");
    }

    #[test]
    fn reopen_keeps_committed_and_drops_orphans() {
        let dir = tempdir();
        let deposit = |s: &Store, at| {
            let msg = NewMessage {
                recipient: n("+15551230002"),
                caller: None,
                received_at_ms: at,
                samples: &[1; 80],
                sample_rate: 8000,
                encoding: crate::Encoding::Pcm16,
            };
            s.deposit(&msg, |_| "x".into()).unwrap().id
        };
        let (id, moved, legacy, stray) = {
            let s = store(&dir);
            let (id, moved, legacy) = (deposit(&s, 1), deposit(&s, 2), deposit(&s, 3));
            // A crash after `moved`'s commit, before its audio left `incoming/`; and
            // `legacy` as a store from before the layout keeps it.
            fs::rename(s.audio_path(&moved), s.audio.staged(&moved)).unwrap();
            fs::rename(
                s.audio_path(&legacy),
                dir.join(format!("audio/{legacy}.wav")),
            )
            .unwrap();
            // A crash between a row's removal and its file's.
            let stray = deposit(&s, 4);
            s.db()
                .run("DELETE FROM messages WHERE id = ?1", [&stray])
                .unwrap();
            (id, moved, legacy, s.audio_path(&stray))
        };
        // Deposits that never committed, whole or half written.
        fs::write(dir.join("audio/incoming/ms1-orphan.wav"), b"x").unwrap();
        fs::write(dir.join("audio/incoming/ms1-half.wav.tmp"), b"x").unwrap();
        let s = store(&dir);
        for m in [&id, &moved, &legacy] {
            assert!(s.get(m).unwrap().is_some());
            assert!(s.audio_path(m).exists(), "{m} in its place");
        }
        assert_eq!(fs::read_dir(dir.join("audio/incoming")).unwrap().count(), 0);
        // Open does not look among the stored files; the sweep does, a few leaves a time.
        assert!(stray.exists());
        let (mut cursor, mut removed) = (0, 0);
        for _ in 0..audio::LEAVES / 4096 {
            removed += s.sweep_audio(&mut cursor, 4096).unwrap();
        }
        assert_eq!((removed, cursor), (1, 0), "one stray, every leaf seen once");
        assert!(!stray.exists());
        for m in [&id, &moved, &legacy] {
            assert!(s.audio_path(m).exists(), "{m} kept by the sweep");
        }
        assert!(s.delete(&id).unwrap());
        assert!(!s.audio_path(&id).exists());
        assert_eq!(s.get(&id).unwrap().unwrap().state, MessageState::Deleted);
    }

    #[test]
    fn retrieval_finds_by_link_and_caller_and_states_move() {
        let dir = tempdir();
        let s = store(&dir);
        let r = n("+15551230002");
        let msg = NewMessage {
            recipient: r,
            caller: Some(n("+15551230001")),
            received_at_ms: 1,
            samples: &[7; 80],
            sample_rate: 8000,
            encoding: crate::Encoding::Pcm16,
        };
        let a = s.deposit(&msg, |_| String::new()).unwrap();
        let other = NewMessage {
            recipient: n("+15551239999"),
            ..msg.clone()
        };
        let b = s.deposit(&other, |_| String::new()).unwrap();
        assert_eq!(a.link_number, b.link_number);
        let (mine, matched) = s.for_link(a.link_number, Some(r), |c, r| c == r).unwrap();
        assert!(matched);
        assert_eq!(
            mine.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            [a.id.as_str()]
        );
        assert_eq!(mine[0].access_code.len(), 6);
        let (all, matched) = s
            .for_link(a.link_number, Some(n("+15550000000")), |c, r| c == r)
            .unwrap();
        assert!(!matched);
        assert_eq!(all.len(), 2);
        assert_eq!(s.audio(&a.id).unwrap(), (8000, vec![7; 80]));
        assert!(s.set_state(&a.id, MessageState::Heard, now_ms()).unwrap());
        assert!(
            !s.set_state(&a.id, MessageState::Heard, now_ms()).unwrap(),
            "heard once"
        );
        assert_eq!(s.get(&a.id).unwrap().unwrap().state, MessageState::Heard);
        // Heard: the pair (link, recipient) names it no more, and its number is free again.
        assert!(!s.for_link(a.link_number, Some(r), |c, r| c == r).unwrap().1);
        assert_eq!(
            s.deposit(&msg, |_| String::new()).unwrap().link_number,
            a.link_number
        );
        assert!(s.set_state(&b.id, MessageState::Saved, now_ms()).unwrap());
        assert!(s.set_state(&b.id, MessageState::Deleted, now_ms()).unwrap());
        assert!(!s.audio_path(&b.id).exists());
    }

    /// A message received at 1,000 ms: retention's tests run on virtual time from there.
    fn received_at_1000() -> NewMessage<'static> {
        NewMessage {
            recipient: n("+15551230002"),
            caller: Some(n("+15551230001")),
            received_at_ms: 1000,
            samples: &[1; 80],
            sample_rate: 8000,
            encoding: crate::Encoding::Pcm16,
        }
    }

    #[test]
    fn sweep_reminds_then_expires_on_virtual_time() {
        let dir = tempdir();
        let s = store(&dir);
        let day = 86_400_000u64;
        let msg = received_at_1000();
        let m = s.deposit(&msg, |_| "new".into()).unwrap();
        let heard = s.deposit(&msg, |_| "new".into()).unwrap();
        s.set_state(&heard.id, MessageState::Heard, 1000 + day)
            .unwrap();
        let p = Retention::days(7, 30);
        let render = |a: &Aging, exp: u64| format!("reminder {} {exp}", a.id);
        assert_eq!(
            s.sweep(1000 + 28 * day, &p, render).unwrap(),
            Swept {
                deleted: 1,
                reminded: 0
            },
            "heard one past 7 days"
        );
        assert!(!s.audio_path(&heard.id).exists());
        assert_eq!(
            s.sweep(1000 + 29 * day, &p, render).unwrap(),
            Swept {
                deleted: 0,
                reminded: 1
            }
        );
        assert_eq!(
            s.sweep(1000 + 29 * day + 5, &p, render).unwrap(),
            Swept::default(),
            "one reminder only"
        );
        let texts: Vec<String> = s
            .due(u64::MAX / 4, 10, crate::Lane::Sms)
            .unwrap()
            .into_iter()
            .map(|j| j.text)
            .collect();
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with(&format!("reminder {}", m.id))),
            "{texts:?}"
        );
        assert_eq!(
            s.sweep(1000 + 30 * day, &p, render).unwrap(),
            Swept {
                deleted: 1,
                reminded: 0
            }
        );
        assert!(s.get(&m.id).unwrap().is_none());
        assert!(!s.audio_path(&m.id).exists());
        assert_eq!(s.pending().unwrap(), 0, "its SMS rows went with it");
    }

    #[test]
    fn a_sweep_acts_on_a_bounded_batch_read_through_its_indexes() {
        let dir = tempdir();
        let s = store(&dir);
        let day = 86_400_000u64;
        let msg = received_at_1000();
        let src = s.deposit(&msg, |_| "new".into()).unwrap();
        let saved = s.deposit(&msg, |_| "new".into()).unwrap();
        s.set_state(&saved.id, MessageState::Saved, 1000).unwrap();
        {
            let db = s.db();
            // Copies of one expired message, more than a sweep takes.
            for i in 0..retention::SWEEP_MAX + 3 {
                db.run(
                    "INSERT INTO messages (id, recipient, caller, received_at_ms, duration_ms,
                         link_number, access_code, state, state_changed_ms)
                     SELECT ?1, recipient, caller, received_at_ms, duration_ms, link_number,
                         access_code, state, state_changed_ms FROM messages WHERE id = ?2",
                    params![format!("ms1-copy{i}"), src.id],
                )
                .unwrap();
            }
            for plan in [retention::DUE, BY_RECIPIENT] {
                let mut stmt = db.prepare(&format!("EXPLAIN QUERY PLAN {plan}")).unwrap();
                let steps: Vec<String> = stmt
                    .query_map(
                        rusqlite::params_from_iter(std::iter::repeat_n(0, stmt.parameter_count())),
                        |r| r.get::<_, String>(3),
                    )
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                assert!(
                    steps.iter().all(|st| !st.starts_with("SCAN messages")),
                    "a whole-table read: {steps:?}"
                );
            }
        }
        let p = Retention::days(7, 30);
        let render = |a: &Aging, exp: u64| format!("reminder {} {exp}", a.id);
        let later = 1000 + 31 * day;
        let first = s.sweep(later, &p, render).unwrap();
        assert_eq!(first.deleted as usize, retention::SWEEP_MAX);
        assert_eq!(
            s.sweep(later, &p, render).unwrap().deleted,
            4,
            "the rest, and src"
        );
        assert_eq!(s.sweep(later, &p, render).unwrap(), Swept::default());
        assert!(s.get(&saved.id).unwrap().is_some(), "saved is kept");
    }

    pub(crate) fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "boxless-store-{}-{}",
            std::process::id(),
            Rng::from_entropy().next_u64()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }
}
