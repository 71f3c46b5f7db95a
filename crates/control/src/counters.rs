//! Counters every server shares, so the limits of docs/configuration.md hold for the
//! cluster rather than for each server: the SMS a number got in the rolling hour
//! (`sms.max_per_recipient_per_hour`) and the missed-call alert a caller's burst already
//! has (`sms.missed_call_merge_minutes`).
//!
//! The arithmetic is sans-IO ([`SentTimes`], [`MissedClaim`]): one process's servers keep
//! it in memory, servers over NATS in the JetStream key-value bucket `boxless_counters`
//! ([`Counters`]), each change a compare-and-set on the key's revision, so two servers
//! taking the last SMS of an hour at once cannot both have it. Keys: `sms.<digits>` (the
//! send times, decimal ms, comma-separated) and `missed.<recipient>.<caller or 0>`
//! (`<server> <ms>`). Entries live at most an hour and a minute (the longest window), so
//! the bucket holds only numbers notified in the last hour.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use boxless_core::PhoneNumber;
use boxless_store::Window;
use boxless_store::outbox::HOUR_MS;
use bytes::Bytes;

use crate::replica::{ReplicaError, within};

/// The bucket.
pub const COUNTERS_BUCKET: &str = "boxless_counters";

/// The most send times kept for one number (the configuration bounds the hourly limit
/// below it; a longer value read from the bucket keeps its newest).
pub const MAX_TIMES: usize = 1000;

/// The send times of one number's SMS in the rolling hour, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentTimes(VecDeque<u64>);

/// What [`SentTimes::take`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// True: the SMS may go, and its time is counted.
    pub granted: bool,
    /// The hour as it was before the take.
    pub before: Window,
}

impl SentTimes {
    /// Times read from the bucket or the stores; unparsable parts are skipped, the order
    /// restored and the length bounded.
    pub fn parse(bytes: &[u8]) -> SentTimes {
        let mut v: Vec<u64> = bytes
            .split(|b| *b == b',')
            .filter_map(|p| std::str::from_utf8(p).ok()?.parse().ok())
            .collect();
        v.sort_unstable();
        SentTimes::from_sorted(v)
    }

    /// Times already in order (oldest first).
    pub fn from_sorted(mut v: Vec<u64>) -> SentTimes {
        if v.len() > MAX_TIMES {
            v.drain(..v.len() - MAX_TIMES);
        }
        SentTimes(v.into())
    }

    /// The value written to the bucket.
    pub fn encode(&self) -> Bytes {
        let mut s = String::with_capacity(self.0.len() * 14);
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&t.to_string());
        }
        Bytes::from(s)
    }

    /// Forgets the times an hour or more before `now`.
    pub fn prune(&mut self, now: u64) {
        let since = now.saturating_sub(HOUR_MS);
        while self.0.front().is_some_and(|t| *t <= since) {
            self.0.pop_front();
        }
    }

    /// True when no time is kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The rolling hour before `now`.
    pub fn window(&mut self, now: u64) -> Window {
        self.prune(now);
        Window {
            sent: self.0.len() as u32,
            oldest_ms: self.0.front().copied(),
        }
    }

    /// Counts an SMS at `now` when the hour has fewer than `max`, or always with
    /// `force` (the one answer to a STOP/START).
    pub fn take(&mut self, now: u64, max: u32, force: bool) -> Taken {
        let before = self.window(now);
        let granted = force || before.sent < max;
        if granted {
            if self.0.len() >= MAX_TIMES {
                self.0.pop_front();
            }
            // Kept in order even if clocks of two servers disagree a little.
            let at = self.0.partition_point(|t| *t <= now);
            self.0.insert(at, now);
        }
        Taken { granted, before }
    }

    /// Gives back the SMS counted at `at` (it did not go). False when it is not there.
    pub fn give_back(&mut self, at: u64) -> bool {
        match self.0.iter().position(|t| *t == at) {
            Some(i) => {
                self.0.remove(i);
                true
            }
            None => false,
        }
    }
}

