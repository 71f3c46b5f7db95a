//! The recipients' own greetings across processes, as their preferences are
//! (`crate::recipients`): with the `local` backend the process's [`Directory`] is the
//! truth; with `nats` the key-value bucket `boxless_greetings` is (key
//! `<digits>.<kind>`, e.g. `15551230002.busy`; value: the 8 kHz µ-law octets), each process
//! follows it into its copy, and calls read only the copy. A greeting is one value, so it
//! arrives whole or not at all: a call never hears half of one.
//!
//! Unlike the preferences, the follower does not replay the whole bucket at each start (a
//! million greetings are hundreds of megabytes): it starts after the last revision its copy
//! applied, and from the beginning only when the bucket was made anew.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use boxless_core::recipient::GreetingKind;
use boxless_core::{PhoneNumber, now_ms};
use boxless_store::Directory;

use crate::recipients::{
    Recipients, RecipientsError, blocking, bucket_err, keep_following, key_value, reached,
};

/// The bucket.
pub const BUCKET: &str = "boxless_greetings";

/// A value at most: 60 s (`messages.greeting_max_seconds`' ceiling) of 8 kHz µ-law, with
/// room to spare, under NATS's default 1 MB message.
pub const MAX_VALUE: usize = 512 * 1024;

/// How long a write waits for JetStream.
const WRITE_WAIT: Duration = Duration::from_secs(5);

fn err(e: impl std::fmt::Display) -> RecipientsError {
    bucket_err(BUCKET, e)
}

/// The key of `n`'s greeting of `kind`.
pub fn key(n: PhoneNumber, kind: GreetingKind) -> String {
    format!("{}.{}", n.digits(), kind.as_str())
}

/// The number and kind a key names.
pub fn parse_key(k: &str) -> Option<(PhoneNumber, GreetingKind)> {
    let (digits, kind) = k.split_once('.')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((
        PhoneNumber::parse_e164(&format!("+{digits}"))?,
        GreetingKind::parse(kind)?,
    ))
}

impl Recipients {
    fn greetings_now(&self) -> Result<Option<kv::Store>, RecipientsError> {
        match self {
            Recipients::Local(_) => Ok(None),
            Recipients::Nats { greetings, .. } => reached(greetings),
        }
    }

    /// `n`'s greeting of `kind` (µ-law octets): from the bucket when it answers, else the
    /// copy.
    pub async fn greeting(
        &self,
        n: PhoneNumber,
        kind: GreetingKind,
    ) -> Result<Option<Vec<u8>>, RecipientsError> {
        if let Ok(Some(kv)) = self.greetings_now()
            && let Ok(Ok(got)) =
                tokio::time::timeout(Duration::from_secs(2), kv.get(key(n, kind))).await
        {
            return Ok(got.map(|b| b.to_vec()));
        }
        let copy = self.copy().clone();
        blocking(move || copy.greeting(n, kind))
            .await
            .map(|g| g.map(|(a, _)| a))
    }

    /// Sets `n`'s greeting of `kind`: to the bucket (with NATS), then to this process's copy,
    /// so that its next call hears it at once.
    pub async fn put_greeting(
        &self,
        n: PhoneNumber,
        kind: GreetingKind,
        ulaw: Vec<u8>,
    ) -> Result<(), RecipientsError> {
        let rev = match self.greetings_now()? {
            None => None,
            Some(kv) => Some(
                tokio::time::timeout(WRITE_WAIT, kv.put(key(n, kind), ulaw.clone().into()))
                    .await
                    .map_err(|_| err("timed out"))?
                    .map_err(err)?,
            ),
        };
        let copy = self.copy().clone();
        blocking(move || copy.put_greeting(n, kind, &ulaw, rev, now_ms())).await?;
        Ok(())
    }

