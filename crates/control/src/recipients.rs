//! Recipients' preferences across processes.
//!
//! `local` (one process, `boxless serve`): the process's [`Directory`] is the truth.
//! `nats`: the JetStream key-value bucket `boxless_recipients` (key: the number's digits,
//! value: the entry as JSON) is the truth; every process follows it into its own
//! `Directory` (revisions keep a late copy from overwriting a newer one) and reads only
//! that copy, so calls and notices go on with the last copy while NATS is away. Writes go
//! to the bucket, then at once to the copy (read your own writes).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use boxless_core::recipient::Prefs;
use boxless_core::{PhoneNumber, now_ms};
use boxless_store::Directory;
use boxless_store::directory::{from_json, to_json};
use futures_util::StreamExt;

/// The bucket.
pub const BUCKET: &str = "boxless_recipients";

/// Why a change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RecipientsError {
    /// The local copy failed.
    #[error("recipients store: {0}")]
    Store(#[from] boxless_store::Error),
    /// NATS refused or is away.
    #[error("NATS key-value bucket {0}")]
    Nats(String),
}

/// A bucket once reached.
pub(crate) type Slot = Arc<RwLock<Option<kv::Store>>>;

/// Where preferences and greetings live.
#[derive(Clone)]
pub enum Recipients {
    /// This process's file is the truth.
    Local(Arc<Directory>),
    /// The bucket is the truth; `copy` follows it.
    Nats {
        /// The bucket, once reached (None until then: JetStream away or disabled).
        kv: Slot,
        /// The greetings' bucket, likewise (`crate::greetings`).
        greetings: Slot,
        /// This process's copy.
        copy: Arc<Directory>,
    },
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipients::Local(_) => f.write_str("Recipients::Local"),
            Recipients::Nats { .. } => f.write_str("Recipients::Nats"),
        }
    }
}

/// What the bucket `name` refused, or why it did not answer.
pub(crate) fn bucket_err(name: &str, e: impl std::fmt::Display) -> RecipientsError {
    RecipientsError::Nats(format!("{name}: {e}"))
}

/// The same for the preferences' bucket.
fn nats_err(e: impl std::fmt::Display) -> RecipientsError {
    bucket_err(BUCKET, e)
}

impl Recipients {
    /// Follows the preferences' bucket and the greetings' on `client` into `copy`: each
    /// attached in the background, retried until JetStream answers; meanwhile reads use the
    /// copy and writes are refused.
    pub fn nats(client: async_nats::Client, copy: Arc<Directory>, replicas: usize) -> Recipients {
        let slot: Slot = Arc::new(RwLock::new(None));
        let greetings: Slot = Arc::new(RwLock::new(None));
        let c = client.clone();
        tokio::spawn(attach(
            BUCKET,
            slot.clone(),
            move || {
                let c = c.clone();
                async move { bucket(&c, replicas).await }
            },
            {
                let copy = copy.clone();
                move |kv| follow(kv, copy)
            },
        ));
        tokio::spawn(attach(
            crate::greetings::BUCKET,
            greetings.clone(),
            move || {
                let c = client.clone();
                async move { crate::greetings::bucket(&c, replicas).await }
            },
            {
                let copy = copy.clone();
                move |kv| crate::greetings::follow(kv, copy)
            },
        ));
        Recipients::Nats {
            kv: slot,
            greetings,
            copy,
        }
    }

    fn bucket_now(&self) -> Result<Option<kv::Store>, RecipientsError> {
        match self {
            Recipients::Local(_) => Ok(None),
            Recipients::Nats { kv, .. } => reached(kv),
        }
    }
}

/// The bucket in `slot`, or why there is none yet.
pub(crate) fn reached(slot: &Slot) -> Result<Option<kv::Store>, RecipientsError> {
    slot.read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .map(Some)
        .ok_or_else(|| {
            RecipientsError::Nats("not reached yet (is JetStream on? nats-server -js)".into())
        })
}

impl Recipients {
    /// The copy every read uses.
    pub fn copy(&self) -> &Arc<Directory> {
        match self {
            Recipients::Local(d) | Recipients::Nats { copy: d, .. } => d,
        }
    }