/// Wrong access codes on one link number, from every caller and every server: a window
/// opens at the first wrong code and lasts `window_ms`; `max` within it lock the link
/// for `window_ms` (the store's `lockouts` table, cluster-wide).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockWindow {
    /// When the window opened (ms).
    pub start_ms: u64,
    /// Wrong codes in it.
    pub wrong: u32,
    /// Locked until (ms; 0: not locked).
    pub until_ms: u64,
}

impl LockWindow {
    /// Reads `<start> <wrong> <until>`.
    pub fn parse(bytes: &[u8]) -> Option<LockWindow> {
        let s = std::str::from_utf8(bytes).ok()?;
        let mut it = s.split(' ');
        let w = LockWindow {
            start_ms: it.next()?.parse().ok()?,
            wrong: it.next()?.parse().ok()?,
            until_ms: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(w)
    }

    /// The value written to the bucket.
    pub fn encode(&self) -> Bytes {
        Bytes::from(format!(
            "{} {} {}",
            self.start_ms, self.wrong, self.until_ms
        ))
    }

    /// True while locked at `now`.
    pub fn locked(&self, now: u64) -> bool {
        self.until_ms > now
    }

    /// Counts a wrong code at `now`; true when the link is locked after it.
    pub fn wrong_code(&mut self, now: u64, max: u32, window_ms: u64) -> bool {
        let running = self.locked(now) || now < self.start_ms.saturating_add(window_ms);
        if !running {
            *self = LockWindow {
                start_ms: now,
                ..LockWindow::default()
            };
        }
        self.wrong = self.wrong.saturating_add(1);
        if self.wrong >= max && self.until_ms <= now {
            self.until_ms = now.saturating_add(window_ms);
        }
        self.locked(now)
    }
}

/// Who holds the missed-call alert of one caller to one recipient, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedClaim {
    /// The server that queued the alert.
    pub server: String,
    /// The burst's latest call (ms); the window slides with each call.
    pub at_ms: u64,
}

/// What a server does with a missed call, given the cluster's claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// This server queues (or updates) the alert.
    Mine,
    /// Another server's alert covers this call: merge it, send nothing.
    Theirs,
}

impl MissedClaim {
    /// Reads `<server> <ms>`.
    pub fn parse(bytes: &[u8]) -> Option<MissedClaim> {
        let s = std::str::from_utf8(bytes).ok()?;
        let (server, at) = s.split_once(' ')?;
        Some(MissedClaim {
            server: server.to_string(),
            at_ms: at.parse().ok()?,
        })
    }

    /// The value written to the bucket.
    pub fn encode(&self) -> Bytes {
        Bytes::from(format!("{} {}", self.server, self.at_ms))
    }

    /// Decides for `server`'s missed call at `now`, with the claim `held` (if any) and a
    /// merge window of `merge_ms`; returns the decision and the claim to write.
    pub fn decide(
        held: Option<MissedClaim>,
        server: &str,
        now: u64,
        merge_ms: u64,
    ) -> (Missed, MissedClaim) {
        match held {
            Some(c) if c.at_ms.saturating_add(merge_ms) >= now && c.server != server => (
                Missed::Theirs,
                MissedClaim {
                    at_ms: now.max(c.at_ms),
                    ..c
                },
            ),
            _ => (
                Missed::Mine,
                MissedClaim {
                    server: server.to_string(),
                    at_ms: now,
                },
            ),
        }
    }
}

/// How many writes a compare-and-set may lose to other servers before it gives up: far
/// more than servers counting one key at once lose in practice (each round one wins).
const CAS_TRIES: u32 = 32;

