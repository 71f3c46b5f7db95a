//! Messages taken over from a lost server, and a server catching up when it comes back
//! (docs/high-availability.md). Both start from the records JetStream keeps
//! (`replica::MessageRecord`):
//!
//! - [`Store::adopt`] keeps another server's message here (its row names its `origin`),
//!   so it is listed, played by its link number and opened by its web link like this
//!   server's own; its changes replicate under its server's key. A message never notified
//!   (`new`) gets its notices queued here, with a web token this store can write.
//! - [`Store::release`] lets a server's messages go when it takes them back: rows, audio
//!   and queued notices, and nothing of it reaches JetStream (the server owns them again).
//! - [`Store::catch_up`] makes a returning server's own rows what JetStream says: removed
//!   meanwhile is removed here, changed meanwhile is changed here, notified meanwhile is
//!   not notified again; what it never had is returned, to be fetched and adopted.
//!
//! While [`Store::hold_notices`] is on, no notice is due: a returning server sends
//! nothing before it knows what was sent for it.

use crate::sql::Cached as _;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use boxless_core::PhoneNumber;
use boxless_core::recipient::Channel;
use rusqlite::{OptionalExtension, params};

use crate::replica::MessageRecord;
use crate::transcript::TranscriptState;
use crate::{Arrival, Result, Route, SmsFacts, Store};

/// What [`Store::catch_up`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CaughtUp {
    /// Rows removed: JetStream forgot them meanwhile (deleted, expired).
    pub removed: usize,
    /// Rows whose state JetStream changed meanwhile.
    pub changed: usize,
    /// Queued notices dropped: their message was notified meanwhile.
    pub notices_dropped: usize,
    /// Records this store lacks: fetch their audio and [`Store::adopt`] them.
    pub missing: Vec<MessageRecord>,
}

