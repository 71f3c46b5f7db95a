//! The driver of transcripts (docs/transcription.md): each stored message goes to the
//! operator's recogniser, its answer to the store and the notices still waiting. The
//! protocol is `boxless_transcribe`'s; here are the queue, the limits and the I/O.
//!
//! - A bounded queue (64 jobs per allowed request): past it a message is `failed` at once
//!   and counted, never waited for.
//! - At most `concurrency` requests at once, each within `timeout_seconds`.
//! - A circuit breaker: after 5 failures in a row, or one refused connection, messages
//!   are `failed` at once for 60 s (notices stop waiting), then one request probes.
//! - A failed request is asked again twice (after 30 s and 2 min): the SMS has gone
//!   without it by then, but the e-mail, the page and the API get it.
//! - A recording without a voice packet is `no_speech` without asking.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxless_core::config::{Secret, TranscriptionConfig};
use boxless_core::recipient::Language;
use boxless_net::http::Url;
use boxless_store::{Transcript, TranscriptState};
use boxless_transcribe::breaker::Failure;
use boxless_transcribe::request::{Format, Request};
use boxless_transcribe::{Breaker, Outcome, Reply};
use tokio::sync::{Semaphore, mpsc};

use crate::server::MessagingServer;

/// Queued jobs per allowed request.
const QUEUE_PER_REQUEST: usize = 64;
/// Failures in a row that open the breaker.
const BREAKER_FAILURES: u32 = 5;
/// How long an open breaker skips the recogniser.
const BREAKER_OPEN_MS: u64 = 60_000;
/// When a failed request is asked again.
const RETRIES: [Duration; 2] = [Duration::from_secs(30), Duration::from_secs(120)];

/// One message to transcribe.
#[derive(Debug, Clone)]
struct Job {
    id: String,
    voiced: bool,
    language: Language,
    /// Requests made for it so far.
    tries: usize,
}

/// What the worker is handed.
#[derive(Debug)]
enum Work {
    /// Ask the recogniser (or decide without it).
    Ask(Job),
    /// Record this message as failed: its job found the queue full.
    Fail(String),
}

/// What the server keeps to ask for transcripts.
pub(crate) struct Transcriber {
    queue: mpsc::Sender<Work>,
    /// The queue's other end, until the worker takes it.
    pending: Mutex<Option<mpsc::Receiver<Work>>>,
    breaker: Mutex<Breaker>,
    url: Url,
    model: String,
    token: Option<Secret>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    concurrency: usize,
    max_seconds: u64,
}

impl std::fmt::Debug for Transcriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcriber")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Transcriber {
    /// The transcriber of `cfg` (its URL checked at configuration); None when off.
    pub(crate) fn new(
        cfg: &TranscriptionConfig,
        token: Option<Secret>,
    ) -> std::io::Result<Option<Transcriber>> {
        if !cfg.on() {
            return Ok(None);
        }
        let url = Url::parse(cfg.url.trim()).ok_or_else(|| {
            std::io::Error::other(format!("transcription.url: `{}` is not a URL", cfg.url))
        })?;
        let tls = boxless_net::tls::public_client_config(None)
            .map_err(|e| std::io::Error::other(format!("transcription.url: TLS roots: {e}")))?;
        let concurrency = cfg.concurrency.max(1) as usize;
        let (queue, rx) = mpsc::channel(QUEUE_PER_REQUEST * concurrency);
        Ok(Some(Transcriber {
            queue,
            pending: Mutex::new(Some(rx)),
            breaker: Mutex::new(Breaker::new(BREAKER_FAILURES, BREAKER_OPEN_MS)),
            url,
            model: cfg.model.clone(),
            token,
            tls,
            timeout: Duration::from_secs(cfg.timeout_seconds),
            concurrency,
            max_seconds: cfg.max_seconds,
        }))
    }

    /// Asks for message `id`'s transcript (never blocks: callable from the store's
    /// thread). A full queue fails it at once.
    pub(crate) fn submit(&self, id: &str, voiced: bool, language: Language) {
        let job = Job {
            id: id.to_string(),
            voiced,
            language,
            tries: 0,
        };
        if self.queue.try_send(Work::Ask(job)).is_err() {
            metrics::counter!("boxless_transcriptions_total", "outcome" => "queue_full")
                .increment(1);
            tracing::warn!(%id, "transcription queue full: the message goes without a transcript");
            // The worker records it (the caller may be the store's thread, which the
            // write needs) once the queue has room; its notices wait no longer than
            // their hold meanwhile.
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let tx = self.queue.clone();
            let id = id.to_string();
            rt.spawn(async move {
                let _ = tx.send(Work::Fail(id)).await;
            });
        }
    }

    /// The breaker, whoever panicked holding it.
    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs until the server stops: takes the queue's jobs, asks the recogniser for each
