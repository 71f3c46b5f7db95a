//! A server's messages in the NATS JetStream cluster (docs/configuration.md, `[store]
//! replication = "jetstream"`). The names are fixed, so any server finds another's:
//!
//! - stream `BOXLESS_AUDIO`, subject `boxless.audio.<server>.<message id>`: a message's
//!   WAV file in chunks of at most [`CHUNK`] bytes, in order; headers `Boxless-Chunk`
//!   (its index) and `Boxless-Chunks` (how many make the file) on each. Or, for a
//!   message whose start was shipped while it was recorded, only the rest: chunks with
//!   `Boxless-Offset` (where in the file each goes), then one with `Boxless-Length` (the
//!   file's length) carrying the file's finished header ([`Audio::Shipped`]); a write
//!   after a failed one ([`Audio::Again`]) sends the whole file that way, after purging
//!   what the failed one left, so the two never mix.
//! - key-value bucket `boxless_messages`, key `<server>.<message id>`: the message's
//!   record (JSON, [`MessageRecord`]); its state is updated in place; a removed message's
//!   key is deleted and its audio purged.
//!
//! - stream `BOXLESS_RECORDING`, subject `boxless.rec.<server>.<message id>`: a recording
//!   in progress, shipped while the caller speaks as the recording file's bytes from
//!   `Boxless-Offset` on. A server that takes the recording over (its server lost
//!   mid-call) keeps it as a message and marks the subject `Boxless-Salvaged-By` (the
//!   returning server then drops its own copy). A recording too short to keep is purged;
//!   one that became a message keeps its bytes here (the start of its audio) until the
//!   message is forgotten.
//!
//! The deposit's last write goes to the audio stream, not to the recordings': a stream
//! stores its writes in order, and the recordings' stream takes every call's audio every
//! couple of seconds, so a deposit written there waited behind megabytes of other calls
//! (bench/RESULTS.md, "Replication: what it costs").
//!
//! The record is written after the last chunk is acknowledged: a record in the bucket
//! means its audio is whole. Both keep `replicas` copies and acknowledge a write once a
//! majority has it (JetStream's Raft). Every call here has a deadline: a JetStream that
//! stops answering fails the call, never hangs it.

use std::future::IntoFuture;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, message::PublishMessage, stream};
use boxless_store::replica::{AudioRest, MessageRecord};
use bytes::Bytes;

/// The audio stream.
pub const AUDIO_STREAM: &str = "BOXLESS_AUDIO";
/// The recordings in progress.
pub const RECORDING_STREAM: &str = "BOXLESS_RECORDING";
/// The records' bucket.
pub const MESSAGES_BUCKET: &str = "boxless_messages";
/// Largest chunk of audio in one stream message (NATS's default max payload is 1 MiB).
pub const CHUNK: usize = 64 * 1024;

/// Why a replication call failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// NATS or JetStream refused or failed.
    #[error("JetStream: {0}")]
    Nats(String),
    /// No answer within the deadline.
    #[error("JetStream did not answer within {0:?}")]
    Timeout(Duration),
    /// What JetStream holds is not what we wrote.
    #[error("JetStream holds a damaged {0}")]
    Damaged(&'static str),
}

pub(crate) fn nats(e: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Nats(e.to_string())
}

