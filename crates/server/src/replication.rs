//! The server's side of `[store] replication = "jetstream"` (docs/configuration.md): a
//! deposit's record and audio reach the JetStream cluster before the caller's BYE gets its
//! `200`; what could not (JetStream away or slow) is sent by the catch-up loop, oldest
//! first, with every state change and removal (`boxless_store::replica`: the store knows
//! what JetStream is behind on, so nothing depends on this process remembering).
//!
//! Recordings in progress are shipped too, every [`SHIP_EVERY`]: the bytes each file
//! gained since the last tick, so a server lost mid-call leaves the words said until a
//! couple of seconds before to the server that takes it over (`crate::takeover`).
//!
//! While a write has failed and none has succeeded since, a deposit does not wait for
//! JetStream (the caller would wait the whole deadline on every call): it is kept locally
//! and the loop sends it when JetStream is back.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use boxless_control::replica::{Audio, Replica, ReplicaError};
use boxless_store::Store;
use boxless_store::replica::{AudioPart, Behind, MessageRecord};
use tokio::sync::Notify;

/// Rows the catch-up loop takes from the store at a time.
const BATCH: usize = 64;

/// How often recordings in progress are shipped: what a server lost mid-call loses at most
/// (plus the call's own write interval, about a second).
pub const SHIP_EVERY: Duration = Duration::from_secs(2);

/// The most bytes of one recording shipped per tick (a whole minute of 16-bit 16 kHz).
const SHIP_MAX: usize = 2 << 20;

/// The most bytes shipped per tick in all (the rest goes next tick).
const SHIP_TICK_MAX: usize = 64 << 20;

/// The turns of one [`SHIP_EVERY`] the recordings are spread over ([`ship_slot`]).
const SHIP_SLOTS: u64 = 32;

/// The turn of recording `id` (ids end in random hex: FNV-1a spreads them evenly).
fn ship_slot(id: &str) -> u64 {
    boxless_core::util::fnv1a(boxless_core::util::FNV_BASIS, id.bytes()) % SHIP_SLOTS
}

/// What a write sends of a message's audio.
#[derive(Debug)]
enum Kind {
    /// Its first write (the deposit), with what the store's writer read of its audio
    /// right after the commit ([`Store::audio_from`]; None: it has none).
    First(Option<AudioPart>),
    /// JetStream never acknowledged it: written again, whatever was left purged first.
    Again,
    /// JetStream has it: the record only.
    Had,
}

/// JetStream as this server writes to it.
#[derive(Debug)]
pub struct Replication {
    server: String,
    store: Arc<Store>,
    replica: OnceLock<Replica>,
    /// The last write failed (or JetStream was never reached).
    down: AtomicBool,
    wake: Notify,
    /// Bounds each JetStream call, and a deposit's whole write.
    deadline: Duration,
    /// Rows behind at the loop's last count (what the heartbeat reports).
    last_behind: AtomicU64,
    /// Bytes of each recording in progress JetStream has (at most one entry per call).
    shipped: std::sync::Mutex<HashMap<String, u64>>,
    /// Deposits whose first write is pending or on the wire, from before their row's
    /// commit (at most one entry per call ending), and whether the catch-up loop passed
    /// over one meanwhile: it leaves them alone (a second writer would purge what the
    /// first is writing), and is woken when they land.
    flight: std::sync::Mutex<HashMap<String, bool>>,
}

/// A deposit's first write to JetStream in progress ([`Replication::depositing`]); its
/// drop lets the catch-up loop take the message.
pub struct Depositing {
    replication: Arc<Replication>,
    id: String,
}

impl Drop for Depositing {
    fn drop(&mut self) {
        self.replication.landed(&self.id);
    }
}

