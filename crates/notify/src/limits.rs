//! The limits that hold for every server of the cluster rather than for each one
//! (docs/configuration.md): `sms.max_per_recipient_per_hour` and the missed-call merge
//! window. Calls for one number spread over all servers, so a count kept per server
//! would either let the number get the limit once per server or, split in shares, merge
//! a notice into the digest while the cluster's hour still has room.
//!
//! One [`Limits`] per process. On one box its servers share the counts in memory, seeded
//! after a restart from the SMS their stores say went in the last hour. Over NATS the
//! counts live in JetStream ([`boxless_control::counters`]); while JetStream does not
//! answer, each server falls back to its share of the hour (the limit divided by the
//! servers, at least one), so the cluster as a whole still never exceeds the limit, and
//! a burst of missed calls is merged per server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use boxless_control::counters::{Counters, MAX_TIMES, Missed, MissedClaim, SentTimes, Taken};
use boxless_core::{PhoneNumber, now_ms};
use boxless_store::outbox::HOUR_MS;
use boxless_store::{Store, Window};

/// Numbers (and caller/recipient pairs) counted in memory at most; past it the oldest
/// are forgotten first, then a number is counted from the stores alone.
const MAX_KEYS: usize = 100_000;

/// How long one cluster count may take, compare-and-set retries included.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(2);

type Pair = (PhoneNumber, Option<PhoneNumber>);

/// The cluster-wide counts of one process.
pub struct Limits {
    hours: Mutex<HashMap<PhoneNumber, SentTimes>>,
    missed: Mutex<HashMap<Pair, MissedClaim>>,
    /// The stores of this process's servers: the SMS they sent seed a number's hour.
    stores: RwLock<Vec<Arc<Store>>>,
    /// The JetStream bucket, once reached (over NATS).
    cluster: Arc<RwLock<Option<Counters>>>,
    /// Servers sharing the limits when the cluster is away (1 on one box).
    servers: u32,
    last_warned_ms: AtomicU64,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl Default for Limits {
    /// One box's.
    fn default() -> Limits {
        Limits::new(1)
    }
}

impl Limits {
    /// One box: this process's servers are all the servers there are.
    pub fn local() -> Arc<Limits> {
        Arc::new(Limits::default())
    }

