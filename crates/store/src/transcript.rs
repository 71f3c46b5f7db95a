//! A message's transcript (docs/transcription.md): its state, the hold its notices wait
//! under while the recogniser works, and what lands when it answers.
//!
//! A deposit made while transcripts are on is `pending`, and its notices are due a little
//! later than they would be (the SMS by `transcription.sms_wait_seconds`, e-mail and
//! webhook notices by `timeout_seconds`). The outcome, whenever it comes, re-writes the
//! notices not yet sent with it and makes them due at once; a notice whose hold ran out
//! went without it.

use crate::sql::Cached as _;
use boxless_core::PhoneNumber;
use boxless_core::recipient::Channel;
use rusqlite::{OptionalExtension, params};

use crate::recording::Arrival;
use crate::{Result, SmsFacts, Store, add_column, events, sql_ms};

/// Where a message's transcript stands (the API's `transcript_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscriptState {
    /// Transcripts are off, or the message predates them.
    Off,
    /// Asked for, not yet answered.
    Pending,
    /// The recogniser's words, those it doubts left out.
    Done,
    /// Nothing was said: no voice in the recording, or nothing the recogniser heard.
    NoSpeech,
    /// The recogniser failed, timed out, was skipped while failing, or its queue was full.
    Failed,
}

impl TranscriptState {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TranscriptState::Off => "off",
            TranscriptState::Pending => "pending",
            TranscriptState::Done => "done",
            TranscriptState::NoSpeech => "no_speech",
            TranscriptState::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> TranscriptState {
        match s {
            "pending" => TranscriptState::Pending,
            "done" => TranscriptState::Done,
            "no_speech" => TranscriptState::NoSpeech,
            "failed" => TranscriptState::Failed,
            _ => TranscriptState::Off,
        }
    }
}

/// How long a new message's notices wait for its transcript, per lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The SMS (and a webhook notice, which is as quick).
    pub sms_ms: u64,
    /// An e-mail, slower anyway: it may carry the whole transcript.
    pub email_ms: u64,
}

impl Hold {
    /// How long a notice on `channel` waits.
    pub fn of(&self, channel: Channel) -> u64 {
        match channel {
            Channel::Email => self.email_ms,
            Channel::Sms | Channel::Webhook => self.sms_ms,
        }
    }
}

/// A message's transcript once the recogniser answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// `Done`, `NoSpeech` or `Failed`.
    pub state: TranscriptState,
    /// The words (with `Done` only).
    pub text: Option<String>,
}

impl Transcript {
    /// The recogniser failed (or was not asked: failing, or its queue full).
    pub fn failed() -> Transcript {
        Transcript {
            state: TranscriptState::Failed,
            text: None,
        }
    }

    /// Nothing was said.
    pub fn no_speech() -> Transcript {
        Transcript {
            state: TranscriptState::NoSpeech,
            text: None,
        }
    }
}

/// Adds the transcript's columns to stores made before transcripts existed.
pub(crate) fn migrate(conn: &rusqlite::Connection) -> Result<()> {
    add_column(
        conn,
        "messages",
        "transcript",
        "ALTER TABLE messages ADD COLUMN transcript TEXT",
    )?;
    add_column(
        conn,
        "messages",
        "transcript_state",
        "ALTER TABLE messages ADD COLUMN transcript_state TEXT NOT NULL DEFAULT 'off'",
    )?;
    // What a start asks again for: found without reading every row.
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS messages_transcript_pending ON messages(received_at_ms)
             WHERE transcript_state = 'pending'",
    )?;
    Ok(())
}

impl Store {
    /// Makes every message deposited from now on `pending`, its notices held by `hold`.
    pub fn enable_transcripts(&self, hold: Hold) {
        // One setting per process run, as for web links.
        let _ = self.transcripts.set(hold);
    }

    /// The hold of new messages' notices; None while transcripts are off.
    pub(crate) fn transcript_hold(&self) -> Option<Hold> {
        self.transcripts.get().copied()
    }