    /// `n`'s entry: from the bucket when it answers, else the copy.
    pub async fn get(&self, n: PhoneNumber) -> Result<Option<Prefs>, RecipientsError> {
        if let Ok(Some(kv)) = self.bucket_now()
            && let Ok(Ok(got)) =
                tokio::time::timeout(Duration::from_secs(2), kv.get(n.digits())).await
        {
            return Ok(got.and_then(|v| from_json(n, &v)));
        }
        let copy = self.copy().clone();
        blocking(move || copy.get(n)).await
    }

    /// Sets `n`'s entry.
    pub async fn put(&self, n: PhoneNumber, p: Prefs) -> Result<(), RecipientsError> {
        let rev = match self.bucket_now()? {
            None => None,
            Some(kv) => Some(
                kv.put(n.digits(), to_json(&p).into_bytes().into())
                    .await
                    .map_err(nats_err)?,
            ),
        };
        let copy = self.copy().clone();
        blocking(move || copy.put(n, &p, rev, now_ms())).await?;
        Ok(())
    }

    /// Removes `n`'s entry; false when there was none.
    pub async fn delete(&self, n: PhoneNumber) -> Result<bool, RecipientsError> {
        let copy = self.copy().clone();
        let had = {
            let c = copy.clone();
            blocking(move || c.get(n)).await?.is_some()
        };
        if let Some(kv) = self.bucket_now()? {
            kv.delete(n.digits()).await.map_err(nats_err)?;
        }
        blocking(move || copy.delete(n, None)).await?;
        Ok(had)
    }

    /// Opts `n` out of SMS (STOP) or back in (START), keeping the rest of its entry;
    /// returns the entry as it now is when that changed anything.
    pub async fn set_opted_out(
        &self,
        n: PhoneNumber,
        out: bool,
    ) -> Result<Option<Prefs>, RecipientsError> {
        let mut p = self.get(n).await?.unwrap_or_default();
        if p.opted_out == out {
            return Ok(None);
        }
        p.opted_out = out;
        self.put(n, p.clone()).await?;
        Ok(Some(p))
    }
}