    /// Removes `n`'s greeting of `kind`; false when there was none.
    pub async fn delete_greeting(
        &self,
        n: PhoneNumber,
        kind: GreetingKind,
    ) -> Result<bool, RecipientsError> {
        let had = match self.greetings_now()? {
            None => {
                let copy = self.copy().clone();
                return blocking(move || copy.delete_greeting(n, kind, None)).await;
            }
            Some(kv) => {
                let had = tokio::time::timeout(WRITE_WAIT, kv.get(key(n, kind)))
                    .await
                    .map_err(|_| err("timed out"))?
                    .map_err(err)?
                    .is_some();
                if had {
                    tokio::time::timeout(WRITE_WAIT, kv.delete(key(n, kind)))
                        .await
                        .map_err(|_| err("timed out"))?
                        .map_err(err)?;
                }
                had
            }
        };
        let copy = self.copy().clone();
        blocking(move || copy.delete_greeting(n, kind, None)).await?;
        Ok(had)
    }
}

/// The bucket, made if it does not exist yet.
pub async fn bucket(
    client: &async_nats::Client,
    replicas: usize,
) -> Result<kv::Store, RecipientsError> {
    key_value(
        client,
        BUCKET,
        "Boxless recipients' greetings",
        MAX_VALUE as i32,
        replicas,
    )
    .await
}

/// Follows the bucket into `copy` until the process ends, from the revision after the last
/// one the copy applied (`crate::recipients::keep_following`: opened again when it breaks
/// or stalls).
pub async fn follow(kv: kv::Store, copy: Arc<Directory>) {
    keep_following(&kv, BUCKET, || watch(&kv, &copy), |e| apply(&copy, e)).await
}

/// A watch from where the copy stopped, and the revision it starts after.
async fn watch(kv: &kv::Store, copy: &Arc<Directory>) -> Result<(kv::Watch, u64), RecipientsError> {
    let c = copy.clone();
    let seen = blocking(move || c.greetings_seen()).await?;
    let last = kv.stream.get_info().await.map_err(err)?.state.last_sequence;
    if seen > last {
        // The bucket was made anew (its revisions started again): what the copy holds
        // came from the old one.
        tracing::warn!(
            seen,
            last,
            "greetings: {BUCKET} is newer than this copy; following it from its start"
        );
        let c = copy.clone();
        blocking(move || c.clear_greetings()).await?;
    } else if seen > 0 {
        let w = kv.watch_all_from_revision(seen + 1).await.map_err(err)?;
        return Ok((w, seen));
    }
    Ok((kv.watch_with_history(">").await.map_err(err)?, 0))
}

/// Applies one entry to the copy: false when the copy could not be written (the entry is
/// then not counted as delivered, so the watch is opened again from the copy's mark).
async fn apply(copy: &Arc<Directory>, e: kv::Entry) -> bool {
    let rev = e.revision;
    let target = parse_key(&e.key);
    if target.is_none() {
        tracing::warn!(key = %e.key, "greetings: a key that names no number and kind; ignored");
    }
    let c = copy.clone();
    let res = tokio::task::spawn_blocking(move || {
        let change = match (target, e.operation) {
            (Some((n, kind)), kv::Operation::Put) => {
                if e.value.is_empty() || e.value.len() > MAX_VALUE {
                    tracing::warn!(key = %e.key, bytes = e.value.len(), "greetings: a value of no or too much audio; ignored");
                    None
                } else {
                    Some((n, kind, Some(&e.value[..])))
                }
            }
            (Some((n, kind)), kv::Operation::Delete | kv::Operation::Purge) => {
                Some((n, kind, None))
            }
            (None, _) => None,
        };
        c.follow_greeting(rev, change, now_ms())
    })
    .await;
    match res {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "greetings: updating the local copy failed");
            false
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_a_number_and_a_kind() {
        let n = PhoneNumber::parse_e164("+15551230002").unwrap();
        for kind in GreetingKind::ALL {
            assert_eq!(parse_key(&key(n, kind)), Some((n, kind)));
        }
        assert_eq!(key(n, GreetingKind::Busy), "15551230002.busy");
        for bad in [
            "15551230002",
            "x.busy",
            "15551230002.other",
            "+1555.busy",
            ".busy",
        ] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }
}
