//! A server's messages in the NATS JetStream cluster (docs/configuration.md, `[store]
//! replication = "jetstream"`). The names are fixed, so any server finds another's:
//!
//! - stream `BOXLESS_AUDIO`, subject `boxless.audio.<server>.<message id>`: a message's
//!   WAV file in chunks of at most [`CHUNK`] bytes, in order; headers `Boxless-Chunk`
//!   (its index) and `Boxless-Chunks` (how many make the file) on each. A write after a
//!   failed one first purges the subject, so chunks of the two never mix.
//! - key-value bucket `boxless_messages`, key `<server>.<message id>`: the message's
//!   record (JSON, [`MessageRecord`]); its state is updated in place; a removed message's
//!   key is deleted and its audio purged.
//!
//! - stream `BOXLESS_RECORDING`, subject `boxless.rec.<server>.<message id>`: a recording
//!   in progress, shipped while the caller speaks as the recording file's bytes from
//!   `Boxless-Offset` on; purged once the recording ends (its message then lives in the
//!   two above). A server that takes the recording over (its server lost mid-call) keeps
//!   it as a message and marks the subject `Boxless-Salvaged-By` (the returning server
//!   then drops its own copy). A recording that became a message keeps its bytes here
//!   ([`Audio::Shipped`]: the deposit adds the rest and a last message with the file's
//!   length and finished header) until the message is forgotten.
//!
//! The record is written after the last chunk is acknowledged: a record in the bucket
//! means its audio is whole. Both keep `replicas` copies and acknowledge a write once a
//! majority has it (JetStream's Raft). Every call here has a deadline: a JetStream that
//! stops answering fails the call, never hangs it.

use std::future::IntoFuture;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, message::PublishMessage, stream};
use boxless_store::replica::MessageRecord;
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
    /// The WAV file again (a retry after a failure: what an earlier try left is purged).
    Again(&'a [u8]),
    /// The WAV file of a recording whose first `from` bytes were shipped while it was made
    /// ([`Replica::ship`]): only the rest goes, and a last message on the recording's
    /// subject with the file's length and its finished header (the first `header_len`
    /// bytes). Half the bytes of [`Audio::First`] for a message of any length.
    Shipped {
        /// The WAV file.
        wav: &'a [u8],
        /// Bytes of it JetStream has.
        from: u64,
        /// Its header's length (the bytes before the audio).
        header_len: usize,
    },
}

/// A recording in progress as JetStream has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shipped {
    /// The file's bytes so far (its WAV header, its `bxls` chunk, the audio).
    Bytes(Vec<u8>),
    /// Another server kept it as a message already.
    Salvaged,
    /// It became a message on its own server: its WAV file, whole.
    Finished(Vec<u8>),
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
                // An earlier try may have left some chunks past the duplicate window, and
                // the recording's shipped bytes are not its audio.
                let subject = subject(&r.server, &r.id);
                self.within(async { self.audio.purge().filter(subject).await })
                    .await?;
                self.drop_recording(&r.server, &r.id).await?;
                Some(wav)
            }
            Audio::Shipped {
                wav,
                from,
                header_len,
            } => {
                let len = wav.len() as u64;
                if from < len {
                    self.ship(&r.server, &r.id, from, &wav[from as usize..])
                        .await?;
                }
                let mut h = HeaderMap::new();
                h.insert("Boxless-Length", len.to_string().as_str());
                let head = Bytes::copy_from_slice(&wav[..header_len.min(wav.len())]);
                let p = PublishMessage::build().payload(head).headers(h);
                let ack = self
                    .within(self.js.send_publish(rec_subject(&r.server, &r.id), p))
                    .await?;
                self.within(ack.into_future()).await?;
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

    /// Every record of `server`'s messages JetStream holds, oldest first. Lists the
    /// bucket's keys (each step within the deadline) and reads those of `server`.
    pub async fn records_of(&self, server: &str) -> Result<Vec<MessageRecord>, ReplicaError> {
        use futures_util::StreamExt as _;
        let prefix = format!("{server}.");
        let mut keys = self.within(self.records.keys()).await?;
        let mut ids = Vec::new();
        loop {
            let next = tokio::time::timeout(self.deadline, keys.next())
                .await
                .map_err(|_| ReplicaError::Timeout(self.deadline))?;
            match next {
                None => break,
                Some(k) => {
                    let k = k.map_err(nats)?;
                    if let Some(id) = k.strip_prefix(&prefix) {
                        ids.push(id.to_string());
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            // Forgotten between the listing and the read: skipped.
            if let Some(r) = self.record(server, &id).await? {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.received_at_ms);
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
            let subject = rec_subject(server, id);
            for (n, chunk) in bytes.chunks(CHUNK).enumerate() {
                let mut h = HeaderMap::new();
                let at = offset + (n * CHUNK) as u64;
                h.insert("Boxless-Offset", at.to_string().as_str());
                let p = PublishMessage::build()
                    .payload(Bytes::copy_from_slice(chunk))
                    .headers(h);
                acks.push(
                    self.within(self.js.send_publish(subject.clone(), p))
                        .await?,
                );
            }
        }
        for ack in acks {
            self.within(ack.into_future()).await?;
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
        let mut bytes = Vec::new();
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
            if let Some(len) = m
                .headers
                .get("Boxless-Length")
                .and_then(|v| v.as_str().parse::<usize>().ok())
            {
                // The deposit's last word: the file's length and its finished header.
                let head = &m.payload[..];
                if bytes.len() < len || head.len() > len {
                    return Err(ReplicaError::Damaged("recorded audio"));
                }
                bytes.truncate(len);
                bytes[..head.len()].copy_from_slice(head);
                return Ok(Shipped::Finished(bytes));
            }
            let Some(at) = m
                .headers
                .get("Boxless-Offset")
                .and_then(|v| v.as_str().parse::<usize>().ok())
            else {
                return Err(ReplicaError::Damaged("recording chunk"));
            };
            let have = bytes.len();
            if at > have {
                break;
            }
            let payload = &m.payload[..];
            if at + payload.len() > have {
                bytes.extend_from_slice(&payload[have - at..]);
            }
        }
        Ok(Shipped::Bytes(bytes))
    }

    /// The audio of message `id` of `server`: the WAV file as it was written.
    pub async fn audio(&self, server: &str, id: &str) -> Result<Vec<u8>, ReplicaError> {
        match self.audio_stream(server, id).await {
            Ok(wav) => Ok(wav),
            // Not in the audio stream: a recording shipped while it was made.
            Err(e) => {
                let count = self.recordings_of_subject(&rec_subject(server, id)).await?;
                match self.recording(server, id, count).await? {
                    Shipped::Finished(wav) => Ok(wav),
                    _ => Err(e),
                }
            }
        }
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
        use futures_util::StreamExt as _;
        let mut subjects = self
            .within(self.recording.info_with_subjects(subject))
            .await?;
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

    /// The audio of message `id` of `server` from the audio stream.
    async fn audio_stream(&self, server: &str, id: &str) -> Result<Vec<u8>, ReplicaError> {
        let subject = subject(server, id);
        let mut wav = Vec::new();
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
            let header = |name| -> Option<usize> { m.headers.get(name)?.as_str().parse().ok() };
            let (Some(chunks), Some(n)) = (header("Boxless-Chunks"), header("Boxless-Chunk"))
            else {
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
            next = m.sequence + 1;
        }
    }
}
