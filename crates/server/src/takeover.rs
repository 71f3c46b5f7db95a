//! The server's side of takeover (docs/high-availability.md): it listens to every
//! server's status, takes over a server silent for `store.takeover_after_seconds` when
//! it wins that server's lease (`boxless_control::takeover`), keeps its messages here
//! (fetched from JetStream: `Store::adopt`), answers its link numbers and web links, and
//! hands them back when the server returns. When this server is the one that returns,
//! it asks for its numbers back and catches up with what happened meanwhile before it
//! serves them, or sends a notice.
//!
//! One task per server; every JetStream call is bounded by the replication's deadline,
//! and a failed step is tried again at the next tick: nothing here can stop calls.

use std::sync::Arc;
use std::time::Duration;

use boxless_control::replica::{Replica, ReplicaError, Shipped};
use boxless_control::takeover::{Claim, Lease, Leases, Silence, Statuses, claim};
use boxless_core::now_ms;

use crate::replication::Replication;
use crate::server::MessagingServer;

/// How often leases are looked at.
const TICK: Duration = Duration::from_secs(2);

/// How often the records of a server held are listed again (a write of its that reached
/// JetStream after the first listing).
const RESCAN_MS: u64 = 30_000;

/// How long a server that cannot reach JetStream at start waits before it serves its
/// own numbers anyway.
const BLIND_START_MS: u64 = 10_000;

/// Where this server stands about its own numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Own {
    /// At start: maybe another server answers for it; nothing is notified yet.
    Reclaiming,
    /// It answers for itself.
    Serving,
}

/// Takeover for one server.
pub struct Takeover {
    server: Arc<MessagingServer>,
    replication: Arc<Replication>,
    client: boxless_control::Client,
    after_ms: u64,
    replicas: usize,
    deadline: Duration,
}

impl Takeover {
    /// Starts it: the server's slot says it serves nobody and its store holds its
    /// notices until it knows whether another server answered for it meanwhile. Call
    /// before the server's status is first published.
    pub fn start(
        server: Arc<MessagingServer>,
        replication: Arc<Replication>,
        client: boxless_control::Client,
        after: Duration,
        replicas: usize,
        deadline: Duration,
    ) {
        server.board.slots[server.slot].set_serves(false, 0);
        server.store.hold_notices(true);
        let t = Takeover {
            server,
            replication,
            client,
            after_ms: after.as_millis() as u64,
            replicas,
            deadline,
        };
        tokio::spawn(t.run());
    }