/// True when a compare-and-set write was refused because the key had moved past the
/// revision it named: another server wrote first. JetStream says so with error code 10071
/// or, from newer servers, 10164; the client names only the first, so the codes are read
/// from the error's sources.
pub(crate) fn lost_race(e: &(dyn std::error::Error + 'static)) -> bool {
    use jetstream::ErrorCode;
    let mut at = Some(e);
    while let Some(e) = at {
        if let Some(js) = e.downcast_ref::<jetstream::Error>()
            && matches!(
                js.error_code(),
                ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                    | ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
            )
        {
            return true;
        }
        if let Some(c) = e.downcast_ref::<kv::CreateError>()
            && c.kind() == kv::CreateErrorKind::AlreadyExists
        {
            return true;
        }
        at = e.source();
    }
    false
}

/// `f`'s answer, or a timeout after `deadline`; its error as a [`ReplicaError`].
pub(crate) async fn within<T, E: std::fmt::Display>(
    deadline: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ReplicaError> {
    tokio::time::timeout(deadline, f)
        .await
        .map_err(|_| ReplicaError::Timeout(deadline))?
        .map_err(nats)
}

/// What [`Replica::put`] writes of a message's audio.
#[derive(Debug, Clone, Copy)]
pub enum Audio<'a> {
    /// JetStream has it already (a state change).
    Had,
    /// The WAV file, written for the first time (the deposit).
    First(&'a [u8]),
    /// The WAV file again (a retry after a failure, or a deposit JetStream missed): what
    /// an earlier try left on its subject is purged, then the whole file goes as pieces
    /// that say where they go, over whatever its recording shipped (that stays).
    Again(&'a [u8]),
    /// What JetStream lacks of a WAV file whose first `from` bytes were shipped while it
    /// was recorded ([`Replica::ship`]): the rest goes to the audio stream, and a last
    /// message with the file's length and its finished header, in one round trip. Half the
    /// bytes of [`Audio::First`] for a message of any length.
    Shipped(&'a AudioRest),
}

/// A recording in progress as JetStream has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shipped {
    /// The file's bytes so far (its WAV header, its `bxls` chunk, the audio).
    Bytes(Vec<u8>),
    /// Another server kept it as a message already.
    Salvaged,
}

/// A file put together from pieces that each say where they go (`Boxless-Offset`): a
/// piece shipped again after a restart overlaps what is there and only its new bytes
/// count; a piece past a gap is refused (nothing after a gap can be trusted).
#[derive(Debug, Default)]
struct Pieces(Vec<u8>);

impl Pieces {
    /// Adds `payload` at `at`; false (and nothing added) past a gap.
    fn add(&mut self, at: usize, payload: &[u8]) -> bool {
        let have = self.0.len();
        if at > have {
            return false;
        }
        if at + payload.len() > have {
            self.0.extend_from_slice(&payload[have - at..]);
        }
        true
    }

    /// The whole file: `len` bytes (a message trimmed after its start was shipped is
    /// shorter than what was shipped), its first bytes replaced by `head` (the header as
    /// the deposit finished it).
    fn finish(mut self, len: usize, head: &[u8]) -> Result<Vec<u8>, ReplicaError> {
        if self.0.len() < len || head.len() > len {
            return Err(ReplicaError::Damaged("recorded audio"));
        }
        self.0.truncate(len);
        self.0[..head.len()].copy_from_slice(head);
        Ok(self.0)
    }
}

fn header<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    headers.get(name)?.as_str().parse().ok()
}

/// The audio stream and the records' bucket, reached through one NATS connection.
#[derive(Clone)]
pub struct Replica {
    js: jetstream::Context,
    audio: stream::Stream,
    recording: stream::Stream,
    records: kv::Store,
    deadline: Duration,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replica")
    }
}

/// The key-value bucket `config` names, made with `config` when it does not exist; each
/// step waits at most `deadline`.
pub(crate) async fn bucket(
    js: &jetstream::Context,
    config: kv::Config,
    deadline: Duration,
) -> Result<kv::Store, ReplicaError> {
    let timeout = |_| ReplicaError::Timeout(deadline);
    match tokio::time::timeout(deadline, js.get_key_value(config.bucket.clone()))
        .await
        .map_err(timeout)?
    {
        Ok(kv) => Ok(kv),
        Err(_) => tokio::time::timeout(deadline, js.create_key_value(config))
            .await
            .map_err(timeout)?
            .map_err(nats),
    }
}

/// Reads of one listing on the wire at once: enough to hide the round trip, few enough
/// that a listing of many keys does not crowd out the deposits' writes.
const LISTING_IN_FLIGHT: usize = 32;

fn subject(server: &str, id: &str) -> String {
    format!("boxless.audio.{server}.{id}")
}

fn rec_subject(server: &str, id: &str) -> String {
    format!("boxless.rec.{server}.{id}")
}

fn key(server: &str, id: &str) -> String {
    format!("{server}.{id}")
}

impl Replica {
    /// Finds (making them when missing) the stream and the bucket with `replicas` copies;
    /// each later call waits at most `deadline`.
    pub async fn open(
        client: &async_nats::Client,
        replicas: usize,
        deadline: Duration,
    ) -> Result<Replica, ReplicaError> {
        let js = jetstream::new(client.clone());
        // Both streams hold chunks of WAV files, `replicas` copies on disk.
        let chunks = |name: &str, description: &str, subjects: &str| stream::Config {
            name: name.into(),
            description: Some(description.into()),
            subjects: vec![subjects.into()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            max_message_size: (CHUNK + 1024) as i32,
            ..Default::default()
        };
        let audio = within(
            deadline,
            js.get_or_create_stream(chunks(
                AUDIO_STREAM,
                "Boxless messages' audio, in chunks",
                "boxless.audio.>",
            )),
        )
        .await?;
        let recording = within(
            deadline,
            js.get_or_create_stream(chunks(
                RECORDING_STREAM,
                "Boxless recordings in progress",
                "boxless.rec.>",
            )),
        )
        .await?;
        let records = bucket(
            &js,
            kv::Config {
                bucket: MESSAGES_BUCKET.into(),
                description: "Boxless messages' records".into(),
                history: 1,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                max_value_size: 16 * 1024,
                ..Default::default()
            },
            deadline,
        )
        .await?;
        Ok(Replica {
            js,
            audio,
            recording,
            records,
            deadline,
        })
    }

    async fn within<T, E: std::fmt::Display>(
        &self,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, ReplicaError> {
        within(self.deadline, f).await
    }

    /// Publishes `bytes` on `subject` in chunks of at most [`CHUNK`], chunk `n` with the
    /// headers `headers(n, ..)` writes; returns once JetStream acknowledged them all.
    async fn publish_chunks(
        &self,
        subject: String,
        bytes: &[u8],
        headers: impl Fn(usize, &mut HeaderMap),
    ) -> Result<(), ReplicaError> {
        let mut acks = Vec::with_capacity(bytes.len().div_ceil(CHUNK));
        for (n, chunk) in bytes.chunks(CHUNK).enumerate() {
            let mut h = HeaderMap::new();
            headers(n, &mut h);
            let p = PublishMessage::build()
                .payload(Bytes::copy_from_slice(chunk))
                .headers(h);
            acks.push(
                self.within(self.js.send_publish(subject.clone(), p))
                    .await?,
            );
        }
        for ack in acks {
            self.within(ack.into_future()).await?;
        }
        Ok(())
    }

    /// Writes message `r` with its audio (the deposit), or only its record (a state
    /// change). Returns once a JetStream majority has all of it.
    pub async fn put(&self, r: &MessageRecord, audio: Audio<'_>) -> Result<(), ReplicaError> {
        let wav = match audio {
            Audio::Had => None,
            Audio::First(wav) => Some(wav),
            Audio::Again(wav) => {
                let subject = subject(&r.server, &r.id);
                // What an earlier try left, purged, but asked first: a purge by subject
                // loads every block of the stream that holds the subject, the count is an
                // index lookup, and most retries follow a try that sent nothing.
                if self.count(&self.audio, &subject).await? > 0 {
                    self.within(async { self.audio.purge().filter(subject.clone()).await })
                        .await?;
                }
                match boxless_store::wav::parse(wav) {
                    // As pieces that say where they go, over whatever the recording shipped
                    // (the same bytes; its subject, in a stream of every call's pieces,
                    // is the costliest to purge).
                    Some(p) => {
                        let (head, len) = (&wav[..p.data.0], wav.len() as u64);
                        self.send_rest(subject, head, wav, 0, len).await?;
                        None
                    }
                    None => {
                        self.drop_recording(&r.server, &r.id).await?;
                        Some(wav)
                    }
                }
            }
            Audio::Shipped(a) => {
                self.send_rest(subject(&r.server, &r.id), &a.head, &a.rest, a.from, a.len)
                    .await?;
                None
            }
        };
        if let Some(wav) = wav {
            let chunks = wav.chunks(CHUNK).len().max(1);
            self.publish_chunks(subject(&r.server, &r.id), wav, |n, h| {
                h.insert("Boxless-Chunks", chunks.to_string().as_str());
                h.insert("Boxless-Chunk", n.to_string().as_str());
            })
            .await?;
        }
        let json = serde_json::to_vec(r).map_err(nats)?;
        self.within(self.records.put(key(&r.server, &r.id), json.into()))
            .await?;
        Ok(())
    }

    /// Sends `rest`, a file's bytes from `from` on, as pieces that say where they go, then
    /// the file's length `len` with its finished header `head`, in one round trip: the
    /// stream keeps them in order.
    async fn send_rest(
        &self,
        subject: String,
        head: &[u8],
        rest: &[u8],
        from: u64,
        len: u64,
    ) -> Result<(), ReplicaError> {
        let mut acks = Vec::new();
        let at = usize::try_from(from).map_err(nats)?;
        self.send_pieces(&subject, at, rest, &mut acks).await?;
        let mut h = HeaderMap::new();
        h.insert("Boxless-Length", len.to_string().as_str());
        let head = Bytes::copy_from_slice(head);
        let p = PublishMessage::build().payload(head).headers(h);
        acks.push(self.within(self.js.send_publish(subject, p)).await?);
        for ack in acks {
            self.within(ack.into_future()).await?;
        }
        Ok(())
    }

    /// Forgets message `id` of `server`: its record and its audio.
    pub async fn forget(&self, server: &str, id: &str) -> Result<(), ReplicaError> {
        self.within(self.records.purge(key(server, id))).await?;
        let subject = subject(server, id);
        self.within(async { self.audio.purge().filter(subject).await })
            .await?;
        self.drop_recording(server, id).await
    }

    /// The record of message `id` of `server`, if JetStream has it.
    pub async fn record(
        &self,
        server: &str,
        id: &str,
    ) -> Result<Option<MessageRecord>, ReplicaError> {
        let Some(v) = self.within(self.records.get(key(server, id))).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|_| ReplicaError::Damaged("record"))
    }

    /// Every record of `server`'s messages JetStream holds, oldest first: only that
    /// server's keys are listed and read, whatever the other servers hold (each step
    /// within the deadline).
    pub async fn records_of(&self, server: &str) -> Result<Vec<MessageRecord>, ReplicaError> {
        use futures_util::StreamExt as _;
        // The keys from the stream's subjects (its leader answers), then each key's last
        // value. Not a consumer: an ephemeral consumer placed on a node lost moments ago
        // (the cluster takes a while to call it offline) never answers its creation, and a
        // listing is wanted most right after a loss.
        let filter = format!("{}{server}.>", self.records.prefix);
        let mut subjects = self
            .within(self.records.stream.info_with_subjects(filter))
            .await?;
        let mut keys = Vec::new();
        while let Some(s) = tokio::time::timeout(self.deadline, subjects.next())
            .await
            .map_err(|_| ReplicaError::Timeout(self.deadline))?
        {
            keys.push(s.map_err(nats)?.0);
        }
        let stream = &self.records.stream;
        let mut values = futures_util::stream::iter(keys)
            .map(|subject| {
                self.within(stream.raw_message_builder().last_by_subject(subject).send())
            })
            .buffer_unordered(LISTING_IN_FLIGHT);
        let mut out = Vec::new();
        while let Some(m) = values.next().await {
            let m = m?;
            // A forgotten message's key keeps a delete or purge marker until it ages out.
            if m.headers.get("KV-Operation").is_some() {
                continue;
            }
            let r =
                serde_json::from_slice(&m.payload).map_err(|_| ReplicaError::Damaged("record"))?;
            out.push(r);
        }
        out.sort_by_key(|r: &MessageRecord| r.received_at_ms);
        Ok(out)
    }

    /// Ships `bytes` of server `server`'s recording `id`, from `offset` of its file; at
    /// most [`CHUNK`] bytes per stream message. Returns once JetStream has them.
    pub async fn ship(
        &self,
        server: &str,
        id: &str,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), ReplicaError> {
        self.ship_many(server, [(id, offset, bytes)]).await
    }

    /// Ships several recordings' new bytes at once (`(id, offset, bytes)` each, as
    /// [`Replica::ship`]): every chunk is sent, then every acknowledgement awaited, so a
    /// tick of a thousand calls costs one round trip, not a thousand.
    pub async fn ship_many<'a>(
        &self,
        server: &str,
        items: impl IntoIterator<Item = (&'a str, u64, &'a [u8])>,
    ) -> Result<(), ReplicaError> {
        let mut acks = Vec::new();
        for (id, offset, bytes) in items {
            let at = usize::try_from(offset).map_err(nats)?;
            self.send_pieces(&rec_subject(server, id), at, bytes, &mut acks)
                .await?;
        }
        for ack in acks {
            self.within(ack.into_future()).await?;
        }
        Ok(())
    }

    /// Sends `bytes` of a file, from `offset` of it, on `subject` in pieces of at most
    /// [`CHUNK`] (`Boxless-Offset` on each); their acknowledgements go to `acks`.
    async fn send_pieces(
        &self,
        subject: &str,
        offset: usize,
        bytes: &[u8],
        acks: &mut Vec<jetstream::context::PublishAckFuture>,
    ) -> Result<(), ReplicaError> {
        for (n, chunk) in bytes.chunks(CHUNK).enumerate() {
            let mut h = HeaderMap::new();
            h.insert("Boxless-Offset", (offset + n * CHUNK).to_string().as_str());
            let p = PublishMessage::build()
                .payload(Bytes::copy_from_slice(chunk))
                .headers(h);
            acks.push(
                self.within(self.js.send_publish(subject.to_string(), p))
                    .await?,
            );
        }
        Ok(())
    }

    /// Marks server `server`'s recording `id` kept as a message by server `by`.
    pub async fn salvaged(&self, server: &str, id: &str, by: &str) -> Result<(), ReplicaError> {
        let mut h = HeaderMap::new();
        h.insert("Boxless-Salvaged-By", by);
        let p = PublishMessage::build().payload(Bytes::new()).headers(h);
        let ack = self
            .within(self.js.send_publish(rec_subject(server, id), p))
            .await?;
        self.within(ack.into_future()).await?;
        Ok(())
    }

    /// Forgets server `server`'s recording `id` (it ended: its message is replicated, or it
    /// was too short to keep).
    pub async fn drop_recording(&self, server: &str, id: &str) -> Result<(), ReplicaError> {
        let subject = rec_subject(server, id);
        self.within(async { self.recording.purge().filter(subject).await })
            .await?;
        Ok(())
    }

    /// The recordings of `server` JetStream holds, with how many stream messages each.
    pub async fn recordings_of(&self, server: &str) -> Result<Vec<(String, usize)>, ReplicaError> {
        use futures_util::StreamExt as _;
        let prefix = format!("boxless.rec.{server}.");
        let mut subjects = self
            .within(self.recording.info_with_subjects(format!("{prefix}>")))
            .await?;
        let mut out = Vec::new();
        loop {
            let next = tokio::time::timeout(self.deadline, subjects.next())
                .await
                .map_err(|_| ReplicaError::Timeout(self.deadline))?;
            match next {
                None => break,
                Some(s) => {
                    let (subject, count) = s.map_err(nats)?;
                    if let Some(id) = subject.strip_prefix(&prefix) {
                        out.push((id.to_string(), count));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Server `server`'s recording `id` as shipped (`messages`: its count from
    /// [`Replica::recordings_of`]): the longest run of bytes from the file's start (a
    /// chunk shipped again after a restart overlaps; a gap ends it).
    pub async fn recording(
        &self,
        server: &str,
        id: &str,
        messages: usize,
    ) -> Result<Shipped, ReplicaError> {
        let subject = rec_subject(server, id);
        let mut bytes = Pieces::default();
        let mut next = 1;
        for _ in 0..messages {
            let get = self
                .recording
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(subject.clone());
            let m = self.within(get.send()).await?;
            next = m.sequence + 1;
            if m.headers.get("Boxless-Salvaged-By").is_some() {
                return Ok(Shipped::Salvaged);
            }
            let Some(at) = header(&m.headers, "Boxless-Offset") else {
                return Err(ReplicaError::Damaged("recording chunk"));
            };
            if !bytes.add(at, &m.payload) {
                break;
            }
        }
        Ok(Shipped::Bytes(bytes.0))
    }

    /// Server `server`'s recording `id` as JetStream has it; None when it has nothing.
    pub async fn recording_state(
        &self,
        server: &str,
        id: &str,
    ) -> Result<Option<Shipped>, ReplicaError> {
        match self.recordings_of_subject(&rec_subject(server, id)).await? {
            0 => Ok(None),
            count => self.recording(server, id, count).await.map(Some),
        }
    }

    /// How many stream messages the recordings' subject `subject` holds.
    async fn recordings_of_subject(&self, subject: &str) -> Result<usize, ReplicaError> {
        self.count(&self.recording, subject).await
    }

    /// How many messages `stream` holds on `subject` (from the stream's index of its
    /// subjects: no block is read).
    async fn count(&self, stream: &stream::Stream, subject: &str) -> Result<usize, ReplicaError> {
        use futures_util::StreamExt as _;
        let mut subjects = self.within(stream.info_with_subjects(subject)).await?;
        let mut count = 0;
        while let Some(s) = tokio::time::timeout(self.deadline, subjects.next())
            .await
            .map_err(|_| ReplicaError::Timeout(self.deadline))?
        {
            let (name, n) = s.map_err(nats)?;
            if name == subject {
                count = n;
            }
        }
        Ok(count)
    }

    /// The audio of message `id` of `server`, the WAV file as it was written: its chunks
    /// in the audio stream, or the rest of a recording shipped while it was made.
    pub async fn audio(&self, server: &str, id: &str) -> Result<Vec<u8>, ReplicaError> {
        let subject = subject(server, id);
        let mut wav = Vec::new();
        let mut rest: Option<Pieces> = None;
        // The first message at or after this sequence on the subject.
        let mut next = 1;
        let mut got = 0usize;
        loop {
            // From the stream's leader, not a direct get from any replica: a replica may
            // not have the last write yet.
            let get = self
                .audio
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(subject.clone());
            let m = self.within(get.send()).await?;
            next = m.sequence + 1;
            if let Some(at) = header::<usize>(&m.headers, "Boxless-Offset") {
                let pieces = match &mut rest {
                    Some(p) => p,
                    None => rest.insert(self.shipped_start(server, id).await?),
                };
                if !pieces.add(at, &m.payload) {
                    return Err(ReplicaError::Damaged("recorded audio"));
                }
                continue;
            }
            if let Some(len) = header::<usize>(&m.headers, "Boxless-Length") {
                let pieces = match rest.take() {
                    Some(p) => p,
                    // Everything was shipped while it was recorded.
                    None => self.shipped_start(server, id).await?,
                };
                return pieces.finish(len, &m.payload);
            }
            let (Some(chunks), Some(n)) = (
                header::<usize>(&m.headers, "Boxless-Chunks"),
                header::<usize>(&m.headers, "Boxless-Chunk"),
            ) else {
                return Err(ReplicaError::Damaged("audio chunk"));
            };
            if n != got {
                return Err(ReplicaError::Damaged("audio chunk"));
            }
            wav.extend_from_slice(&m.payload);
            got += 1;
            if got == chunks {
                return Ok(wav);
            }
        }
    }

    /// What the recordings' stream holds of message `id` of `server`: the start of its
    /// audio.
    async fn shipped_start(&self, server: &str, id: &str) -> Result<Pieces, ReplicaError> {
        let count = self.recordings_of_subject(&rec_subject(server, id)).await?;
        match self.recording(server, id, count).await? {
            Shipped::Bytes(b) => Ok(Pieces(b)),
            Shipped::Salvaged => Err(ReplicaError::Damaged("recorded audio")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_skip_what_was_shipped_twice_and_stop_at_a_gap() {
        let file: Vec<u8> = (0..100u8).collect();
        let mut p = Pieces::default();
        assert!(p.add(0, &file[..40]));
        // Shipped again from an earlier offset after a restart: only the new bytes count.
        assert!(p.add(30, &file[30..60]));
        assert!(!p.add(70, &file[70..]), "a gap");
        assert_eq!(p.0, &file[..60]);
        assert!(p.add(60, &file[60..]));
        // Finished: trimmed to its length, its header replaced.
        let wav = p.finish(80, &[9, 9]).unwrap();
        assert_eq!(wav.len(), 80);
        assert_eq!(&wav[..3], &[9, 9, 2]);
        // Shorter than its length, or a header longer than the file: damaged.
        let short = Pieces(file[..10].to_vec());
        assert!(matches!(
            short.finish(20, &[]),
            Err(ReplicaError::Damaged(_))
        ));
        let tiny = Pieces(file[..10].to_vec());
        assert!(matches!(
            tiny.finish(2, &[0; 4]),
            Err(ReplicaError::Damaged(_))
        ));
    }
}
