//! What replication to the NATS JetStream cluster needs from the store
//! (docs/configuration.md, `[store] replication`): each message's row as a record, and
//! which rows JetStream does not have yet.
//!
//! Every row has a `revision`, raised by a trigger on each change of its state, and the
//! `replicated` revision JetStream acknowledged; a row is behind while `replicated <
//! revision`, so a change made while its record was on the wire is sent again. A row
//! removed (retention) leaves its id in `replica_gone` until JetStream forgets it too.
//! Triggers rather than code at each `UPDATE`: no future change can forget them. They
//! exist only while replication is on ([`Store::replicate`]), so a one-box store keeps no
//! list of removals that nobody drains.

use crate::sql::Cached as _;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::{Result, Store};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS replica_gone (id TEXT PRIMARY KEY);
CREATE INDEX IF NOT EXISTS messages_behind ON messages(received_at_ms)
    WHERE replicated < revision;
";

const TRIGGERS: &str = "
CREATE TRIGGER IF NOT EXISTS replica_revision AFTER UPDATE OF state ON messages
    WHEN NEW.state != OLD.state
    BEGIN UPDATE messages SET revision = revision + 1 WHERE id = NEW.id; END;
CREATE TRIGGER IF NOT EXISTS replica_transcript AFTER UPDATE OF transcript_state ON messages
    WHEN NEW.transcript_state != OLD.transcript_state
    BEGIN UPDATE messages SET revision = revision + 1 WHERE id = NEW.id; END;
CREATE TRIGGER IF NOT EXISTS replica_removed AFTER DELETE ON messages
    BEGIN INSERT OR IGNORE INTO replica_gone (id) VALUES (OLD.id); END;
";

const NO_TRIGGERS: &str = "
DROP TRIGGER IF EXISTS replica_revision;
DROP TRIGGER IF EXISTS replica_transcript;
DROP TRIGGER IF EXISTS replica_removed;
DELETE FROM replica_gone;
";

/// A message's row as JetStream keeps it: enough for another server to list it, notify
/// it, play it by its link number and verify its web link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// `{server}-{16 hex}`.
    pub id: String,
    /// The server that recorded it.
    pub server: String,
    /// E.164 digits.
    pub recipient: u64,
    /// E.164 digits, when known.
    pub caller: Option<u64>,
    /// ms since the epoch.
    pub received_at_ms: u64,
    /// Length of the audio.
    pub duration_ms: u64,
    /// E.164 digits of the number that plays it.
    pub link_number: u64,
    /// The code a caller other than the recipient enters.
    pub access_code: String,
    /// `new`, `notified`, `heard`, `saved` or `deleted`.
    pub state: String,
    /// ms since the epoch.
    pub state_changed_ms: u64,
    /// The web link's token hash (hex), when it has one.
    pub web_hash: Option<String>,
    /// The row's revision this record is.
    pub revision: u64,
    /// The transcript's words, once done (records written before transcripts: none).
    #[serde(default)]
    pub transcript: Option<String>,
    /// The API's `transcript_state` (records written before transcripts: `off`).
    #[serde(default = "transcripts_off")]
    pub transcript_state: String,
}

fn transcripts_off() -> String {
    "off".into()
}

/// What the replicator must do next for one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behind {
    /// Send this record, with the audio unless `had_audio` (JetStream acknowledged an
    /// earlier revision, so it has the audio).
    Record {
        /// The row now (boxed: a record with its transcript is large beside a `Gone`).
        record: Box<MessageRecord>,
        /// An earlier revision was acknowledged.
        had_audio: bool,
    },
    /// The row is gone: JetStream forgets it.
    Gone(String),
}

impl Store {
    /// Turns the bookkeeping on (`on`) or off; run at start, before any call.
    pub fn replicate(&self, on: bool) -> Result<()> {
        self.db()
            .execute_batch(if on { TRIGGERS } else { NO_TRIGGERS })?;
        Ok(())
    }

    /// The record of message `id`, if it exists.
    pub fn record(&self, id: &str) -> Result<Option<MessageRecord>> {
        self.read_db()
            .one(
                "SELECT id, recipient, caller, received_at_ms, duration_ms, link_number,
                        access_code, state, state_changed_ms, web_hash, revision, origin,
                        transcript, transcript_state
                 FROM messages WHERE id = ?1",
                [id],
                |r| {
                    let hash: Option<Vec<u8>> = r.get(9)?;
                    Ok(MessageRecord {
                        id: r.get(0)?,
                        server: r
                            .get::<_, Option<String>>(11)?
                            .unwrap_or_else(|| self.server_id().to_string()),
                        recipient: r.get::<_, i64>(1)? as u64,
                        caller: r.get::<_, Option<i64>>(2)?.map(|c| c as u64),
                        received_at_ms: r.get::<_, i64>(3)? as u64,
                        duration_ms: r.get::<_, i64>(4)? as u64,
                        link_number: r.get::<_, i64>(5)? as u64,
                        access_code: r.get(6)?,
                        state: r.get(7)?,
                        state_changed_ms: r.get::<_, i64>(8)? as u64,
                        web_hash: hash.map(|h| h.iter().map(|b| format!("{b:02x}")).collect()),
                        revision: r.get::<_, i64>(10)? as u64,
                        transcript: r.get(12)?,
                        transcript_state: r.get(13)?,
                    })
                },
            )
            .optional()
            .map_err(Into::into)
    }