impl Replication {
    /// Reaches JetStream on `client` in the background (retrying until it answers) and
    /// keeps it caught up with `store` from then on. `deadline` bounds each JetStream call.
    pub fn start(
        client: boxless_control::Client,
        server: &str,
        store: Arc<Store>,
        replicas: usize,
        deadline: Duration,
    ) -> Arc<Replication> {
        let r = Arc::new(Replication {
            server: server.to_string(),
            store,
            replica: OnceLock::new(),
            down: AtomicBool::new(true),
            wake: Notify::new(),
            deadline,
            last_behind: AtomicU64::new(0),
            shipped: Default::default(),
            flight: Default::default(),
        });
        tokio::spawn(r.clone().run(client, replicas));
        r
    }

    /// The stream and the bucket, once JetStream has been reached.
    pub fn replica(&self) -> Option<&Replica> {
        self.replica.get()
    }

    /// Rows JetStream was behind on at the last count (the status's `unreplicated`).
    pub fn last_behind(&self) -> u64 {
        self.last_behind.load(Ordering::Relaxed)
    }

    /// Rows JetStream is behind on now.
    pub async fn behind(&self) -> u64 {
        self.store
            .read(|s| s.behind_count())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0)
    }

    /// A recording is about to become message `id`: its first write to JetStream is the
    /// deposit's, from before its row is committed until the returned guard is dropped.
    /// The catch-up loop reads the rows JetStream lacks; had it found this one before the
    /// deposit marked it, it would have sent it a second time as a retry, purging what the
    /// recording had shipped and sending the whole file again (bench/RESULTS.md,
    /// "Replication: what it costs").
    pub fn depositing(self: &Arc<Self>, id: &str) -> Depositing {
        self.lock_flight().insert(id.to_string(), false);
        Depositing {
            replication: self.clone(),
            id: id.to_string(),
        }
    }

    /// Bytes of recording `id` JetStream has: what its deposit need not send again
    /// ([`Store::audio_from`], on the store's writer right after the commit).
    pub fn shipped(&self, id: &str) -> u64 {
        self.lock_shipped().get(id).copied().unwrap_or(0)
    }

    /// A message was just stored (`deposit`: its record as committed and its audio as
    /// [`Store::audio_from`] read it with [`Replication::shipped`]; None when they could
    /// not be read back; `flight` from [`Replication::depositing`]): returns once
    /// JetStream has it, or at once while JetStream is down (then, or on failure, the loop
    /// sends it later). Its mark as replicated is written after the return: the caller's
    /// `200` does not wait for the store's writer, and a mark lost in a crash only sends
    /// the message again.
    pub async fn deposited(
        self: &Arc<Self>,
        flight: Depositing,
        deposit: Option<(MessageRecord, Option<AudioPart>)>,
    ) {
        match (self.replica.get(), deposit) {
            (Some(replica), Some((record, audio))) if !self.down.load(Ordering::Relaxed) => {
                let (id, revision) = (record.id.clone(), record.revision);
                // Shipping stops; any bytes shipped since the read overlap what goes now,
                // and the reader skips overlaps.
                self.lock_shipped().remove(&id);
                // One bound for the whole write: the caller is waiting for its 200.
                let put = self.put(replica, record, Kind::First(audio));
                let put = tokio::time::timeout(self.deadline, put)
                    .await
                    .unwrap_or(Err(ReplicaError::Timeout(self.deadline)));
                match put {
                    Ok(()) => {
                        let me = self.clone();
                        tokio::spawn(async move {
                            let mark = me.store.write(move |s| s.replicated(&id, revision));
                            let _ = mark.await;
                            drop(flight);
                        });
                    }
                    Err(e) => self.failed(&e),
                }
            }
            _ => self.wake.notify_one(),
        }
    }

    fn lock_flight(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deposit `id`'s first write is over (acknowledged and marked, failed, or never
    /// begun): the catch-up loop, if it passed it meanwhile, is woken.
    fn landed(&self, id: &str) {
        if self.lock_flight().remove(id) == Some(true) {
            self.wake.notify_one();
        }
    }

    /// Whether message `id`'s first write is on the wire (the catch-up loop then leaves it
    /// and is woken when it lands).
    fn in_flight(&self, id: &str) -> bool {
        match self.lock_flight().get_mut(id) {
            Some(passed) => {
                *passed = true;
                true
            }
            None => false,
        }
    }

    /// A message changed (heard, saved, deleted) or was removed: the loop sends it.
    pub fn changed(&self) {
        self.wake.notify_one();
    }

    fn failed(&self, e: &ReplicaError) {
        metrics::counter!("boxless_replication_failures_total", "server" => self.server.clone())
            .increment(1);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(server = %self.server, error = %e, "JetStream write failed: messages are kept here and sent when it answers");
        }
        self.wake.notify_one();
    }

    /// Writes `record` (with its audio unless JetStream has it) and marks it replicated.
    async fn send(
        &self,
        replica: &Replica,
        record: MessageRecord,
        kind: Kind,
    ) -> Result<(), ReplicaError> {
        let (id, revision) = (record.id.clone(), record.revision);
        self.put(replica, record, kind).await?;
        let _ = self.store.write(move |s| s.replicated(&id, revision)).await;
        Ok(())
    }

    /// Writes `record`, with its audio unless JetStream has it.
    async fn put(
        &self,
        replica: &Replica,
        record: MessageRecord,
        kind: Kind,
    ) -> Result<(), ReplicaError> {
        let wav: Vec<u8>;
        let audio = match &kind {
            Kind::Had => Audio::Had,
            Kind::First(Some(AudioPart::Whole(w))) => Audio::First(w),
            // Most of it went while it was recorded: the rest only.
            Kind::First(Some(AudioPart::Rest(rest))) => Audio::Shipped(rest),
            // The audio is gone here too (deleted before it was ever sent).
            Kind::First(None) => Audio::Had,
            Kind::Again => {
                let id = record.id.clone();
                let read = self.store.read(move |s| s.audio_file(&id, true)).await;
                match read.ok().and_then(Result::ok).flatten() {
                    Some(w) => {
                        wav = w;
                        Audio::Again(&wav)
                    }
                    None => Audio::Had,
                }
            }
        };
        replica.put(&record, audio).await?;
        self.down.store(false, Ordering::Relaxed);
        Ok(())
    }

    async fn run(self: Arc<Self>, client: boxless_control::Client, replicas: usize) {
        let mut wait = Duration::from_millis(500);
        let replica = loop {
            match Replica::open(&client, replicas, self.deadline).await {
                Ok(r) => break self.replica.get_or_init(|| r),
                Err(e) => {
                    tracing::warn!(server = %self.server, error = %e, "JetStream not reached (is it on, with a majority of its nodes?); retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        };
        tracing::info!(server = %self.server, replicas, "replicating messages to JetStream");
        tokio::spawn(self.clone().ship_loop(replica.clone()));
        loop {
            let ok = self.catch_up(replica).await;
            if ok {
                // Caught up: deposits wait for JetStream again.
                self.down.store(false, Ordering::Relaxed);
            }
            let behind = self.behind().await;
            self.last_behind.store(behind, Ordering::Relaxed);
            metrics::gauge!("boxless_replication_behind", "server" => self.server.clone())
                .set(behind as f64);
            // Caught up: sleep until a call changes something, or 5 s (the API's and the
            // retention's changes, rows a crash left behind: one indexed query). After a
            // failure: back off.
            let pause = if ok { Duration::from_secs(5) } else { wait };
            wait = if ok {
                Duration::from_millis(500)
            } else {
                (wait * 2).min(Duration::from_secs(10))
            };
            let _ = tokio::time::timeout(pause, self.wake.notified()).await;
        }
    }

    fn lock_shipped(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.shipped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ships what each recording in progress gained since its last turn, every
    /// [`SHIP_EVERY`]; forgets those that ended. Holds one offset per recording in progress
    /// (at most the calls).
    ///
    /// The recordings take turns in [`SHIP_SLOTS`] slots (by id) spread over the period,
    /// not all at one tick: at 1,000 calls one tick was 16 MB, which the three NATS nodes
    /// took on the same two cores as the calls, and every BYE that came in then waited for
    /// its `200` about 100 ms longer than the others (bench/RESULTS.md, "Replication: what
    /// it costs"). The recordings are listed once a period, at slot 0.
    async fn ship_loop(self: Arc<Self>, replica: Replica) {
        let mut tick = tokio::time::interval(SHIP_EVERY / SHIP_SLOTS as u32);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listed: Vec<String> = Vec::new();
        for slot in (0..SHIP_SLOTS).cycle() {
            tick.tick().await;
            if slot == 0 {
                match self.store.read(|s| s.recordings()).await {
                    Ok(Ok(now)) => listed = self.forget_ended(&replica, now).await,
                    _ => continue,
                }
            }
            let wanted: Vec<(String, u64)> = {
                let shipped = self.lock_shipped();
                listed
                    .iter()
                    .filter(|id| ship_slot(id) == slot)
                    .map(|id| (id.clone(), shipped.get(id).copied().unwrap_or(0)))
                    .collect()
            };
            if !wanted.is_empty() {
                self.ship_some(&replica, wanted).await;
            }
        }
    }

    /// Forgets the recordings that ended since the last listing (`now`: those on disk,
    /// with their lengths); returns the ids of those that grew since they were shipped.
    async fn forget_ended(&self, replica: &Replica, now: Vec<(String, u64)>) -> Vec<String> {
        let live: HashSet<&str> = now.iter().map(|(id, _)| id.as_str()).collect();
        let ended: Vec<String> = self
            .lock_shipped()
            .keys()
            .filter(|id| !live.contains(id.as_str()))
            .cloned()
            .collect();
        for id in ended {
            // A message now (its deposit's write missed, or raced this tick): its
            // bytes are its audio's start. Else too short to keep: forgotten.
            let rid = id.clone();
            let message = self.store.read(move |s| s.get(&rid)).await;
            let forget = matches!(message, Ok(Ok(None)));
            if !forget || replica.drop_recording(&self.server, &id).await.is_ok() {
                self.lock_shipped().remove(&id);
            }
        }
        let shipped = self.lock_shipped();
        now.into_iter()
            .filter(|(id, len)| *len > shipped.get(id).copied().unwrap_or(0))
            .map(|(id, _)| id)
            .collect()
    }

    /// Ships the new bytes of the recordings `wanted` (id, shipped so far) in one visit
    /// to the store and one round trip.
    async fn ship_some(&self, replica: &Replica, wanted: Vec<(String, u64)>) {
        let Ok(Ok(items)) = self
            .store
            .read(move |s| {
                let mut items = Vec::with_capacity(wanted.len());
                let mut total = 0;
                for (id, from) in wanted {
                    if total >= SHIP_TICK_MAX {
                        break;
                    }
                    // To the end of the file as it is now, grown since the listing.
                    if let Some(b) = s.recording_bytes(&id, from, SHIP_MAX)?
                        && !b.is_empty()
                    {
                        total += b.len();
                        items.push((id, from, b));
                    }
                }
                Ok::<_, boxless_store::Error>(items)
            })
            .await
        else {
            return;
        };
        let mut parts: Vec<(&str, u64, &[u8])> = Vec::with_capacity(items.len());
        for (id, from, b) in &items {
            parts.push((id, *from, b));
        }
        match replica.ship_many(&self.server, parts).await {
            Ok(()) => {
                let mut bytes = 0;
                let mut shipped = self.lock_shipped();
                for (id, from, b) in items {
                    bytes += b.len() as u64;
                    shipped.insert(id, from + b.len() as u64);
                }
                drop(shipped);
                metrics::counter!("boxless_recording_bytes_shipped_total", "server" => self.server.clone())
                    .increment(bytes);
            }
            // Shipped again from the same offsets next turn (the reader skips overlaps).
            Err(e) => self.failed(&e),
        }
    }

    /// Sends what JetStream is behind on; false when a write failed.
    async fn catch_up(&self, replica: &Replica) -> bool {
        loop {
            let Ok(Ok(batch)) = self.store.read(|s| s.behind(BATCH)).await else {
                return false;
            };
            if batch.is_empty() {
                return true;
            }
            let mut left = 0;
            let rows = batch.len();
            for b in batch {
                let done = match b {
                    // Its deposit is writing it: woken when that lands.
                    Behind::Record { record, .. } if self.in_flight(&record.id) => {
                        left += 1;
                        Ok(())
                    }
                    // JetStream has its audio: the record again (a put of the same
                    // record, should its deposit have landed meanwhile, changes nothing).
                    Behind::Record {
                        record,
                        had_audio: true,
                    } => self.send(replica, *record, Kind::Had).await,
                    Behind::Record { record, .. } => {
                        // Its deposit may have landed since the batch was read (a flight
                        // ends once its mark is written): asked again, or it would go
                        // twice, the second time as a retry that purges the first. The
                        // row may be behind still, by a state change made meanwhile (it
                        // was notified): then its audio is there and the record goes.
                        let (id, revision) = (record.id.clone(), record.revision);
                        let acked = self.store.read(move |s| s.replicated_revision(&id));
                        match acked.await {
                            Ok(Ok(Some(r))) if r >= revision => Ok(()),
                            Ok(Ok(None)) => Ok(()),
                            Ok(Ok(Some(r))) if r > 0 => {
                                self.send(replica, *record, Kind::Had).await
                            }
                            // Never acknowledged: an earlier try may have left part of it.
                            _ => self.send(replica, *record, Kind::Again).await,
                        }
                    }
                    // A removed message taken over from another server is forgotten
                    // under that server's key.
                    Behind::Gone(id) => match replica
                        .forget(boxless_store::server_of(&id).unwrap_or(&self.server), &id)
                        .await
                    {
                        Ok(()) => {
                            let _ = self.store.write(move |s| s.forgotten(&id)).await;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                };
                if let Err(e) = done {
                    self.failed(&e);
                    return false;
                }
            }
            if left == rows {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_deposit_is_left_to_itself_from_before_its_commit_until_it_lands() {
        let dir = std::env::temp_dir().join(format!("boxless-flight-{}", std::process::id()));
        let pool = boxless_core::LinkPool::parse(&["+15550001000"]).unwrap();
        let r = Arc::new(Replication {
            server: "ms1".into(),
            store: Arc::new(Store::open(&dir, "ms1", pool).unwrap()),
            replica: OnceLock::new(),
            down: AtomicBool::new(true),
            wake: Notify::new(),
            deadline: Duration::from_secs(1),
            last_behind: AtomicU64::new(0),
            shipped: Default::default(),
            flight: Default::default(),
        });
        let flight = r.depositing("ms1-a1");
        // The catch-up loop reading the committed row finds it the deposit's.
        assert!(r.in_flight("ms1-a1"));
        assert!(!r.in_flight("ms1-a2"));
        let woken = r.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        // JetStream down: the deposit leaves the message to the loop, and wakes it.
        r.deposited(flight, None).await;
        assert!(!r.in_flight("ms1-a1"));
        tokio::time::timeout(Duration::from_secs(1), woken)
            .await
            .expect("the loop is woken for a message it passed over");
        // A deposit that never reached its commit (the store failed) leaves nothing.
        drop(r.depositing("ms1-a3"));
        assert!(r.lock_flight().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn recordings_take_turns_spread_evenly_and_each_keeps_its_own() {
        let mut rng = boxless_core::Rng::from_entropy();
        let mut per_slot = [0u32; SHIP_SLOTS as usize];
        for _ in 0..8000 {
            let id = format!("ms1-{:016x}", rng.next_u64());
            let slot = ship_slot(&id);
            assert_eq!(ship_slot(&id), slot, "the same turn every period");
            per_slot[slot as usize] += 1;
        }
        // 250 a slot expected; a burst of more than 1.3 times that would not be spread.
        assert!(
            per_slot.iter().all(|&n| (170..330).contains(&n)),
            "{per_slot:?}"
        );
    }
}