    /// Over NATS, with `servers` servers configured: the bucket on `client` with
    /// `replicas` copies, keeping counts at least `window` (the lockout's), reached in the
    /// background and retried until JetStream answers.
    pub fn nats(
        client: boxless_control::Client,
        replicas: usize,
        servers: u32,
        window: Duration,
    ) -> Arc<Limits> {
        let limits = Arc::new(Limits::new(servers.max(1)));
        let slot = limits.cluster.clone();
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                match Counters::open(&client, replicas, window, Duration::from_secs(1)).await {
                    Ok(c) => {
                        *slot.write().unwrap_or_else(|p| p.into_inner()) = Some(c);
                        if warned {
                            tracing::info!("cluster limits: JetStream reached");
                        }
                        return;
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %e, "cluster limits: JetStream away; each server keeps its share of sms.max_per_recipient_per_hour until it answers");
                            warned = true;
                        }
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            }
        });
        limits
    }

    fn new(servers: u32) -> Limits {
        Limits {
            hours: Mutex::new(HashMap::new()),
            missed: Mutex::new(HashMap::new()),
            stores: RwLock::new(Vec::new()),
            cluster: Arc::new(RwLock::new(None)),
            servers,
            last_warned_ms: AtomicU64::new(0),
        }
    }

    /// Counts `store`'s SMS (a server of this process) when a number's hour is seeded.
    pub fn add(&self, store: Arc<Store>) {
        self.stores
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(store);
    }

    fn cluster(&self) -> Option<Counters> {
        self.cluster
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Logs a JetStream failure at most once a minute (it is counted each time).
    fn fell_back(&self, what: &'static str, e: &dyn std::fmt::Display) {
        metrics::counter!("boxless_limits_fallback_total", "limit" => what).increment(1);
        let now = now_ms();
        let last = self.last_warned_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60_000
            && self
                .last_warned_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %e, limit = what, "cluster limits: JetStream failed; this server counts its own share meanwhile");
        }
    }

    /// `f`'s answer from JetStream within [`CLUSTER_DEADLINE`]; None (counted and logged)
    /// when it failed or did not answer, and the caller counts locally.
    async fn ask<T>(
        &self,
        what: &'static str,
        f: impl std::future::Future<Output = Result<T, boxless_control::replica::ReplicaError>>,
    ) -> Option<T> {
        match tokio::time::timeout(CLUSTER_DEADLINE, f).await {
            Ok(Ok(t)) => Some(t),
            Ok(Err(e)) => {
                self.fell_back(what, &e);
                None
            }
            Err(_) => {
                self.fell_back(what, &"no answer within 2 s");
                None
            }
        }
    }

    /// Counts an SMS to `to` at `now` when the cluster's hour has fewer than `max` (always
    /// with `force`: the one answer to a STOP/START).
    pub async fn take_sms(&self, to: PhoneNumber, now: u64, max: u32, force: bool) -> Taken {
        if max as usize > MAX_TIMES {
            // More than an SMS every 3.6 s to one number: no limit, nothing to count.
            return Taken {
                granted: true,
                before: Window::default(),
            };
        }
        let mut share = max;
        if let Some(c) = self.cluster() {
            if let Some(t) = self.ask("sms_hour", c.take_sms(to, now, max, force)).await {
                return t;
            }
            share = (max / self.servers).max(1);
        }
        self.take_local(to, now, share, force).await
    }

    /// Counts a wrong access code on `link` for the whole cluster (over NATS): Some(true)
    /// when the cluster's count locks it; None on one box (a link number has one server
    /// there, whose store counts) or while JetStream does not answer.
    pub async fn wrong_code(
        &self,
        link: PhoneNumber,
        now: u64,
        max: u32,
        window_ms: u64,
    ) -> Option<bool> {
        let c = self.cluster()?;
        self.ask("lockout", c.wrong_code(link, now, max, window_ms))
            .await
    }

    /// True when the cluster's count locks `link` at `now` (see [`Limits::wrong_code`]).
    pub async fn link_locked(&self, link: PhoneNumber, now: u64) -> bool {
        match self.cluster() {
            Some(c) => self
                .ask("lockout", c.link_locked(link, now))
                .await
                .unwrap_or(false),
            None => false,
        }
    }

    /// Gives back the SMS to `to` counted at `at`: it did not go.
    pub async fn give_back_sms(&self, to: PhoneNumber, at: u64) {
        if let Some(c) = self.cluster()
            && self
                .ask("sms_hour", c.give_back_sms(to, at))
                .await
                .is_some()
        {
            return;
        }
        if let Some(t) = self.lock_hours().get_mut(&to) {
            t.give_back(at);
        }
    }

    fn lock_hours(&self) -> std::sync::MutexGuard<'_, HashMap<PhoneNumber, SentTimes>> {
        self.hours.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn take_local(&self, to: PhoneNumber, now: u64, max: u32, force: bool) -> Taken {
        if let Some(t) = self.lock_hours().get_mut(&to) {
            return t.take(now, max, force);
        }
        // First sight of the number since the start: what the stores say went.
        let stores = self
            .stores
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut seen = Vec::new();
        for s in stores {
            let since = now.saturating_sub(HOUR_MS);
            match s.read(move |s| s.sent_times(to, since, MAX_TIMES)).await {
                Ok(Ok(v)) => seen.extend(v),
                Ok(Err(e)) => tracing::error!(error = %e, "cluster limits: reading sent SMS"),
                Err(e) => tracing::error!(error = %e, "cluster limits: reading sent SMS"),
            }
        }
        seen.sort_unstable();
        let seeded = SentTimes::from_sorted(seen);
        let mut hours = self.lock_hours();
        if hours.len() >= MAX_KEYS && !hours.contains_key(&to) {
            hours.retain(|_, t| {
                t.prune(now);
                !t.is_empty()
            });
        }
        if hours.len() >= MAX_KEYS && !hours.contains_key(&to) {
            // Every number was notified within the hour: count from the stores alone.
            metrics::counter!("boxless_limits_uncached_total").increment(1);
            let mut t = seeded;
            return t.take(now, max, force);
        }
        // Another task may have seeded it meanwhile: its entry counts.
        hours.entry(to).or_insert(seeded).take(now, max, force)
    }

    /// Decides whether server `server` alerts `recipient` of `caller`'s missed call at
    /// `now` (window `merge_ms`), or another server's alert covers it.
    pub async fn missed_call(
        &self,
        recipient: PhoneNumber,
        caller: Option<PhoneNumber>,
        server: &str,
        now: u64,
        merge_ms: u64,
    ) -> Missed {
        if let Some(c) = self.cluster() {
            let claim = c.claim_missed(recipient, caller, server, now, merge_ms);
            if let Some(m) = self.ask("missed_call", claim).await {
                return m;
            }
        }
        let mut missed = self.missed.lock().unwrap_or_else(|p| p.into_inner());
        let key = (recipient, caller);
        if missed.len() >= MAX_KEYS && !missed.contains_key(&key) {
            missed.retain(|_, c| c.at_ms.saturating_add(HOUR_MS) > now);
            if missed.len() >= MAX_KEYS {
                return Missed::Mine;
            }
        }
        let (m, claim) = MissedClaim::decide(missed.remove(&key), server, now, merge_ms);
        missed.insert(key, claim);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxless_store::NewMessage;

    fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse_e164(s).unwrap()
    }

    fn temp_store(tag: &str) -> (Arc<Store>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "boxless-limits-{tag}-{}-{}",
            std::process::id(),
            now_ms()
        ));
        let pool = boxless_core::LinkPool::parse(&["+18005550100-+18005550109"]).unwrap();
        let s = Store::open(&dir, tag, pool).unwrap();
        (Arc::new(s), dir)
    }

    #[tokio::test]
    async fn the_servers_of_one_process_share_the_hour() {
        let limits = Limits::local();
        let to = n("+15551230002");
        let t = now_ms();
        // Three takes from any server of the process, a limit of 3: the fourth is refused.
        for k in 0..3 {
            assert!(limits.take_sms(to, t + k, 3, false).await.granted);
        }
        let full = limits.take_sms(to, t + 3, 3, false).await;
        assert_eq!((full.granted, full.before.sent), (false, 3));
        // An SMS that did not go gives its place back.
        limits.give_back_sms(to, t + 1).await;
        assert!(limits.take_sms(to, t + 4, 3, false).await.granted);
        // Missed calls: one alert per burst whichever server sees the calls.
        let c = Some(n("+15551230001"));
        assert_eq!(
            limits.missed_call(to, c, "ms1", t, 60_000).await,
            Missed::Mine
        );
        assert_eq!(
            limits.missed_call(to, c, "ms2", t + 5, 60_000).await,
            Missed::Theirs
        );
        assert_eq!(
            limits.missed_call(to, c, "ms1", t + 9, 60_000).await,
            Missed::Mine
        );
        assert_eq!(
            limits.missed_call(to, c, "ms2", t + 70_000, 60_000).await,
            Missed::Mine,
            "a quiet minute later: a new burst"
        );
    }

    #[tokio::test]
    async fn after_a_restart_the_hour_is_what_the_stores_sent() {
        let (a, dir_a) = temp_store("ms1");
        let (b, dir_b) = temp_store("ms2");
        let to = n("+15551230002");
        let t = now_ms();
        // One SMS accepted by each server's store within the hour.
        for (s, at) in [(&a, t - 1000), (&b, t - 500)] {
            let m = NewMessage {
                recipient: to,
                caller: None,
                received_at_ms: at,
                samples: &[0i16; 800],
                sample_rate: 8000,
                encoding: boxless_store::Encoding::Pcm16,
            };
            s.deposit(&m, |_| "msg".into()).unwrap();
            let j = s.due(u64::MAX / 2, 10, boxless_store::Lane::Sms).unwrap();
            s.accepted(&j[0], 1, None, at).unwrap();
        }
        let limits = Limits::local();
        limits.add(a.clone());
        limits.add(b.clone());
        let taken = limits.take_sms(to, t, 3, false).await;
        assert!(taken.granted);
        assert_eq!(taken.before.sent, 2, "both stores' SMS count");
        assert_eq!(taken.before.oldest_ms, Some(t - 1000));
        assert!(!limits.take_sms(to, t + 1, 3, false).await.granted);
        for d in [dir_a, dir_b] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