    async fn run(self) {
        let started = now_ms();
        let ids: Vec<String> = self
            .server
            .board
            .slots
            .iter()
            .map(|s| s.id.clone())
            .collect();
        let mut silence = Silence::new(ids.iter().map(String::as_str), started, self.after_ms);
        let mut statuses = loop {
            match Statuses::follow(&self.client).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "takeover: cannot follow statuses; retrying");
                    tokio::time::sleep(TICK).await;
                }
            }
        };
        let mut leases = None;
        let mut own = Own::Reclaiming;
        let mut held = Held::default();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                m = statuses.next() => {
                    match m {
                        None => return,
                        Some(Some(id)) => silence.heard(&id, now_ms()),
                        Some(None) => {}
                    }
                    continue;
                }
                _ = tick.tick() => {}
            }
            let now = now_ms();
            let Some(l) = self.leases(&mut leases).await else {
                // JetStream away since the start: past a short wait this server answers
                // for itself rather than not at all (a duplicate notice is possible only
                // if it was also taken over meanwhile).
                if own == Own::Reclaiming
                    && now.saturating_sub(started) >= self.after_ms.min(BLIND_START_MS)
                {
                    tracing::warn!(server = %self.server.id, "JetStream not reached: serving this server's numbers without knowing whether another server answered for them");
                    self.serve_self().await;
                    own = Own::Serving;
                }
                continue;
            };
            if own == Own::Reclaiming {
                match self.reclaim(l, &silence, now).await {
                    Ok(true) => {
                        self.serve_self().await;
                        own = Own::Serving;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(server = %self.server.id, error = %e, "catching up: JetStream failed; trying again");
                    }
                }
                // A server that serves nobody yet takes nobody over.
                continue;
            }
            for id in &ids {
                if let Err(e) = self.look_at(l, id, &silence, now, &mut held).await {
                    tracing::warn!(server = %self.server.id, lost = %id, error = %e, "takeover: JetStream failed; trying again");
                }
            }
        }
    }

    async fn leases<'a>(&self, leases: &'a mut Option<Leases>) -> Option<&'a Leases> {
        if leases.is_none() {
            match Leases::open(&self.client, self.replicas, self.deadline).await {
                Ok(l) => *leases = Some(l),
                Err(e) => tracing::debug!(error = %e, "takeover: leases not reached"),
            }
        }
        leases.as_ref()
    }

    fn replica(&self) -> Result<&Replica, ReplicaError> {
        self.replication
            .replica()
            .ok_or_else(|| ReplicaError::Nats("JetStream not reached yet".into()))
    }

    async fn publish(&self) {
        boxless_control::publish_now(&self.client, &self.server.board, &self.server.id).await;
    }

    async fn serve_self(&self) {
        // What a crash cut short, but not what the server that answered for this one
        // kept as its own message meanwhile.
        let kept = match self.kept_elsewhere().await {
            Ok(kept) => kept,
            Err(e) => {
                tracing::warn!(server = %self.server.id, error = %e, "JetStream not asked which recordings were kept elsewhere: recovering all");
                Default::default()
            }
        };
        let me = self.server.clone();
        if let Err(e) = self.server.store.write(move |_| me.recover(&kept)).await {
            tracing::error!(server = %self.server.id, error = %e, "interrupted recordings NOT recovered");
        }
        let slot = &self.server.board.slots[self.server.slot];
        slot.set_serves(true, slot.serves().1);
        self.server.store.hold_notices(false);
        self.server.notifier.wake.notify_one();
        self.publish().await;
        tracing::info!(server = %self.server.id, "answering this server's own numbers");
    }

    /// This server's interrupted recordings another server kept as messages while it
    /// answered for it.
    async fn kept_elsewhere(&self) -> Result<std::collections::HashSet<String>, ReplicaError> {
        let replica = self.replica()?;
        let here = self
            .server
            .store
            .read(|s| s.recordings())
            .await
            .map_err(|e| ReplicaError::Nats(e.to_string()))?
            .map_err(|e| ReplicaError::Nats(e.to_string()))?;
        let mut kept = std::collections::HashSet::new();
        for (id, _) in here {
            if replica.recording_state(&self.server.id, &id).await? == Some(Shipped::Salvaged) {
                replica.drop_recording(&self.server.id, &id).await?;
                kept.insert(id);
            }
        }
        Ok(kept)
    }

    /// One step of getting this server's numbers back: true once it may serve them.
    async fn reclaim(
        &self,
        leases: &Leases,
        silence: &Silence,
        now: u64,
    ) -> Result<bool, ReplicaError> {
        let me = &self.server.id;
        match leases.get(me).await? {
            // Never taken over (or caught up already): nothing happened meanwhile.
            None => match leases.released(me).await? {
                None => Ok(true),
                Some(rev) => {
                    self.catch_up().await?;
                    leases.forget(me, rev).await?;
                    Ok(true)
                }
            },
            Some((l, rev)) if l.holder == *me => {
                leases.release(me, rev).await?;
                Ok(false)
            }
            Some((l, rev)) if !l.handback => {
                tracing::info!(server = %me, holder = %l.holder, "back: asking for this server's numbers");
                let asked = Lease {
                    handback: true,
                    ..l
                };
                leases.put(me, &asked, rev).await?;
                Ok(false)
            }
            // Asked; the holder is gone too: nobody else will let go.
            Some((l, rev)) if silence.silent(&l.holder, now) => {
                leases.release(me, rev).await?;
                Ok(false)
            }
            Some(_) => Ok(false),
        }
    }

    /// Makes this server's store what JetStream holds of it.
    async fn catch_up(&self) -> Result<(), ReplicaError> {
        let replica = self.replica()?;
        let records = replica.records_of(&self.server.id).await?;
        let caught = self
            .server
            .store
            .write(move |s| s.catch_up(records))
            .await
            .map_err(|e| ReplicaError::Nats(e.to_string()))?
            .map_err(|e| ReplicaError::Nats(e.to_string()))?;
        let fetched = self.fetch(replica, &caught.missing).await?;
        tracing::info!(
            server = %self.server.id,
            removed = caught.removed,
            changed = caught.changed,
            notices_dropped = caught.notices_dropped,
            fetched,
            "caught up with JetStream"
        );
        Ok(())
    }

    /// Keeps each record here with its audio from JetStream: how many were new here.
    async fn fetch(
        &self,
        replica: &Replica,
        records: &[boxless_store::replica::MessageRecord],
    ) -> Result<usize, ReplicaError> {
        let mut added = 0;
        for r in records {
            let wav = replica.audio(&r.server, &r.id).await?;
            let (server, r) = (self.server.clone(), r.clone());
            let kept = self
                .server
                .store
                .write(move |_| server.adopt(&r, &wav))
                .await
                .map_err(|e| ReplicaError::Nats(e.to_string()))?
                .map_err(|e| ReplicaError::Nats(e.to_string()))?;
            added += usize::from(kept);
        }
        Ok(added)
    }

    /// What this server does about server `id`'s lease now.
    async fn look_at(
        &self,
        leases: &Leases,
        id: &str,
        silence: &Silence,
        now: u64,
        held: &mut Held,
    ) -> Result<(), ReplicaError> {
        let me = &self.server.id;
        let Some(index) = self.server.board.slots.iter().position(|s| s.id == id) else {
            return Ok(());
        };
        if id == me {
            return Ok(());
        }
        let lease = leases.get(id).await?;
        match claim(me, id, lease.as_ref().map(|(l, r)| (l, *r)), silence, now) {
            Claim::Leave => {
                if held.has(index) {
                    // Someone else holds it now (this server was thought lost): let go.
                    self.stop_serving(index, held).await;
                    self.drop_messages(id).await;
                }
            }
            Claim::Create => {
                if leases.take(id, me).await? {
                    self.take(id, index, now, held).await?;
                }
            }
            Claim::Replace(rev) => {
                let mine = Lease {
                    holder: me.clone(),
                    handback: false,
                };
                if leases.put(id, &mine, rev).await? {
                    self.take(id, index, now, held).await?;
                }
            }
            Claim::Hold => {
                if !held.has(index) || now.saturating_sub(held.scanned_ms[index]) >= RESCAN_MS {
                    self.take(id, index, now, held).await?;
                }
            }
            Claim::HandBack(rev) => {
                self.stop_serving(index, held).await;
                // Let go only once JetStream has every change made here meanwhile; else
                // the next tick tries again.
                if self.replication.behind().await > 0 {
                    self.replication.changed();
                    return Ok(());
                }
                self.drop_messages(id).await;
                if leases.release(id, rev).await? {
                    tracing::info!(server = %me, returned = %id, "handed its numbers back");
                }
            }
        }
        Ok(())
    }

    /// Answers for server `id` (slot `index`): keeps its messages here, then says so.
    async fn take(
        &self,
        id: &str,
        index: usize,
        now: u64,
        held: &mut Held,
    ) -> Result<(), ReplicaError> {
        let first = !held.has(index);
        if first {
            tracing::warn!(server = %self.server.id, lost = %id, "taking over a silent server");
        }
        let replica = self.replica()?;
        let records = replica.records_of(id).await?;
        let added = self.fetch(replica, &records).await?;
        let messages = records.iter().map(|r| r.id.as_str()).collect();
        let salvaged = self.salvage(replica, id, &messages, held).await?;
        held.scanned_ms[index] = now;
        if first {
            held.mask |= 1 << index;
            let slot = &self.server.board.slots[self.server.slot];
            slot.set_serves(slot.serves().0, held.mask);
            self.publish().await;
            metrics::counter!("boxless_takeovers_total", "server" => self.server.id.clone())
                .increment(1);
            tracing::warn!(server = %self.server.id, lost = %id, messages = records.len(), added, salvaged, "took over: answering its link numbers and web links");
        }
        Ok(())
    }

    /// Keeps, as this server's own messages, the recordings server `id` was making when it
    /// was lost (what it shipped of them): each deposited or, too short, alerted as a
    /// missed call, then marked kept. How many.
    async fn salvage(
        &self,
        replica: &Replica,
        id: &str,
        messages: &std::collections::HashSet<&str>,
        held: &mut Held,
    ) -> Result<usize, ReplicaError> {
        let mut kept = 0;
        for (rid, count) in replica.recordings_of(id).await? {
            // A message already (its audio may live on this subject), or kept here.
            if messages.contains(rid.as_str()) || held.salvaged.contains(&rid) {
                continue;
            }
            // Became a message just before the loss, its record not read above.
            if replica.record(id, &rid).await?.is_some() {
                continue;
            }
            let Shipped::Bytes(bytes) = replica.recording(id, &rid, count).await? else {
                continue;
            };
            let server = self.server.clone();
            let done = self
                .server
                .store
                .write(move |s| -> boxless_store::Result<bool> {
                    let Some(rec) = s.take_recording(&bytes)? else {
                        return Ok(false);
                    };
                    server.salvage(rec);
                    Ok(true)
                })
                .await
                .map_err(|e| ReplicaError::Nats(e.to_string()))?
                .map_err(|e| ReplicaError::Nats(e.to_string()))?;
            // Kept once, even if the mark below is lost: this process remembers it too.
            held.salvaged.insert(rid.clone());
            replica.salvaged(id, &rid, &self.server.id).await?;
            if done {
                kept += 1;
                tracing::warn!(server = %self.server.id, lost = %id, recording = %rid, "kept a recording the lost server was making");
            }
        }
        Ok(kept)
    }

    /// Stops answering for slot `index`'s numbers.
    async fn stop_serving(&self, index: usize, held: &mut Held) {
        if !held.has(index) {
            return;
        }
        held.mask &= !(1 << index);
        let slot = &self.server.board.slots[self.server.slot];
        slot.set_serves(slot.serves().0, held.mask);
        self.publish().await;
    }

    /// Drops server `id`'s messages kept here.
    async fn drop_messages(&self, id: &str) {
        let origin = id.to_string();
        match self.server.store.write(move |s| s.release(&origin)).await {
            Ok(Ok(n)) => {
                tracing::info!(server = %self.server.id, returned = %id, messages = n, "no longer answering for it")
            }
            Ok(Err(e)) => {
                tracing::error!(server = %self.server.id, error = %e, "its messages NOT dropped here")
            }
            Err(e) => {
                tracing::error!(server = %self.server.id, error = %e, "its messages NOT dropped here")
            }
        }
    }
}

/// The servers this one answers for.
#[derive(Debug)]
struct Held {
    /// Bit `i`: slot `i`.
    mask: u64,
    /// When each one's records were last listed.
    scanned_ms: [u64; 64],
    /// The recordings in progress of lost servers kept here (at most their calls).
    salvaged: std::collections::HashSet<String>,
}

impl Default for Held {
    fn default() -> Self {
        Held {
            mask: 0,
            scanned_ms: [0; 64],
            salvaged: Default::default(),
        }
    }
}

impl Held {
    fn has(&self, index: usize) -> bool {
        index < 64 && self.mask & (1 << index) != 0
    }
}
