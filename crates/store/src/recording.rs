//! Recordings in progress: written to disk as the caller speaks, and finished after a crash.
//!
//! A recording is `recording/<id>.wav` in the server's data directory: a WAV header whose
//! lengths say "unknown", a `bxls` chunk naming the recipient, the caller and the time
//! (JSON), then the audio, appended about once a second by the call that owns it. Ending it
//! ([`Store::deposit_recording`]): the header gets its lengths, the file is fsynced, the
//! message row and its notices commit in one transaction, then the file moves to `audio/`.
//!
//! A crash leaves, for each recording, either no row and the file in `recording/` (the
//! next start deposits it, or alerts a missed call when it is too short:
//! [`Store::interrupted`]) or the row and the file in either place (the next start finishes
//! the move). A row exists once per id, so a recording is notified once.

use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;

use boxless_core::PhoneNumber;
use boxless_core::recipient::{Channel, Route};

use crate::wav::{self, Encoding};
use crate::{MessageInfo, Result, SmsFacts, Store};

/// The chunk that says whose recording a file is.
const META: &[u8; 4] = b"bxls";

/// Whose message, from whom, when: known from a recording's first write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Recipient.
    pub recipient: PhoneNumber,
    /// Caller, if known.
    pub caller: Option<PhoneNumber>,
    /// When the call was answered (ms since epoch).
    pub received_at_ms: u64,
}

impl Arrival {
    fn to_json(self) -> Vec<u8> {
        serde_json::json!({
            "recipient": self.recipient.to_string(),
            "caller": self.caller.map(|c| c.to_string()),
            "received_at_ms": self.received_at_ms,
        })
        .to_string()
        .into_bytes()
    }

    fn from_json(b: &[u8]) -> Option<Arrival> {
        let v: serde_json::Value = serde_json::from_slice(b).ok()?;
        Some(Arrival {
            recipient: PhoneNumber::parse_e164(v["recipient"].as_str()?)?,
            caller: v["caller"].as_str().and_then(PhoneNumber::parse_e164),
            received_at_ms: v["received_at_ms"].as_u64()?,
        })
    }
}

/// One recording being written. Appending costs no allocation: samples are coded through a
/// small stack buffer straight into the file (the page cache: durable at the end).
#[derive(Debug)]
pub struct Recording {
    id: String,
    path: PathBuf,
    file: File,
    arrival: Arrival,
    rate: u32,
    encoding: Encoding,
    /// Bytes before the audio.
    header_len: u64,
    /// Samples in the file.
    samples: u64,
}

impl Recording {
    /// The message id it will be stored under.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whose, from whom, when.
    pub fn arrival(&self) -> Arrival {
        self.arrival
    }

    /// Samples per second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Samples written.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Length of the audio written.
    pub fn duration_ms(&self) -> u64 {
        self.samples * 1000 / u64::from(self.rate.max(1))
    }

    /// Appends `samples` (at [`Recording::rate`]).
    pub fn append(&mut self, samples: &[i16]) -> std::io::Result<()> {
        let mut buf = [0u8; 2048];
        let per = 2048 / self.encoding.width() as usize;
        for part in samples.chunks(per) {
            let n = wav::code_into(part, self.encoding, &mut buf);
            self.file.write_all(&buf[..n])?;
        }
        self.samples += samples.len() as u64;
        Ok(())
    }

    /// Appends octets already in the recording's G.711 encoding (as the caller sent them).
    pub fn append_coded(&mut self, octets: &[u8]) -> std::io::Result<()> {
        if self.encoding == Encoding::Pcm16 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "G.711 octets for a 16-bit PCM recording",
            ));
        }
        self.file.write_all(octets)?;
        self.samples += octets.len() as u64;
        Ok(())
    }

    fn header(&self, n: u32) -> Vec<u8> {
        let meta = self.arrival.to_json();
        wav::header(self.rate, self.encoding, n, Some((META, &meta)))
    }

    /// Keeps the first `keep` samples (a trailing silence goes), writes the lengths into
    /// the header and fsyncs.
    fn finish(&mut self, keep: u64) -> std::io::Result<()> {
        let n = keep.min(self.samples).min(u64::from(u32::MAX - 1));
        let data = n * self.encoding.width();
        // An odd-length data chunk is padded with a zero byte.
        self.file.set_len(self.header_len + data + (data & 1))?;
        self.file.write_all_at(&self.header(n as u32), 0)?;
        self.file.sync_all()?;
        self.samples = n;
        Ok(())
    }
}

impl Store {
    fn recording_dir(&self) -> PathBuf {
        self.dir.join("recording")
    }