/// Waits a random 0-2 ms after the first lost write, up to 0-16 ms after more; false
/// (without waiting) when that would take longer than `left`.
async fn backoff(lost: u32, left: Duration) -> bool {
    use std::hash::BuildHasher;
    // A fresh hasher's keys are random per process and step per call: jitter enough.
    let most = 2u64 << lost.min(3);
    let micros = std::collections::hash_map::RandomState::new().hash_one(lost) % (most * 1000);
    let wait = Duration::from_micros(micros);
    if wait >= left {
        return false;
    }
    tokio::time::sleep(wait).await;
    true
}

/// The counters' bucket, reached through one NATS connection.
#[derive(Clone)]
pub struct Counters {
    kv: kv::Store,
    deadline: Duration,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counters")
    }
}

fn sms_key(n: PhoneNumber) -> String {
    format!("sms.{}", n.as_u64())
}

fn lock_key(link: PhoneNumber) -> String {
    format!("lockout.{}", link.as_u64())
}

fn missed_key(recipient: PhoneNumber, caller: Option<PhoneNumber>) -> String {
    format!(
        "missed.{}.{}",
        recipient.as_u64(),
        caller.map_or(0, |c| c.as_u64())
    )
}

impl Counters {
    /// Finds (making it when missing) the bucket with `replicas` copies, keeping each
    /// count at least an hour and `window` (the longest window counted in it: the
    /// lockout's); each later call waits at most `deadline`.
    pub async fn open(
        client: &async_nats::Client,
        replicas: usize,
        window: Duration,
        deadline: Duration,
    ) -> Result<Counters, ReplicaError> {
        let js = jetstream::new(client.clone());
        let max_age = Duration::from_millis(HOUR_MS).max(window) + Duration::from_secs(60);
        let config = kv::Config {
            bucket: COUNTERS_BUCKET.into(),
            description: "Boxless limits counted across servers".into(),
            history: 1,
            max_age,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas.max(1),
            max_value_size: 16 * 1024,
            ..Default::default()
        };
        let mut kv = crate::replica::bucket(&js, config, deadline).await?;
        // Made by a server counting a shorter window: a lock would expire before its end.
        // Only ever raised, so servers configured apart agree on the longest.
        let info = within(deadline, kv.stream.info()).await?;
        if info.config.max_age < max_age {
            let mut config = info.config.clone();
            config.max_age = max_age;
            within(deadline, js.update_stream(config)).await?;
            tracing::info!(
                ?max_age,
                "cluster counters kept longer, for the lockout window"
            );
        }
        Ok(Counters { kv, deadline })
    }

    /// Applies `change` to the value at `key` with compare-and-set, again when another
    /// server wrote in between; `change` returns the value to write (None: write nothing)
    /// and what to answer.
    ///
    /// The bucket lets any of its copies answer a read (the client makes key-value
    /// streams with direct get), so right after a lost write a read may still show the
    /// revision that lost: it is read again rather than written to lose again. Lost
    /// writes back off for a random few milliseconds, so servers counting one key at once
    /// do not collide in step; the whole stays within the deadline.
    async fn cas<T>(
        &self,
        key: &str,
        mut change: impl FnMut(Option<&[u8]>) -> (Option<Bytes>, T),
    ) -> Result<T, ReplicaError> {
        let until = tokio::time::Instant::now() + self.deadline;
        let left = || until.saturating_duration_since(tokio::time::Instant::now());
        let timeout = |_| ReplicaError::Timeout(self.deadline);
        let mut lost = 0;
        // The revision the last lost write was made against (0: the key was absent).
        let mut behind: Option<u64> = None;
        loop {
            let entry = tokio::time::timeout(left(), self.kv.entry(key))
                .await
                .map_err(timeout)?
                .map_err(crate::replica::nats)?;
            let revision = entry.as_ref().map_or(0, |e| e.revision);
            if behind == Some(revision) {
                if !backoff(lost, left()).await {
                    return Err(ReplicaError::Timeout(self.deadline));
                }
                behind = None;
                continue;
            }
            // A deleted or purged key reads as no value.
            let live = entry.as_ref().filter(|e| e.operation == kv::Operation::Put);
            let (value, answer) = change(live.map(|e| &e.value[..]));
            let Some(value) = value else {
                return Ok(answer);
            };
            let written = match &entry {
                Some(e) => tokio::time::timeout(left(), self.kv.update(key, value, e.revision))
                    .await
                    .map_err(timeout)?
                    .map_err(|e| (crate::replica::lost_race(&e), e.to_string())),
                None => tokio::time::timeout(left(), self.kv.create(key, value))
                    .await
                    .map_err(timeout)?
                    .map_err(|e| (crate::replica::lost_race(&e), e.to_string())),
            };
            match written {
                Ok(_) => return Ok(answer),
                // Another server's write came first: read again.
                Err((true, _)) => {}
                // Anything else (the stream between leaders, say) is the caller's to
                // retry, not this loop's.
                Err((false, why)) => return Err(ReplicaError::Nats(format!("{key}: {why}"))),
            }
            lost += 1;
            if lost >= CAS_TRIES {
                return Err(ReplicaError::Nats(format!(
                    "{key}: {CAS_TRIES} compare-and-set tries lost to other servers"
                )));
            }
            behind = Some(revision);
            if !backoff(lost, left()).await {
                return Err(ReplicaError::Timeout(self.deadline));
            }
        }
    }