/// Reaches a bucket with `open`, retried every 5 s until JetStream answers; puts it in
/// `slot` (writes may go to it from then on) and follows it until the process ends.
async fn attach<O, OF, W, WF>(name: &'static str, slot: Slot, open: O, follow: W)
where
    O: Fn() -> OF,
    OF: std::future::Future<Output = Result<kv::Store, RecipientsError>>,
    W: FnOnce(kv::Store) -> WF,
    WF: std::future::Future<Output = ()>,
{
    let mut warned = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), open()).await {
            Ok(Ok(kv)) => {
                *slot.write().unwrap_or_else(|e| e.into_inner()) = Some(kv.clone());
                tracing::info!("recipients: following the NATS bucket {name}");
                follow(kv).await;
                return;
            }
            other => {
                if !warned {
                    let why = match other {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    tracing::warn!(error = %why, "recipients: NATS key-value bucket {name} unavailable (is JetStream on? nats-server -js); using the local copy, retrying");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> boxless_store::Result<T> + Send + 'static,
) -> Result<T, RecipientsError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RecipientsError::Store(boxless_store::Error::Io(std::io::Error::other(e))))?
        .map_err(RecipientsError::from)
}

/// The bucket, made if it does not exist yet.
pub async fn bucket(
    client: &async_nats::Client,
    replicas: usize,
) -> Result<kv::Store, RecipientsError> {
    key_value(
        client,
        BUCKET,
        "Boxless recipients' preferences",
        16 * 1024,
        replicas,
    )
    .await
}

/// The key-value bucket `name`, made if it does not exist yet: one value a key (no
/// history), values of at most `max_value` bytes, `replicas` copies.
pub(crate) async fn key_value(
    client: &async_nats::Client,
    name: &str,
    description: &str,
    max_value: i32,
    replicas: usize,
) -> Result<kv::Store, RecipientsError> {
    use async_nats::jetstream::stream;
    let js = async_nats::jetstream::new(client.clone());
    if let Ok(s) = js.get_key_value(name).await {
        return Ok(s);
    }
    // The bucket's stream, made as a key-value bucket is (ADR-8) rather than with
    // `create_key_value`: that first reads the account's info, whose answer from
    // nats-server 2.9 (Debian 12) lacks fields async-nats 0.51 requires.
    let made = js
        .create_stream(stream::Config {
            name: format!("KV_{name}"),
            description: Some(description.into()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_message_size: max_value,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            num_replicas: replicas.max(1),
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await;
    match js.get_key_value(name).await {
        Ok(s) => Ok(s),
        Err(e) => Err(match made {
            Err(m) => bucket_err(name, m),
            Ok(_) => bucket_err(name, e),
        }),
    }
}

/// Follows the bucket into `copy` until the process ends: every entry first, then each
/// change; when the watch breaks (NATS away) it starts again, the copy serving meanwhile.
pub async fn follow(kv: kv::Store, copy: Arc<Directory>) {
    keep_following(
        &kv,
        BUCKET,
        || async { Ok((kv.watch_with_history(">").await.map_err(nats_err)?, 0)) },
        |e| apply(&copy, e),
    )
    .await
}

/// How often a follower checks that its watch still delivers.
const STALL_CHECK: Duration = Duration::from_secs(3);

/// Follows the bucket `name` until the process ends: `start` opens a watch and says the
/// revision it starts after, `apply` takes each entry (false: the copy could not keep it).
/// When the watch breaks (NATS away)
/// it is opened again, the copy serving meanwhile. A watch can also go quiet without
/// breaking (its consumer was on a NATS node that was lost, until the client notices:
/// measured 20-43 s): every [`STALL_CHECK`] the bucket's last revision is compared with
/// the last one delivered, and a watch that stays behind with no progress across two
/// checks is opened again.
pub(crate) async fn keep_following<S, SF, A, AF>(
    kv: &kv::Store,
    name: &str,
    mut start: S,
    mut apply: A,
) where
    S: FnMut() -> SF,
    SF: std::future::Future<Output = Result<(kv::Watch, u64), RecipientsError>>,
    A: FnMut(kv::Entry) -> AF,
    AF: std::future::Future<Output = bool>,
{
    let mut wait = Duration::from_millis(500);
    loop {
        let started = tokio::time::timeout(STALL_CHECK, start())
            .await
            .unwrap_or_else(|_| Err(bucket_err(name, "timed out starting the watch")));
        match started {
            Ok((mut w, mut last)) => {
                let mut check = tokio::time::interval(STALL_CHECK);
                check.tick().await;
                let mut behind_at: Option<u64> = None;
                loop {
                    tokio::select! {
                        e = w.next() => {
                            let Some(Ok(e)) = e else { break };
                            wait = Duration::from_millis(500);
                            let rev = e.revision;
                            // One the copy could not keep leaves the watch behind: it is
                            // opened again, and the entry delivered again.
                            if apply(e).await {
                                last = last.max(rev);
                            }
                        }
                        _ = check.tick() => {
                            let newest = tokio::time::timeout(STALL_CHECK, kv.stream.get_info())
                                .await
                                .ok()
                                .and_then(Result::ok)
                                .map(|i| i.state.last_sequence);
                            match (newest, behind_at) {
                                (Some(n), Some(at)) if n > last && last == at => {
                                    tracing::warn!(last, newest = n, "the watch of {name} stalled; starting it again");
                                    break;
                                }
                                (Some(n), _) if n > last => behind_at = Some(last),
                                _ => behind_at = None,
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch {name}; using the last copy")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Applies one entry to the copy: false when the copy could not be written (the entry is
/// then not counted as delivered, so a watch that gets nothing newer is opened again and
/// replays it).
async fn apply(copy: &Arc<Directory>, e: kv::Entry) -> bool {
    let Some(n) = PhoneNumber::parse_e164(&format!("+{}", e.key)) else {
        return true;
    };
    let c = copy.clone();
    let rev = e.revision;
    let res = tokio::task::spawn_blocking(move || match e.operation {
        kv::Operation::Put => match from_json(n, &e.value) {
            Some(p) => c.put(n, &p, Some(rev), now_ms()).map(|_| ()),
            None => {
                tracing::warn!(key = %e.key, "recipients: an entry that does not parse; ignored");
                Ok(())
            }
        },
        kv::Operation::Delete | kv::Operation::Purge => c.delete(n, Some(rev)).map(|_| ()),
    })
    .await;
    match res {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "recipients: updating the local copy failed");
            false
        }
        Err(_) => false,
    }
}
