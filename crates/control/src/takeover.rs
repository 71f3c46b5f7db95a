//! Who answers for a lost server (docs/high-availability.md): one lease per server in the
//! JetStream key-value bucket [`LEASES_BUCKET`], key `<server id>`, value a [`Lease`]
//! (JSON). No key: the server answers for itself. Whoever holds the key answers for it;
//! it is won with compare-and-set (create when absent, update at the revision read), so
//! of several live servers that see the same silence exactly one wins, and JetStream's
//! Raft, not Boxless, decides the race.
//!
//! The lease has no time limit: it holds as long as its holder's status is heard. When
//! the holder falls silent too, another server replaces it at the revision it read.
//! The server that comes back asks for its numbers ([`Lease::handback`]); the holder
//! stops answering for it, then deletes the key at the revision it read.
//!
//! [`Silence`] and [`claim`] decide (sans-IO: time is an input); [`Leases`] reads and
//! writes the bucket, each call within a deadline.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

use crate::replica::{ReplicaError, nats, within};

/// The leases' bucket.
pub const LEASES_BUCKET: &str = "boxless_leases";

/// Who answers for one server now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The server that took it over.
    pub holder: String,
    /// The server came back and asks for its numbers: the holder lets them go.
    #[serde(default)]
    pub handback: bool,
}

/// When each configured server was last heard (its status), as one server sees it.
#[derive(Debug, Clone)]
pub struct Silence {
    started_ms: u64,
    after_ms: u64,
    heard: HashMap<String, u64>,
}

impl Silence {
    /// Follows `ids` (the configured servers: nobody else's status counts) from
    /// `started_ms`; a server is silent once unheard for `after_ms`. A server never heard
    /// since this process started counts as heard at its start: a process that just came
    /// up takes nobody over before it has listened for `after_ms`.
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a str>, started_ms: u64, after_ms: u64) -> Self {
        Silence {
            started_ms,
            after_ms,
            heard: ids
                .into_iter()
                .map(|id| (id.to_string(), started_ms))
                .collect(),
        }
    }

    /// Server `id`'s status came at `now` (ids not configured are ignored: the table
    /// never grows).
    pub fn heard(&mut self, id: &str, now: u64) {
        if let Some(t) = self.heard.get_mut(id) {
            *t = (*t).max(now);
        }
    }

    /// True when `id` is configured and has been silent for the takeover delay at `now`.
    pub fn silent(&self, id: &str, now: u64) -> bool {
        self.heard
            .get(id)
            .is_some_and(|t| now.saturating_sub((*t).max(self.started_ms)) >= self.after_ms)
    }
}

/// Every server's status as it comes, for [`Silence`].
pub struct Statuses(async_nats::Subscriber);

impl std::fmt::Debug for Statuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Statuses")
    }
}

impl Statuses {
    /// Follows `boxless.status.*` on `client`.
    pub async fn follow(client: &async_nats::Client) -> Result<Statuses, ReplicaError> {
        client
            .subscribe("boxless.status.*")
            .await
            .map(Statuses)
            .map_err(nats)
    }

    /// The id of the next server heard: Some(None) for a message that is not a status on
    /// its server's own subject (a router's request, a forgery); None when the
    /// subscription ended.
    pub async fn next(&mut self) -> Option<Option<String>> {
        use futures_util::StreamExt as _;
        let m = self.0.next().await?;
        Some(
            serde_json::from_slice::<crate::StatusMessage>(&m.payload)
                .ok()
                .filter(|s| m.subject.as_str() == crate::status_subject(&s.id))
                .map(|s| s.id),
        )
    }
}

/// What server `me` does about server `lost`'s lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Nothing: it is not ours and not ours to take.
    Leave,
    /// Take it: nobody holds it and the server is silent (create the key).
    Create,
    /// Take it from a holder that is silent too (update at this revision).
    Replace(u64),
    /// Ours: answer for the server.
    Hold,
    /// Ours, and the server asks for it back: stop answering, then delete at this revision.
    HandBack(u64),
}