    /// Counts an SMS to `n` at `now` if the cluster's hour has fewer than `max` (always
    /// with `force`).
    pub async fn take_sms(
        &self,
        n: PhoneNumber,
        now: u64,
        max: u32,
        force: bool,
    ) -> Result<Taken, ReplicaError> {
        self.cas(&sms_key(n), |v| {
            let mut times = v.map(SentTimes::parse).unwrap_or_default();
            let taken = times.take(now, max, force);
            (taken.granted.then(|| times.encode()), taken)
        })
        .await
    }

    /// Gives back the SMS to `n` counted at `at` (it did not go).
    pub async fn give_back_sms(&self, n: PhoneNumber, at: u64) -> Result<(), ReplicaError> {
        self.cas(&sms_key(n), |v| {
            let mut times = v.map(SentTimes::parse).unwrap_or_default();
            (times.give_back(at).then(|| times.encode()), ())
        })
        .await
    }

    /// Counts a wrong access code on `link` at `now` for the whole cluster; true when the
    /// link is locked after it.
    pub async fn wrong_code(
        &self,
        link: PhoneNumber,
        now: u64,
        max: u32,
        window_ms: u64,
    ) -> Result<bool, ReplicaError> {
        self.cas(&lock_key(link), |v| {
            let mut w = v.and_then(LockWindow::parse).unwrap_or_default();
            let locked = w.wrong_code(now, max, window_ms);
            (Some(w.encode()), locked)
        })
        .await
    }

    /// True while `link` is locked at `now` by the cluster's count.
    pub async fn link_locked(&self, link: PhoneNumber, now: u64) -> Result<bool, ReplicaError> {
        let v = within(self.deadline, self.kv.get(lock_key(link))).await?;
        Ok(v.and_then(|v| LockWindow::parse(&v))
            .is_some_and(|w| w.locked(now)))
    }