fn hex(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

fn number(n: u64) -> Option<PhoneNumber> {
    PhoneNumber::parse_e164(&format!("+{n}"))
}

impl Store {
    /// Holds every notice (none is due) while `on`.
    pub fn hold_notices(&self, on: bool) {
        self.held.store(on, Ordering::Relaxed);
    }

    /// True while notices are held ([`Store::hold_notices`]).
    pub fn held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// Keeps message `r` here with its audio `wav` (written first: a row always has its
    /// audio). Its notices are queued when it was never notified (`new`): `routes` and
    /// `render` as for a deposit. False when the row was here already (nothing changes).
    pub fn adopt(
        &self,
        r: &MessageRecord,
        wav: &[u8],
        routes: &[Route],
        fallback_after_ms: u64,
        mut render: impl FnMut(&SmsFacts<'_>, Channel) -> String,
    ) -> Result<bool> {
        let (Some(recipient), Some(link)) = (number(r.recipient), number(r.link_number)) else {
            return Err(crate::Error::Io(std::io::Error::other(format!(
                "record {} has no valid recipient or link number",
                r.id
            ))));
        };
        if self.get(&r.id)?.is_some() {
            return Ok(false);
        }
        self.stage_audio(&r.id, wav)?;
        let notify = r.state == "new";
        // Notices queued here carry a link this store can make: the record's hash is of a
        // token made with the lost server's key.
        let fresh_hash = notify.then(|| self.own_web_hash(&r.id)).flatten();
        let web_hash = fresh_hash
            .clone()
            .or_else(|| r.web_hash.as_deref().and_then(hex));
        // A new hash is a change JetStream must get: one revision past the record's.
        let revision = r.revision + u64::from(fresh_hash.is_some());
        let origin = (r.server != self.server_id()).then_some(r.server.as_str());
        // A transcript the lost server was still waiting for is asked for here, if this
        // server has a recogniser (the caller submits it); else it will never come.
        // Read as the store's own states: a spelling it does not know is `off`.
        let transcript_state = match TranscriptState::parse(&r.transcript_state) {
            TranscriptState::Pending if self.transcript_hold().is_none() => TranscriptState::Failed,
            s => s,
        }
        .as_str();
        let now = boxless_core::now_ms();
        let mut db = self.db();
        let tx = db.transaction()?;
        let added = tx.run(
            "INSERT OR IGNORE INTO messages (id, recipient, caller, received_at_ms, duration_ms,
                 link_number, access_code, state, state_changed_ms, web_hash, revision,
                 replicated, origin, transcript, transcript_state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                r.id,
                r.recipient as i64,
                r.caller.map(|c| c as i64),
                r.received_at_ms as i64,
                r.duration_ms as i64,
                r.link_number as i64,
                r.access_code,
                r.state,
                r.state_changed_ms as i64,
                web_hash,
                revision as i64,
                r.revision as i64,
                origin,
                r.transcript,
                transcript_state,
            ],
        )? == 1;
        if added && notify {
            let facts = SmsFacts {
                message: Arrival {
                    recipient,
                    caller: r.caller.and_then(number),
                    received_at_ms: r.received_at_ms,
                },
                link_number: link,
                access_code: &r.access_code,
                duration_ms: r.duration_ms,
                web_link: web_hash.is_some().then_some(crate::web::WEB_LINK),
            };
            // Adopted messages are not transcribed here: nothing waits for one.
            let when = crate::Schedule {
                now,
                fallback_after_ms,
                hold: None,
            };
            crate::queue_notices(&tx, &r.id, &facts, routes, when, &mut render)?;
        }
        tx.commit()?;
        drop(db);
        if added {
            self.publish_audio(&r.id)?;
        } else {
            // Kept already (its audio is in place): the staged copy goes.
            crate::audio::remove_if_present(&self.audio.staged(&r.id))?;
        }
        Ok(added)
    }

    /// The ids of the messages taken over from `origin` kept here.
    pub fn adopted(&self, origin: &str) -> Result<Vec<String>> {
        let db = self.read_db();
        let mut stmt = db.prepare_cached("SELECT id FROM messages WHERE origin = ?1")?;
        let ids = stmt
            .query_map([origin], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// Lets every message taken over from `origin` go: its row, its queued notices, its
    /// audio; JetStream is not told (its server owns them again). How many went.
    pub fn release(&self, origin: &str) -> Result<usize> {
        let ids = self.adopted(origin)?;
        self.remove_quietly(&ids)?;
        Ok(ids.len())
    }

    /// Removes rows `ids`, their notices and audio without recording the removal for
    /// JetStream (which has it already, or whose owner decides).
    fn remove_quietly(&self, ids: &[String]) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        for id in ids {
            tx.run("DELETE FROM outbox WHERE message_id = ?1", [id])?;
            tx.run("DELETE FROM messages WHERE id = ?1", [id])?;
            tx.run("DELETE FROM replica_gone WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        drop(db);
        for id in ids {
            self.remove_audio(id)?;
        }
        Ok(())
    }

    /// Makes this server's own rows what JetStream holds of them (`records`, all of this
    /// server's there), after another server answered for it. A row JetStream never had
    /// (recorded while it was away) stays, and is sent.
    pub fn catch_up(&self, records: Vec<MessageRecord>) -> Result<CaughtUp> {
        let mut js: HashMap<String, MessageRecord> =
            records.into_iter().map(|r| (r.id.clone(), r)).collect();
        let mine: Vec<(String, i64)> = {
            let db = self.read_db();
            let mut stmt =
                db.prepare_cached("SELECT id, replicated FROM messages WHERE origin IS NULL")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        let mut out = CaughtUp::default();
        let mut gone = Vec::new();
        let mut db = self.db();
        let tx = db.transaction()?;
        for (id, replicated) in mine {
            let Some(r) = js.remove(&id) else {
                // JetStream had it and forgot it: deleted or expired meanwhile.
                if replicated > 0 {
                    gone.push(id);
                }
                continue;
            };
            if r.revision as i64 <= replicated {
                continue;
            }
            // Changed while another server answered for it: its version wins.
            let web_hash = r.web_hash.as_deref().and_then(hex);
            tx.run(
                "UPDATE messages SET state = ?2, state_changed_ms = ?3, web_hash = ?4,
                     transcript = ?5, transcript_state = ?6 WHERE id = ?1",
                params![
                    id,
                    r.state,
                    r.state_changed_ms as i64,
                    web_hash,
                    r.transcript,
                    TranscriptState::parse(&r.transcript_state).as_str()
                ],
            )?;
            // After the triggers, so that JetStream is not sent what it has.
            tx.run(
                "UPDATE messages SET revision = ?2, replicated = ?2 WHERE id = ?1",
                params![id, r.revision as i64],
            )?;
            out.changed += 1;
            if r.state != "new" {
                out.notices_dropped += tx.run(
                    "UPDATE outbox SET state = 'skipped',
                         last_error = 'notified by the server that answered for this one'
                     WHERE message_id = ?1 AND state = 'pending'",
                    [&id],
                )?;
            }
        }
        tx.commit()?;
        drop(db);
        out.removed = gone.len();
        self.remove_quietly(&gone)?;
        out.missing = js.into_values().collect();
        out.missing.sort_by_key(|r| r.received_at_ms);
        Ok(out)
    }

    /// The row's revision and the one JetStream has (tests, the operator's tools).
    pub fn revisions(&self, id: &str) -> Result<Option<(u64, u64)>> {
        Ok(self
            .read_db()
            .one(
                "SELECT revision, replicated FROM messages WHERE id = ?1",
                [id],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Lane;
    use crate::{MessageState, NewMessage};
    use boxless_core::LinkPool;
    use boxless_core::web::{BaseUrl, WebToken};

    fn store(id: &str, pool: &str) -> Store {
        let dir = crate::tests::tempdir();
        let s = Store::open(&dir, id, LinkPool::parse(&[pool]).unwrap()).unwrap();
        s.replicate(true).unwrap();
        s.enable_web(BaseUrl::parse("https://vm.example.net").unwrap())
            .unwrap();
        s
    }

    fn deposit(s: &Store, at: u64) -> String {
        let samples = vec![100i16; 8000];
        let msg = NewMessage {
            recipient: PhoneNumber::parse_e164("+15551230002").unwrap(),
            caller: PhoneNumber::parse_e164("+15551230001"),
            received_at_ms: at,
            samples: &samples,
            sample_rate: 8000,
            encoding: crate::Encoding::Pcm16,
        };
        s.deposit(&msg, |_| format!("Listen: {}", crate::web::WEB_LINK))
            .unwrap()
            .id
    }

    fn sms_to_recipient() -> Vec<Route> {
        vec![Route::Sms(vec![
            PhoneNumber::parse_e164("+15551230002").unwrap(),
        ])]
    }

    fn text(f: &SmsFacts<'_>, _: Channel) -> String {
        format!("{} Listen: {}", f.link_number, f.web_link.unwrap_or("-"))
    }

    #[test]
    fn a_lost_server_s_message_is_kept_notified_and_opened_here_then_let_go() {
        let ms1 = store("ms1", "+18005550100");
        let ms2 = store("ms2", "+18005550200");
        let id = deposit(&ms1, 1_000);
        let record = ms1.record(&id).unwrap().unwrap();
        let wav = ms1.audio_file(&id, true).unwrap().unwrap();
        // ms1 is lost before its SMS went: ms2 takes the message and notifies it.
        assert!(
            ms2.adopt(&record, &wav, &sms_to_recipient(), 0, text)
                .unwrap()
        );
        assert!(
            !ms2.adopt(&record, &wav, &sms_to_recipient(), 0, text)
                .unwrap(),
            "once"
        );
        let m = ms2.get(&id).unwrap().expect("listed here");
        assert_eq!(
            m.link_number.to_string(),
            "+18005550100",
            "its own link number"
        );
        // Wrong codes on it count here, though it is not of ms2's pool.
        assert!(ms2.wrong_code(m.link_number, 5_000, 1, 60_000).unwrap());
        assert_eq!(ms2.audio_file(&id, true).unwrap().unwrap(), wav);
        let jobs = ms2.due(u64::MAX / 2, 10, Lane::Sms).unwrap();
        assert_eq!(jobs.len(), 1);
        let link = jobs[0].text.rsplit('/').next().unwrap().to_string();
        assert!(
            link.starts_with("ms1."),
            "the link names ms1: {}",
            jobs[0].text
        );
        let token = WebToken::parse(&link).unwrap();
        assert_eq!(ms2.by_web_token(&token).unwrap().unwrap().id, id);
        // Its record goes to JetStream under ms1's key, with the new token's hash.
        let (revision, replicated) = ms2.revisions(&id).unwrap().unwrap();
        assert_eq!(
            (revision, replicated),
            (record.revision + 1, record.revision)
        );
        let again = ms2.record(&id).unwrap().unwrap();
        assert_eq!(again.server, "ms1");
        assert_ne!(again.web_hash, record.web_hash);
        // A message that was notified keeps its link and queues nothing.
        let heard = deposit(&ms1, 2_000);
        assert!(ms1.set_state(&heard, MessageState::Heard, 3_000).unwrap());
        let r = ms1.record(&heard).unwrap().unwrap();
        assert!(ms2.adopt(&r, &wav, &sms_to_recipient(), 0, text).unwrap());
        assert_eq!(ms2.due(u64::MAX / 2, 10, Lane::Sms).unwrap().len(), 1);
        assert_eq!(ms2.record(&heard).unwrap().unwrap().web_hash, r.web_hash);
        // Held: nothing is due.
        ms2.hold_notices(true);
        assert!(ms2.due(u64::MAX / 2, 10, Lane::Sms).unwrap().is_empty());
        ms2.hold_notices(false);
        // ms1 takes them back: gone from here, and JetStream is told nothing.
        assert_eq!(ms2.adopted("ms1").unwrap().len(), 2);
        assert_eq!(ms2.release("ms1").unwrap(), 2);
        assert!(ms2.get(&id).unwrap().is_none());
        assert!(ms2.audio_file(&id, true).unwrap().is_none());
        assert!(ms2.due(u64::MAX / 2, 10, Lane::Sms).unwrap().is_empty());
        assert!(
            ms2.behind(10).unwrap().is_empty(),
            "no removal to replicate"
        );
    }

    #[test]
    fn a_returning_server_takes_what_happened_meanwhile_and_notifies_nothing_twice() {
        let ms1 = store("ms1", "+18005550100");
        let (changed, deleted, unsent) = (
            deposit(&ms1, 1_000),
            deposit(&ms1, 2_000),
            deposit(&ms1, 3_000),
        );
        for id in [&changed, &deleted] {
            ms1.replicated(id, 1).unwrap();
        }
        // What JetStream says after the other server answered for ms1: `changed` was
        // notified and heard, `deleted` is gone, and a message ms1's disk never had.
        let mut heard = ms1.record(&changed).unwrap().unwrap();
        heard.state = "heard".into();
        heard.revision = 4;
        let mut other = heard.clone();
        other.id = "ms1-00000000000000ff".into();
        other.state = "new".into();
        let caught = ms1.catch_up(vec![heard, other.clone()]).unwrap();
        assert_eq!(
            (caught.removed, caught.changed, caught.notices_dropped),
            (1, 1, 1)
        );
        assert_eq!(caught.missing, vec![other]);
        assert!(
            ms1.get(&deleted).unwrap().is_none(),
            "deleted stays deleted"
        );
        assert_eq!(
            ms1.get(&changed).unwrap().unwrap().state,
            MessageState::Heard
        );
        assert_eq!(ms1.revisions(&changed).unwrap(), Some((4, 4)));
        // The message JetStream never had stays, and is the only notice left to send.
        let jobs = ms1.due(u64::MAX / 2, 10, Lane::Sms).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].message_id.as_deref(), Some(unsent.as_str()));
        assert!(ms1.behind(10).unwrap().iter().all(|b| matches!(
            b,
            crate::replica::Behind::Record { record, .. } if record.id == unsent
        )));
    }

    #[test]
    fn a_transcript_travels_with_the_record_and_one_still_awaited_is_asked_again_or_failed() {
        use crate::transcript::{Hold, Transcript, TranscriptState};
        let ms1 = store("ms1", "+18005550100");
        ms1.enable_transcripts(Hold {
            sms_ms: 8_000,
            email_ms: 60_000,
        });
        let (done, waiting) = (deposit(&ms1, 1_000), deposit(&ms1, 2_000));
        let before = ms1.record(&done).unwrap().unwrap();
        assert_eq!(before.transcript_state, "pending");
        let said = Transcript {
            state: TranscriptState::Done,
            text: Some("Call me back.".into()),
        };
        assert!(
            ms1.transcribed(&done, &said, 0, |_, _, _| "SMS".into(), 3_000)
                .unwrap()
        );
        // The transcript is a change JetStream must get.
        let after = ms1.record(&done).unwrap().unwrap();
        assert_eq!(after.revision, before.revision + 1);
        assert_eq!(
            (after.transcript.as_deref(), after.transcript_state.as_str()),
            (Some("Call me back."), "done")
        );
        let wav = ms1.audio_file(&done, true).unwrap().unwrap();
        // A server without a recogniser keeps the words, and fails the one still awaited.
        let ms2 = store("ms2", "+18005550200");
        let pending = ms1.record(&waiting).unwrap().unwrap();
        for r in [&after, &pending] {
            assert!(ms2.adopt(r, &wav, &sms_to_recipient(), 0, text).unwrap());
        }
        let got = ms2.get(&done).unwrap().unwrap();
        assert_eq!(got.transcript.as_deref(), Some("Call me back."));
        assert_eq!(got.transcript_state, TranscriptState::Done);
        let got = ms2.get(&waiting).unwrap().unwrap();
        assert_eq!(got.transcript_state, TranscriptState::Failed);
        // One with a recogniser keeps it pending (its server asks for it).
        let ms3 = store("ms3", "+18005550300");
        ms3.enable_transcripts(Hold {
            sms_ms: 8_000,
            email_ms: 60_000,
        });
        assert!(
            ms3.adopt(&pending, &wav, &sms_to_recipient(), 0, text)
                .unwrap()
        );
        assert_eq!(
            ms3.get(&waiting).unwrap().unwrap().transcript_state,
            TranscriptState::Pending
        );
        // An older record without the fields reads as transcripts off.
        let mut old = serde_json::to_value(&before).unwrap();
        let o = old.as_object_mut().unwrap();
        o.remove("transcript");
        o.remove("transcript_state");
        let old: MessageRecord = serde_json::from_value(old).unwrap();
        assert_eq!(
            (old.transcript, old.transcript_state.as_str()),
            (None, "off")
        );
    }
}