/// Decides for `me` about `lost`, given its lease as read (with its revision).
pub fn claim(
    me: &str,
    lost: &str,
    lease: Option<(&Lease, u64)>,
    silence: &Silence,
    now: u64,
) -> Claim {
    if lost == me {
        return Claim::Leave;
    }
    match lease {
        Some((l, rev)) if l.holder == me => {
            if l.handback {
                Claim::HandBack(rev)
            } else {
                Claim::Hold
            }
        }
        // A server that came back and asks for its numbers is not silent, so nobody
        // takes its lease while it waits for the holder.
        None if silence.silent(lost, now) => Claim::Create,
        Some((l, rev)) if silence.silent(lost, now) && silence.silent(&l.holder, now) => {
            Claim::Replace(rev)
        }
        _ => Claim::Leave,
    }
}

/// The leases' bucket, reached through one NATS connection.
#[derive(Clone)]
pub struct Leases {
    kv: kv::Store,
    deadline: Duration,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Leases")
    }
}

impl Leases {
    /// Finds (making it when missing) the bucket with `replicas` copies; each later call
    /// waits at most `deadline`.
    pub async fn open(
        client: &async_nats::Client,
        replicas: usize,
        deadline: Duration,
    ) -> Result<Leases, ReplicaError> {
        let js = jetstream::new(client.clone());
        let config = kv::Config {
            bucket: LEASES_BUCKET.into(),
            description: "Boxless: who answers for a lost server".into(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas.max(1),
            max_value_size: 1024,
            ..Default::default()
        };
        let kv = crate::replica::bucket(&js, config, deadline).await?;
        Ok(Leases { kv, deadline })
    }

    /// Server `id`'s lease and its revision; None when nobody holds it. A value that is
    /// not a lease reads as held by nobody (then the next write replaces it).
    pub async fn get(&self, id: &str) -> Result<Option<(Lease, u64)>, ReplicaError> {
        let entry = within(self.deadline, self.kv.entry(id)).await?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| Some((serde_json::from_slice(&e.value).ok()?, e.revision))))
    }

    /// The revision of `id`'s lease when it was let go and not yet forgotten (the server
    /// then has to catch up: [`Leases::forget`] once it has); None otherwise.
    pub async fn released(&self, id: &str) -> Result<Option<u64>, ReplicaError> {
        let entry = within(self.deadline, self.kv.entry(id)).await?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Delete)
            .map(|e| e.revision))
    }

    /// Forgets `id`'s let-go lease at `revision` (nothing if it changed since): a server
    /// that caught up leaves no trace, so its next start need not catch up again.
    pub async fn forget(&self, id: &str, revision: u64) -> Result<(), ReplicaError> {
        let done = tokio::time::timeout(
            self.deadline,
            self.kv.purge_expect_revision(id, Some(revision)),
        )
        .await
        .map_err(|_| ReplicaError::Timeout(self.deadline))?;
        self.settled(id, revision, done).await.map(|_| ())
    }

    /// The revision to write over: the key's last entry (a deleted key keeps one), or 0.
    async fn last_revision(&self, id: &str) -> Result<u64, ReplicaError> {
        let entry = within(self.deadline, self.kv.entry(id)).await?;
        Ok(entry.map_or(0, |e| e.revision))
    }

    /// Writes `lease` for `id` if the key is still at `revision` (0: never written, or
    /// deleted: see [`Leases::take`]); false when another server wrote first.
    pub async fn put(&self, id: &str, lease: &Lease, revision: u64) -> Result<bool, ReplicaError> {
        let value = serde_json::to_vec(lease).map_err(nats)?;
        let done = tokio::time::timeout(self.deadline, self.kv.update(id, value.into(), revision))
            .await
            .map_err(|_| ReplicaError::Timeout(self.deadline))?;
        self.settled(id, revision, done.map(|_| ())).await
    }

    /// A compare-and-set write's outcome: refused because another server wrote first
    /// (the key moved past `revision`) is `false`, any other refusal an error. The
    /// refusal's code says so; failing that, a read showing the key moved does (a read
    /// may come from a copy not yet up to date, so it is not asked first).
    async fn settled<E: std::error::Error + 'static>(
        &self,
        id: &str,
        revision: u64,
        done: Result<(), E>,
    ) -> Result<bool, ReplicaError> {
        match done {
            Ok(()) => Ok(true),
            Err(e) if crate::replica::lost_race(&e) => Ok(false),
            Err(e) => match self.last_revision(id).await? {
                r if r != revision => Ok(false),
                _ => Err(nats(e)),
            },
        }
    }

    /// Takes `id`'s lease for `me` when nobody holds it ([`Claim::Create`]); false when
    /// another server took it first.
    pub async fn take(&self, id: &str, me: &str) -> Result<bool, ReplicaError> {
        let revision = self.last_revision(id).await?;
        if revision != 0 && self.get(id).await?.is_some() {
            return Ok(false);
        }
        let lease = Lease {
            holder: me.to_string(),
            handback: false,
        };
        self.put(id, &lease, revision).await
    }

    /// Lets `id`'s lease go if it is still at `revision`; false when it changed.
    pub async fn release(&self, id: &str, revision: u64) -> Result<bool, ReplicaError> {
        let done = tokio::time::timeout(
            self.deadline,
            self.kv.delete_expect_revision(id, Some(revision)),
        )
        .await
        .map_err(|_| ReplicaError::Timeout(self.deadline))?;
        self.settled(id, revision, done).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, handback: bool) -> Lease {
        Lease {
            holder: holder.into(),
            handback,
        }
    }

    #[test]
    fn a_silent_server_is_taken_once_its_delay_is_over_and_never_before() {
        let mut s = Silence::new(["ms1", "ms2", "ms3"], 1_000, 30_000);
        assert!(
            !s.silent("ms1", 30_999),
            "not before listening for the delay"
        );
        assert!(s.silent("ms1", 31_000));
        s.heard("ms1", 20_000);
        assert!(!s.silent("ms1", 49_999));
        assert_eq!(claim("ms2", "ms1", None, &s, 49_999), Claim::Leave);
        assert_eq!(claim("ms2", "ms1", None, &s, 50_000), Claim::Create);
        s.heard("ms9", 1);
        assert!(!s.silent("ms9", u64::MAX), "a stranger is never followed");
        assert_eq!(
            claim("ms1", "ms1", None, &s, 90_000),
            Claim::Leave,
            "never itself"
        );
    }

    #[test]
    fn a_lease_moves_only_from_a_silent_holder_and_goes_back_on_request() {
        let mut s = Silence::new(["ms1", "ms2", "ms3"], 0, 30_000);
        s.heard("ms2", 40_000);
        s.heard("ms3", 40_000);
        let held = lease("ms2", false);
        assert_eq!(
            claim("ms2", "ms1", Some((&held, 7)), &s, 50_000),
            Claim::Hold
        );
        assert_eq!(
            claim("ms3", "ms1", Some((&held, 7)), &s, 50_000),
            Claim::Leave
        );
        // ms2 falls silent too: ms3 replaces it at the revision it read.
        assert_eq!(
            claim("ms3", "ms1", Some((&held, 7)), &s, 70_000),
            Claim::Replace(7)
        );
        // ms1 is back and asks: the holder hands back; nobody else touches it.
        s.heard("ms1", 71_000);
        s.heard("ms2", 71_000);
        let asked = lease("ms2", true);
        assert_eq!(
            claim("ms2", "ms1", Some((&asked, 8)), &s, 72_000),
            Claim::HandBack(8)
        );
        assert_eq!(
            claim("ms3", "ms1", Some((&asked, 8)), &s, 72_000),
            Claim::Leave
        );
        let wire = serde_json::to_string(&lease("ms2", false)).unwrap();
        let back: Lease = serde_json::from_str(&wire).unwrap();
        assert_eq!(back, lease("ms2", false));
        let old: Lease = serde_json::from_str(r#"{"holder":"ms3"}"#).unwrap();
        assert!(!old.handback);
    }
}