    /// Decides who alerts `recipient` of `caller`'s missed call at `now` (see
    /// [`MissedClaim::decide`]), and writes the claim.
    pub async fn claim_missed(
        &self,
        recipient: PhoneNumber,
        caller: Option<PhoneNumber>,
        server: &str,
        now: u64,
        merge_ms: u64,
    ) -> Result<Missed, ReplicaError> {
        self.cas(&missed_key(recipient, caller), |v| {
            let held = v.and_then(MissedClaim::parse);
            let (missed, claim) = MissedClaim::decide(held, server, now, merge_ms);
            (Some(claim.encode()), missed)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_locks_at_the_limit_within_its_window_and_opens_after_it() {
        let (min, t) = (60_000, 1_000_000);
        let mut w = LockWindow::default();
        assert!(!w.wrong_code(t, 3, 15 * min));
        assert!(!w.wrong_code(t + 1, 3, 15 * min));
        assert!(w.wrong_code(t + 2, 3, 15 * min), "the third locks");
        let back = LockWindow::parse(&w.encode()).unwrap();
        assert_eq!(back, w);
        assert!(back.locked(t + 2 + 15 * min - 1));
        assert!(!back.locked(t + 2 + 15 * min));
        // A window over without a lock starts again.
        let mut w = LockWindow::default();
        assert!(!w.wrong_code(t, 2, min));
        assert!(!w.wrong_code(t + min, 2, min), "a new window");
        assert!(w.wrong_code(t + min + 1, 2, min));
        assert_eq!(LockWindow::parse(b"1 2"), None);
        assert_eq!(LockWindow::parse(b"1 2 3 4"), None);
    }

    #[test]
    fn the_hour_counts_rolls_and_gives_back() {
        let mut t = SentTimes::default();
        let h = HOUR_MS;
        assert!(t.take(h, 2, false).granted);
        assert!(t.take(h + 10, 2, false).granted);
        let full = t.take(h + 20, 2, false);
        assert!(!full.granted);
        assert_eq!(
            full.before,
            Window {
                sent: 2,
                oldest_ms: Some(h)
            }
        );
        // The one answer to a STOP goes anyway, and counts.
        assert!(t.take(h + 30, 2, true).granted);
        assert_eq!(t.window(h + 30).sent, 3);
        // An hour after the first, it has left the window.
        assert_eq!(t.window(2 * h).sent, 2);
        assert!(t.give_back(h + 30));
        assert!(!t.give_back(h + 30));
        assert!(t.take(2 * h, 2, false).granted);
    }

    #[test]
    fn times_travel_as_text_and_hostile_values_stay_bounded() {
        let mut t = SentTimes::default();
        for i in 0..5 {
            t.take(HOUR_MS + i, 10, false);
        }
        assert_eq!(SentTimes::parse(&t.encode()), t);
        // Out of order, garbage between, too many: sorted, skipped, the newest kept.
        let mut raw = b"9,x,,3,\xff,7".to_vec();
        assert_eq!(SentTimes::parse(&raw).encode(), Bytes::from("3,7,9"));
        raw = (0..(MAX_TIMES as u64 + 50))
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
            .into_bytes();
        let many = SentTimes::parse(&raw);
        assert_eq!(many.0.len(), MAX_TIMES);
        assert_eq!(many.0.front(), Some(&50));
        // A late clock still lands in order.
        let mut t = SentTimes::parse(b"100,300");
        t.take(200, 10, false);
        assert_eq!(t.encode(), Bytes::from("100,200,300"));
    }

    #[test]
    fn a_missed_call_burst_has_one_alert_across_servers() {
        let w = 10 * 60_000;
        let (m, c) = MissedClaim::decide(None, "ms1", 1_000, w);
        assert_eq!(m, Missed::Mine);
        assert_eq!(MissedClaim::parse(&c.encode()), Some(c.clone()));
        // The same server again: its own alert (its store merges the count).
        assert_eq!(
            MissedClaim::decide(Some(c.clone()), "ms1", 2_000, w).0,
            Missed::Mine
        );
        // Another server within the window: merged; the window slides, the holder stays.
        let (m, c2) = MissedClaim::decide(Some(c.clone()), "ms2", 5_000, w);
        assert_eq!(
            (m, c2.server.as_str(), c2.at_ms),
            (Missed::Theirs, "ms1", 5_000)
        );
        // Past the window: a new burst, the other server's.
        let (m, c3) = MissedClaim::decide(Some(c2), "ms2", 5_000 + w + 1, w);
        assert_eq!((m, c3.server.as_str()), (Missed::Mine, "ms2"));
        assert_eq!(MissedClaim::parse(b"no-number"), None);
        assert_eq!(MissedClaim::parse(b"ms1 x"), None);
    }
}