    /// Records message `id`'s transcript, re-writes its notices not yet sent with `render`
    /// (given the transcript's words, if any) and makes them due now (a later fallback
    /// step keeps its own time). False when the message is gone or its transcript was
    /// already recorded: an outcome lands once.
    pub fn transcribed(
        &self,
        id: &str,
        t: &Transcript,
        fallback_after_ms: u64,
        mut render: impl FnMut(&SmsFacts<'_>, Channel, Option<&str>) -> String,
        now: u64,
    ) -> Result<bool> {
        let text = t
            .text
            .as_deref()
            .filter(|_| t.state == TranscriptState::Done);
        let mut db = self.db();
        let tx = db.transaction()?;
        let changed = tx.run(
            "UPDATE messages SET transcript = ?2, transcript_state = ?3
             WHERE id = ?1 AND transcript_state = 'pending'",
            params![id, text, t.state.as_str()],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        type Row = (i64, Option<i64>, i64, i64, i64, String, bool);
        let m: Option<Row> = tx
            .one(
                "SELECT recipient, caller, received_at_ms, duration_ms, link_number, access_code, web_hash IS NOT NULL
                 FROM messages WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .optional()?;
        let num = |v: i64| PhoneNumber::parse_e164(&format!("+{v}"));
        let Some((recipient, caller, received, duration, link, code, web)) = m else {
            return Ok(false);
        };
        let (Some(recipient), Some(link)) = (num(recipient), num(link)) else {
            return Ok(false);
        };
        let facts = SmsFacts {
            message: Arrival {
                recipient,
                caller: caller.and_then(num),
                received_at_ms: received as u64,
            },
            link_number: link,
            access_code: &code,
            duration_ms: duration as u64,
            web_link: web.then_some(crate::web::WEB_LINK),
        };
        let unsent: Vec<(i64, String)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT id, channel FROM outbox
                 WHERE message_id = ?1 AND state = 'pending' AND attempts = 0 AND kind = 'message'",
            )?;
            stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        for (job, channel) in unsent {
            let Some(channel) = Channel::parse(&channel) else {
                continue;
            };
            tx.run(
                "UPDATE outbox SET text = ?2,
                 next_attempt_ms = MIN(next_attempt_ms, MAX(?3, created_ms + step * ?4))
                 WHERE id = ?1",
                params![
                    job,
                    render(&facts, channel, text),
                    sql_ms(now),
                    sql_ms(fallback_after_ms)
                ],
            )?;
        }
        events::emit(
            &tx,
            self.events_on(),
            "message.transcribed",
            serde_json::json!({
                "message_id": id,
                "recipient": recipient.to_string(),
                "transcript_state": t.state.as_str(),
                "transcript": text,
            }),
            now,
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Message `id`'s SMS and webhook notices stop waiting for its transcript (the
    /// recogniser failed and is asked again later, which only the e-mail may wait for).
    pub fn stop_waiting(&self, id: &str, fallback_after_ms: u64, now: u64) -> Result<()> {
        self.db().run(
            "UPDATE outbox SET next_attempt_ms = MIN(next_attempt_ms, MAX(?2, created_ms + step * ?3))
             WHERE message_id = ?1 AND state = 'pending' AND attempts = 0 AND kind = 'message' AND channel != 'email'",
            params![id, sql_ms(now), sql_ms(fallback_after_ms)],
        )?;
        Ok(())
    }

    /// The messages whose transcript is still `pending` (asked again after a restart),
    /// with their recipients, oldest first.
    pub fn transcripts_pending(&self) -> Result<Vec<(String, PhoneNumber)>> {
        let db = self.read_db();
        let mut stmt = db.prepare_cached(
            "SELECT id, recipient FROM messages WHERE transcript_state = 'pending' AND state != 'deleted' ORDER BY received_at_ms",
        )?;
        let rows: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, n)| Some((id, PhoneNumber::parse_e164(&format!("+{n}"))?)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Lane, NewMessage};
    use boxless_core::recipient::Route;

    fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse_e164(s).unwrap()
    }

    #[test]
    fn notices_wait_for_the_transcript_and_go_with_it_once() {
        let dir = crate::tests::tempdir();
        let s = crate::tests::store(&dir);
        s.enable_transcripts(Hold {
            sms_ms: 8_000,
            email_ms: 60_000,
        });
        let samples = vec![1000i16; 8000];
        let msg = NewMessage {
            recipient: n("+15551230002"),
            caller: Some(n("+15551230001")),
            received_at_ms: 1,
            samples: &samples,
            sample_rate: 8000,
            encoding: crate::Encoding::Pcm16,
        };
        let routes = [
            Route::Sms(vec![n("+15551230002")]),
            Route::Email("anna@example.net".into()),
        ];
        let m = s
            .deposit_routed(&msg, &routes, 300_000, |_, c| {
                format!("{} plain", c.as_str())
            })
            .unwrap();
        assert_eq!(m.transcript_state, TranscriptState::Pending);
        let now = boxless_core::now_ms();
        // Held: nothing due now, the SMS once its wait is over.
        assert!(s.due(now + 1_000, 10, Lane::Sms).unwrap().is_empty());
        assert_eq!(s.due(now + 9_000, 10, Lane::Sms).unwrap().len(), 1);
        let words = Transcript {
            state: TranscriptState::Done,
            text: Some("call me back".into()),
        };
        let render = |_: &SmsFacts<'_>, c: Channel, t: Option<&str>| {
            format!("{} with {}", c.as_str(), t.unwrap_or("-"))
        };
        assert!(s.transcribed(&m.id, &words, 300_000, render, now).unwrap());
        let sms = s.due(now, 10, Lane::Sms).unwrap();
        assert_eq!(sms[0].text, "sms with call me back");
        // The e-mail is the fallback step: it keeps its own time, with the words.
        assert!(s.due(now + 1_000, 10, Lane::Other).unwrap().is_empty());
        let email = s.due(now + 300_000, 10, Lane::Other).unwrap();
        assert_eq!(email[0].text, "email with call me back");
        let got = s.get(&m.id).unwrap().unwrap();
        assert_eq!(got.transcript.as_deref(), Some("call me back"));
        assert_eq!(got.transcript_state, TranscriptState::Done);
        // An outcome lands once.
        let late = Transcript::failed();
        assert!(!s.transcribed(&m.id, &late, 300_000, render, now).unwrap());
        assert_eq!(s.transcripts_pending().unwrap(), []);
    }
}