/// (at most `concurrency` at once) and records the outcomes.
pub(crate) async fn run(server: Arc<MessagingServer>) {
    let Some(t) = server.transcriber.as_ref() else {
        return;
    };
    let Some(mut rx) = t.pending.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    // What a restart left pending is asked again.
    let me = server.clone();
    let left = server
        .store
        .read(move |s| {
            let pending = s.transcripts_pending().unwrap_or_default();
            pending
                .into_iter()
                .map(|(id, recipient)| (id, me.language(recipient)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
    for (id, lang) in left {
        t.submit(&id, true, lang);
    }
    let slots = Arc::new(Semaphore::new(t.concurrency));
    while let Some(work) = rx.recv().await {
        metrics::gauge!("boxless_transcription_queue", "server" => server.id.clone())
            .set(rx.len() as f64);
        let job = match work {
            Work::Ask(job) => job,
            Work::Fail(id) => {
                record(&server, &id, Transcript::failed()).await;
                continue;
            }
        };
        if !job.voiced {
            metrics::counter!("boxless_transcriptions_total", "outcome" => "no_voice").increment(1);
            record(&server, &job.id, Transcript::no_speech()).await;
            continue;
        }
        if t.breaker().open(boxless_core::now_ms()) {
            metrics::counter!("boxless_transcriptions_total", "outcome" => "skipped").increment(1);
            record(&server, &job.id, Transcript::failed()).await;
            continue;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let server = server.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Some(t) = server.transcriber.as_ref() else {
                return;
            };
            match t.ask(&server, &job).await {
                Ok(done) => record(&server, &job.id, done).await,
                Err(why) => {
                    tracing::warn!(id = %job.id, error = %why, "transcription failed");
                    match RETRIES.get(job.tries) {
                        Some(after) => {
                            // The SMS goes now, without it; the e-mail may still get it.
                            let (id, fallback) = (job.id.clone(), server.fallback_after_ms);
                            let now = boxless_core::now_ms();
                            let released = server
                                .store
                                .write(move |s| s.stop_waiting(&id, fallback, now))
                                .await;
                            if matches!(released, Ok(Ok(()))) {
                                server.notifier.wake.notify_one();
                                server.notifier.wake_others.notify_one();
                            }
                            let tx = t.queue.clone();
                            let mut again = job;
                            again.tries += 1;
                            tokio::time::sleep(*after).await;
                            let _ = tx.send(Work::Ask(again)).await;
                        }
                        None => record(&server, &job.id, Transcript::failed()).await,
                    }
                }
            }
        });
    }
}

/// Writes message `id`'s outcome (re-writing the notices still waiting) and wakes the
/// notice workers.
async fn record(server: &Arc<MessagingServer>, id: &str, t: Transcript) {
    let me = server.clone();
    let id = id.to_string();
    let done = server.store.write(move |_| me.transcribed(&id, &t)).await;
    if let Ok(true) = done {
        server.notifier.wake.notify_one();
        server.notifier.wake_others.notify_one();
    }
}

impl Transcriber {
    /// One message's request (and, when the service refuses `verbose_json`, a second with
    /// `json`): its transcript, or why not.
    async fn ask(&self, server: &MessagingServer, job: &Job) -> Result<Transcript, String> {
        let path = server.store.audio_path(&job.id);
        let max_seconds = self.max_seconds;
        let audio = tokio::task::spawn_blocking(move || pcm16(&path, max_seconds))
            .await
            .map_err(|e| e.to_string())??;
        // Only now: once allowed, a request must end in succeeded or failed, or the
        // breaker's one probe would never come back.
        if !self.breaker().allow(boxless_core::now_ms()) {
            return Err("the recogniser is failing: skipped for now".into());
        }
        let started = Instant::now();
        let mut answer = self
            .post(server, job, &audio.wav, Format::VerboseJson)
            .await;
        if let Ok((status, _)) = &answer
            && matches!(status, 400 | 415 | 422)
        {
            answer = self.post(server, job, &audio.wav, Format::Json).await;
        }
        let failed = |how| {
            self.breaker().failed(boxless_core::now_ms(), how);
            metrics::counter!("boxless_transcriptions_total", "outcome" => "failed").increment(1);
        };
        let body = match answer {
            Ok((200, body)) => body,
            Ok((status, _)) => {
                failed(Failure::Other);
                return Err(format!("the recogniser answered {status}"));
            }
            Err(e) => {
                let how = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    Failure::Refused
                } else {
                    Failure::Other
                };
                failed(how);
                return Err(e.to_string());
            }
        };
        let reply = match Reply::parse(&body) {
            Ok(r) => r,
            Err(e) => {
                failed(Failure::Other);
                return Err(e.to_string());
            }
        };
        self.breaker().succeeded();
        metrics::histogram!("boxless_transcription_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("boxless_transcript_words").record(reply.words as f64);
        Ok(match reply.outcome {
            Outcome::Text(mut text) => {
                metrics::counter!("boxless_transcriptions_total", "outcome" => "done").increment(1);
                if audio.cut {
                    text.push_str(" ...");
                }
                Transcript {
                    state: TranscriptState::Done,
                    text: Some(text),
                }
            }
            Outcome::NoSpeech => {
                metrics::counter!("boxless_transcriptions_total", "outcome" => "no_speech")
                    .increment(1);
                Transcript::no_speech()
            }
        })
    }

    /// POSTs the request in `format`: the answer's status and body.
    async fn post(
        &self,
        server: &MessagingServer,
        job: &Job,
        wav: &[u8],
        format: Format,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let request = Request {
            wav,
            model: &self.model,
            language: Some(job.language.as_str()),
            format,
        };
        // A boundary found in the audio is drawn again: twice in a row never happens.
        let mut encoded = None;
        for _ in 0..4 {
            let boundary = {
                let mut rng = server.rng.lock().unwrap_or_else(|p| p.into_inner());
                format!("boxless{:016x}{:016x}", rng.next_u64(), rng.next_u64())
            };
            if let Ok(e) = request.encode(&boundary) {
                encoded = Some(e);
                break;
            }
        }
        let (content_type, body) =
            encoded.ok_or_else(|| std::io::Error::other("no multipart boundary fits"))?;
        let bearer = self
            .token
            .as_ref()
            .map(|t| format!("Bearer {}", t.expose()));
        let mut headers = vec![
            ("content-type", content_type.as_str()),
            ("accept", "application/json"),
        ];
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        let answer = boxless_net::http::post_bounded(
            &self.url,
            &headers,
            &body,
            &self.tls,
            self.timeout,
            boxless_transcribe::reply::MAX_BODY,
        )
        .await?;
        Ok((answer.status, answer.body))
    }
}

/// A message's audio as the recogniser gets it.
struct Audio {
    /// 16-bit PCM WAV at the stored rate.
    wav: Vec<u8>,
    /// Longer than `max_seconds`: only its start.
    cut: bool,
}

/// The WAV at `path` as 16-bit PCM (a G.711 file is expanded), at most `max_seconds`.
fn pcm16(path: &std::path::Path, max_seconds: u64) -> Result<Audio, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (rate, mut samples) = boxless_store::wav::decode(&bytes)
        .ok_or_else(|| format!("{}: not a WAV file we wrote", path.display()))?;
    let most = (max_seconds.saturating_mul(u64::from(rate))) as usize;
    let cut = samples.len() > most;
    samples.truncate(most);
    Ok(Audio {
        wav: boxless_store::wav::encode(&samples, rate, boxless_store::Encoding::Pcm16),
        cut,
    })
}