    /// Starts the file of a recording at `rate` kept as `enc` (G.711 only at 8 kHz).
    pub fn start_recording(&self, arrival: Arrival, rate: u32, enc: Encoding) -> Result<Recording> {
        let dir = self.recording_dir();
        fs::create_dir_all(&dir)?;
        let id = self.new_id();
        let path = dir.join(format!("{id}.wav"));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut rec = Recording {
            id,
            path,
            file,
            arrival,
            rate,
            encoding: wav::effective(rate, enc),
            header_len: 0,
            samples: 0,
        };
        let header = rec.header(u32::MAX);
        rec.file.write_all(&header)?;
        rec.header_len = header.len() as u64;
        Ok(rec)
    }

    /// Stores a finished recording as a message (its first `keep` samples) and queues its
    /// notices, as [`Store::deposit_routed`] does for audio in memory.
    pub fn deposit_recording(
        &self,
        mut rec: Recording,
        keep: u64,
        routes: &[Route],
        fallback_after_ms: u64,
        mut render: impl FnMut(&SmsFacts<'_>, Channel) -> String,
    ) -> Result<MessageInfo> {
        rec.finish(keep)?;
        self.commit_message(
            &rec.id,
            rec.arrival,
            rec.duration_ms(),
            routes,
            fallback_after_ms,
            &mut render,
        )?;
        self.move_to_audio(&rec.id, &rec.path)?;
        self.get(&rec.id).map(|m| m.expect("row committed above"))
    }

    /// Removes a recording that is not kept (too short: a missed call).
    pub fn discard_recording(&self, rec: Recording) -> Result<()> {
        drop(rec.file);
        fs::remove_file(&rec.path)?;
        Ok(())
    }

    fn move_to_audio(&self, id: &str, from: &std::path::Path) -> Result<()> {
        self.audio.publish(id, from)
    }

    /// What a crash left: recordings not yet stored, their headers finished, to be
    /// deposited (or, too short, alerted as missed calls and discarded) by the caller. A
    /// recording whose message was committed just before the crash only finishes its move;
    /// a file that does not say whose it is (cut before its header) is removed.
    pub fn interrupted(&self) -> Result<Vec<Recording>> {
        self.interrupted_of(|_| true)
    }

    /// [`Store::interrupted`] for the recordings whose id `wanted` admits only: a server
    /// that recovers after it started taking calls leaves its live calls' files alone.
    pub fn interrupted_of(&self, wanted: impl Fn(&str) -> bool) -> Result<Vec<Recording>> {
        let dir = self.recording_dir();
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".wav"))
                .map(str::to_string)
            else {
                continue;
            };
            if !wanted(&id) {
                continue;
            }
            if self.get(&id)?.is_some() {
                tracing::info!(%id, "finishing the move of a message stored just before a stop");
                self.move_to_audio(&id, &path)?;
                continue;
            }
            match reopen(id, &path)? {
                Some(mut rec) => {
                    rec.finish(rec.samples)?;
                    found.push(rec);
                }
                None => {
                    tracing::warn!(file = %path.display(), "removing a recording cut before its header");
                    fs::remove_file(&path)?;
                }
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }
}