    /// Up to `limit` rows JetStream is behind on, removals first, then the oldest.
    pub fn behind(&self, limit: usize) -> Result<Vec<Behind>> {
        let db = self.read_db();
        let mut out: Vec<Behind> = db
            .prepare_cached("SELECT id FROM replica_gone LIMIT ?1")?
            .query_map([limit as i64], |r| r.get(0))?
            .map(|id| id.map(Behind::Gone))
            .collect::<rusqlite::Result<_>>()?;
        let ids: Vec<(String, i64)> = db
            .prepare_cached(
                "SELECT id, replicated FROM messages WHERE replicated < revision
                 ORDER BY received_at_ms LIMIT ?1",
            )?
            .query_map([(limit - out.len().min(limit)) as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        drop(db);
        for (id, replicated) in ids {
            if let Some(record) = self.record(&id)? {
                out.push(Behind::Record {
                    record: Box::new(record),
                    had_audio: replicated > 0,
                });
            }
        }
        Ok(out)
    }

    /// The revision of message `id` JetStream acknowledged (0: none yet); None when the
    /// message is gone.
    pub fn replicated_revision(&self, id: &str) -> Result<Option<u64>> {
        let replicated: Option<i64> = self
            .read_db()
            .one("SELECT replicated FROM messages WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(replicated.map(|r| r.max(0) as u64))
    }

    /// Rows JetStream is behind on (the status's `unreplicated`).
    pub fn behind_count(&self) -> Result<u64> {
        let n: i64 = self.read_db().one(
            "SELECT (SELECT count(*) FROM messages WHERE replicated < revision)
                  + (SELECT count(*) FROM replica_gone)",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// JetStream acknowledged revision `revision` of `id` (a later one stays behind).
    ///
    /// Committed without a sync of its own (the next deposit's commit syncs it with its
    /// own): a mark lost with the host's power only makes the record and audio be sent
    /// again, and a deposit waiting for the writer behind an fsync per mark waited for
    /// nothing.
    pub fn replicated(&self, id: &str, revision: u64) -> Result<()> {
        let db = self.db();
        db.pragma_update(None, "synchronous", "NORMAL")?;
        let done = db.run(
            "UPDATE messages SET replicated = ?2 WHERE id = ?1 AND replicated < ?2",
            params![id, revision as i64],
        );
        db.pragma_update(None, "synchronous", "FULL")?;
        done?;
        Ok(())
    }

    /// JetStream forgot removed message `id`.
    pub fn forgotten(&self, id: &str) -> Result<()> {
        self.db()
            .run("DELETE FROM replica_gone WHERE id = ?1", [id])?;
        Ok(())
    }

    /// What a deposit's first write sends of message `id`'s audio, of which JetStream has
    /// the first `shipped` bytes (sent while it was recorded): its finished header and
    /// the bytes from `shipped` on, read alone, or the whole file when its header reaches
    /// past `shipped`. A 5-minute message's deposit reads its last seconds, not its 2.4
    /// MB. None when it has no audio.
    pub fn audio_from(&self, id: &str, shipped: u64) -> Result<Option<AudioPart>> {
        use crate::audio::{open_if_present, read_from};
        let Some(file) = open_if_present(&self.audio_path(id))? else {
            return Ok(None);
        };
        let (mut head, _) = read_from(&file, 0, HEAD_MAX)?;
        let header_len = crate::wav::parse(&head).map(|p| p.data.0 as u64);
        let Some(header_len) = header_len.filter(|&h| h < shipped) else {
            let (tail, _) = read_from(&file, head.len() as u64, u64::MAX)?;
            head.extend_from_slice(&tail);
            return Ok(Some(AudioPart::Whole(head)));
        };
        head.truncate(header_len as usize);
        // A message trimmed after its start was shipped is shorter than what was: its
        // length and header alone finish it.
        let (rest, len) = read_from(&file, shipped, u64::MAX)?;
        Ok(Some(AudioPart::Rest(AudioRest {
            head,
            rest,
            from: shipped.min(len),
            len,
        })))
    }
}

/// The most of a file read to find its header: ours is 44 bytes and a `bxls` chunk of a
/// few dozen; one past this is read whole.
const HEAD_MAX: u64 = 4096;

/// A message's audio as a deposit's first JetStream write sends it ([`Store::audio_from`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioPart {
    /// The whole WAV file.
    Whole(Vec<u8>),
    /// What JetStream lacks of a file whose start was shipped while it was recorded.
    Rest(AudioRest),
}

/// What JetStream lacks of a WAV file whose first `from` bytes it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioRest {
    /// The file's finished header (the bytes before its samples).
    pub head: Vec<u8>,
    /// The file's bytes from `from` to its end.
    pub rest: Vec<u8>,
    /// Where `rest` begins in the file (JetStream has what is before).
    pub from: u64,
    /// The file's length.
    pub len: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MessageState, NewMessage};
    use boxless_core::{LinkPool, PhoneNumber};

    fn new_store() -> (std::path::PathBuf, Store) {
        let dir = crate::tests::tempdir();
        let pool = LinkPool::parse(&["+18005550100-+18005550101"]).unwrap();
        let s = Store::open(&dir, "ms1", pool).unwrap();
        (dir, s)
    }

    fn deposit_one(s: &Store) -> String {
        let samples = vec![0i16; 8000];
        let msg = NewMessage {
            recipient: PhoneNumber::parse_e164("+15551230002").unwrap(),
            caller: None,
            received_at_ms: 1,
            samples: &samples,
            sample_rate: 8000,
            encoding: crate::Encoding::Pcm16,
        };
        s.deposit(&msg, |_| "sms".into()).unwrap().id
    }

    #[test]
    fn a_row_is_behind_until_its_revision_is_acknowledged_and_again_after_a_change() {
        let (_dir, s) = new_store();
        s.replicate(true).unwrap();
        let id = deposit_one(&s);
        let Behind::Record {
            record: r,
            had_audio: false,
        } = &s.behind(10).unwrap()[0]
        else {
            panic!("a record, its audio not sent yet")
        };
        assert_eq!(
            (r.id.as_str(), r.revision, r.state.as_str()),
            (id.as_str(), 1, "new")
        );
        assert_eq!(r.access_code.len(), 6);
        assert_eq!(s.behind_count().unwrap(), 1);
        // Heard while revision 1 was on the wire: acknowledging 1 leaves it behind.
        assert!(s.set_state(&id, MessageState::Heard, 5).unwrap());
        s.replicated(&id, 1).unwrap();
        let Behind::Record {
            record: r,
            had_audio: true,
        } = &s.behind(10).unwrap()[0]
        else {
            panic!("still behind, its audio sent")
        };
        assert_eq!((r.revision, r.state.as_str()), (2, "heard"));
        assert_eq!(s.replicated_revision(&id).unwrap(), Some(1));
        s.replicated(&id, 2).unwrap();
        assert_eq!(s.replicated_revision(&id).unwrap(), Some(2));
        assert_eq!(s.replicated_revision("ms1-0000000000000000").unwrap(), None);
        assert!(s.behind(10).unwrap().is_empty());
        assert_eq!(s.behind_count().unwrap(), 0);
        // The mark's own commit skipped the sync; every other change still syncs.
        let sync: i64 = s
            .db()
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous = FULL");
    }

    #[test]
    fn a_removed_row_is_forgotten_and_nothing_is_kept_with_replication_off() {
        let (_dir, s) = new_store();
        s.replicate(true).unwrap();
        let id = deposit_one(&s);
        s.replicated(&id, 1).unwrap();
        s.db()
            .run("DELETE FROM messages WHERE id = ?1", [&id])
            .unwrap();
        assert_eq!(s.behind(10).unwrap(), [Behind::Gone(id.clone())]);
        s.forgotten(&id).unwrap();
        assert!(s.behind(10).unwrap().is_empty());

        s.replicate(false).unwrap();
        let other = deposit_one(&s);
        assert!(s.set_state(&other, MessageState::Saved, 5).unwrap());
        s.db()
            .run("DELETE FROM messages WHERE id = ?1", [&other])
            .unwrap();
        let gone: i64 = s
            .db()
            .one("SELECT count(*) FROM replica_gone", [], |r| r.get(0))
            .unwrap();
        assert_eq!(gone, 0);
    }

    #[test]
    fn a_deposit_sends_only_what_its_recording_did_not_ship_with_the_finished_header() {
        let (_dir, s) = new_store();
        let id = deposit_one(&s);
        let file = s.audio_file(&id, true).unwrap().unwrap();
        let header_len = crate::wav::parse(&file).unwrap().data.0;
        let len = file.len() as u64;
        // Half shipped: the header as it is now and the second half.
        let AudioPart::Rest(AudioRest {
            head,
            rest,
            from,
            len: l,
        }) = s.audio_from(&id, len / 2).unwrap().unwrap()
        else {
            panic!("the rest")
        };
        assert_eq!((from, l), (len / 2, len));
        assert_eq!(head, file[..header_len]);
        assert_eq!(rest, file[(len / 2) as usize..]);
        // Trimmed after it was shipped: the header and the length finish it.
        let Some(AudioPart::Rest(AudioRest { rest, from, .. })) =
            s.audio_from(&id, len + 100).unwrap()
        else {
            panic!("the rest")
        };
        assert_eq!((rest.len(), from), (0, len));
        // Nothing past the header shipped (or nothing at all): the whole file.
        for shipped in [0, header_len as u64] {
            assert_eq!(
                s.audio_from(&id, shipped).unwrap(),
                Some(AudioPart::Whole(file.clone()))
            );
        }
        assert_eq!(s.audio_from("ms1-0000000000000000", 100).unwrap(), None);
    }
}