impl Store {
    /// The recordings in progress (and those a crash left): their ids and file lengths.
    pub fn recordings(&self) -> Result<Vec<(String, u64)>> {
        let Ok(entries) = fs::read_dir(self.recording_dir()) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".wav"))
                .map(str::to_string)
            else {
                continue;
            };
            // Ended between the listing and now: skipped.
            if let Ok(m) = entry.metadata() {
                out.push((id, m.len()));
            }
        }
        Ok(out)
    }

    /// At most `max` bytes of recording `id`'s file from `from`; None when it ended.
    pub fn recording_bytes(&self, id: &str, from: u64, max: usize) -> Result<Option<Vec<u8>>> {
        let path = self.recording_dir().join(format!("{id}.wav"));
        let Some(file) = crate::audio::open_if_present(&path)? else {
            return Ok(None);
        };
        Ok(Some(crate::audio::read_from(&file, from, max as u64)?.0))
    }

    /// Keeps a recording another server was making when it was lost (its file's bytes as
    /// shipped to JetStream) as one of this store's, under a new id, its header finished:
    /// the caller deposits it (or alerts a missed call) as it does a crash's leftovers.
    /// None when the bytes do not hold a whole header.
    pub fn take_recording(&self, bytes: &[u8]) -> Result<Option<Recording>> {
        let dir = self.recording_dir();
        fs::create_dir_all(&dir)?;
        let id = self.new_id();
        let path = dir.join(format!("{id}.wav"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        match reopen(id, &path)? {
            Some(mut rec) => {
                rec.finish(rec.samples)?;
                Ok(Some(rec))
            }
            None => {
                fs::remove_file(&path)?;
                Ok(None)
            }
        }
    }
}

/// A recording file as a crash left it; `None` when its header is not all there.
fn reopen(id: String, path: &std::path::Path) -> Result<Option<Recording>> {
    let mut file = fs::OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let mut head = vec![0u8; len.min(4096) as usize];
    file.read_exact(&mut head)?;
    let (Some(parsed), Some(arrival)) = (
        wav::parse(&head),
        wav::chunk(&head, META).and_then(Arrival::from_json),
    ) else {
        return Ok(None);
    };
    let header_len = parsed.data.0 as u64;
    Ok(Some(Recording {
        id,
        path: path.to_path_buf(),
        file,
        arrival,
        rate: parsed.rate,
        encoding: parsed.encoding,
        header_len,
        samples: len.saturating_sub(header_len) / parsed.encoding.width(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxless_core::LinkPool;

    fn store(dir: &std::path::Path) -> Store {
        let pool = LinkPool::parse(&["+18005550100-+18005550109"]).unwrap();
        Store::open(dir, "ms1", pool).unwrap()
    }

    fn arrival() -> Arrival {
        Arrival {
            recipient: PhoneNumber::parse_e164("+15551230002").unwrap(),
            caller: PhoneNumber::parse_e164("+15551230001"),
            received_at_ms: 1_700_000_000_123,
        }
    }

    fn voice(n: usize) -> Vec<i16> {
        (0..n).map(|i| ((i % 80) as i16 - 40) * 300).collect()
    }

    fn sms(s: &Store, rec: Recording, keep: u64) -> MessageInfo {
        let to = rec.arrival().recipient;
        s.deposit_recording(rec, keep, &[Route::Sms(vec![to])], 0, |f, _| {
            format!("from {:?}", f.message.caller)
        })
        .unwrap()
    }

    #[test]
    fn a_recording_in_progress_is_read_in_pieces_and_kept_whole_by_another_store() {
        let (d1, d2) = (crate::tests::tempdir(), crate::tests::tempdir());
        let (ms1, other) = (store(d1.as_path()), store(d2.as_path()));
        let mut rec = ms1
            .start_recording(arrival(), 8000, Encoding::Mulaw)
            .unwrap();
        rec.append(&voice(8000)).unwrap();
        let (id, len) = ms1.recordings().unwrap().pop().unwrap();
        assert_eq!(id, rec.id());
        // Shipped in two pieces, as a replicator would between two appends.
        let mut shipped = ms1.recording_bytes(&id, 0, 100).unwrap().unwrap();
        rec.append(&voice(8000)).unwrap();
        shipped.extend(ms1.recording_bytes(&id, 100, 1 << 20).unwrap().unwrap());
        assert_eq!(shipped.len() as u64, len + 8000);
        let kept = other
            .take_recording(&shipped)
            .unwrap()
            .expect("a whole header");
        assert_ne!(kept.id(), id, "a new id of the store that keeps it");
        assert_eq!((kept.arrival(), kept.duration_ms()), (arrival(), 2000));
        let m = sms(&other, kept, u64::MAX);
        let (_, got) = wav::decode(&fs::read(other.audio_path(&m.id)).unwrap()).unwrap();
        assert_eq!(got.len(), 16_000);
        // Cut inside its header: nothing kept, nothing left.
        assert!(other.take_recording(&shipped[..20]).unwrap().is_none());
        assert!(other.recordings().unwrap().is_empty());
        drop(rec);
        assert_eq!(ms1.recording_bytes("ms1-gone", 0, 10).unwrap(), None);
    }

    #[test]
    fn a_late_recovery_leaves_a_live_call_s_recording_alone() {
        let dir = crate::tests::tempdir();
        let s = store(dir.as_path());
        let mut left = s.start_recording(arrival(), 8000, Encoding::Mulaw).unwrap();
        left.append(&voice(8000)).unwrap();
        let left_id = left.id().to_string();
        drop(left);
        // Listed at start; then a call starts before the recovery runs.
        let at_start: Vec<String> = s.recordings().unwrap().into_iter().map(|r| r.0).collect();
        let mut live = s.start_recording(arrival(), 8000, Encoding::Mulaw).unwrap();
        live.append(&voice(4000)).unwrap();
        let found = s
            .interrupted_of(|id| at_start.iter().any(|a| a == id))
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id(), left_id);
        live.append(&voice(4000)).unwrap();
        let m = sms(&s, live, u64::MAX);
        assert_eq!(m.duration_ms, 1000, "the live call's file untouched");
    }

    #[test]
    fn a_streamed_recording_is_stored_as_the_same_file_a_whole_one_makes() {
        let dir = crate::tests::tempdir();
        let s = store(dir.as_path());
        let audio = voice(8000 * 3 + 7);
        let mut rec = s.start_recording(arrival(), 8000, Encoding::Mulaw).unwrap();
        for part in audio.chunks(8000) {
            rec.append(part).unwrap();
        }
        // The trailing silence goes: 2.5 s kept of 3.
        let m = sms(&s, rec, 20_000);
        assert_eq!(m.duration_ms, 2500);
        let file = fs::read(s.audio_path(&m.id)).unwrap();
        assert_eq!(file.len() % 2, 0, "RIFF: even length");
        let (rate, got) = wav::decode(&file).unwrap();
        let whole = wav::decode(&wav::encode(&audio[..20_000], 8000, Encoding::Mulaw)).unwrap();
        assert_eq!((rate, got), whole);
        assert_eq!(
            wav::chunk(&file, META).and_then(Arrival::from_json),
            Some(arrival())
        );
        let h = hound::WavReader::new(std::io::Cursor::new(wav::to_pcm16(file).unwrap()));
        assert_eq!(h.unwrap().len(), 20_000, "a standard reader agrees");
        assert!(
            fs::read_dir(dir.as_path().join("recording"))
                .unwrap()
                .next()
                .is_none()
        );
        assert_eq!(s.interrupted().unwrap().len(), 0);
    }

    #[test]
    fn a_recording_cut_by_a_crash_is_found_finished_and_stored_once() {
        let dir = crate::tests::tempdir();
        let id;
        {
            let s = store(dir.as_path());
            // Wideband: PCM whatever is asked.
            let mut rec = s
                .start_recording(arrival(), 16_000, Encoding::Mulaw)
                .unwrap();
            rec.append(&voice(16_000 * 2)).unwrap();
            id = rec.id().to_string();
            // A crash: the file stays as it was, its lengths unknown; a second one died
            // before its header was written.
            std::mem::forget(rec);
            fs::write(dir.as_path().join("recording/ms1-cut.wav"), b"RIFF").unwrap();
        }
        let s = store(dir.as_path());
        let found = s.interrupted().unwrap();
        assert_eq!(found.len(), 1, "the cut file is removed");
        let rec = found.into_iter().next().unwrap();
        assert_eq!(
            (rec.id(), rec.rate(), rec.samples()),
            (id.as_str(), 16_000, 32_000)
        );
        assert_eq!(
            rec.arrival(),
            arrival(),
            "whose, from whom, when: from the first write"
        );
        let m = sms(&s, rec, u64::MAX);
        assert_eq!((m.id.as_str(), m.duration_ms), (id.as_str(), 2000));
        let (rate, got) = wav::decode(&fs::read(s.audio_path(&id)).unwrap()).unwrap();
        assert_eq!((rate, got), (16_000, voice(32_000)));
        assert!(s.interrupted().unwrap().is_empty(), "stored once");
        assert!(!dir.as_path().join("recording/ms1-cut.wav").exists());
    }

    #[test]
    fn a_crash_between_the_commit_and_the_move_only_finishes_the_move() {
        let dir = crate::tests::tempdir();
        let s = store(dir.as_path());
        let mut rec = s.start_recording(arrival(), 8000, Encoding::Alaw).unwrap();
        rec.append(&voice(8000)).unwrap();
        let m = sms(&s, rec, u64::MAX);
        // As if the rename had not happened yet.
        let back = dir.as_path().join(format!("recording/{}.wav", m.id));
        fs::rename(s.audio_path(&m.id), &back).unwrap();
        assert!(s.interrupted().unwrap().is_empty(), "not a second message");
        assert!(s.audio_path(&m.id).exists() && !back.exists());
        assert_eq!(s.list(None, 10).unwrap().len(), 1);
        assert_eq!(s.due(u64::MAX, 10, crate::Lane::Sms).unwrap().len(), 1);
    }

    #[test]
    fn a_short_recording_is_discarded() {
        let dir = crate::tests::tempdir();
        let s = store(dir.as_path());
        let rec = s.start_recording(arrival(), 8000, Encoding::Mulaw).unwrap();
        s.discard_recording(rec).unwrap();
        assert!(s.interrupted().unwrap().is_empty());
        assert!(s.list(None, 10).unwrap().is_empty());
    }
}
