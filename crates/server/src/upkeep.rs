//! A server's upkeep: its status on the board (a heartbeat every TTL/3) and the retention
//! sweep once a minute.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use boxless_core::{ServerState, now_ms};
use boxless_store::Retention;

use crate::server::MessagingServer;

/// Audio leaf directories looked at per retention tick (of `boxless_store::audio::LEAVES`).
const AUDIO_LEAVES_PER_TICK: u32 = 64;

impl MessagingServer {
    /// Publishes the server's state on its slot of the status board.
    pub(crate) fn report(&self) {
        let state = if self.stopped.load(Ordering::Relaxed) {
            ServerState::Down
        } else if self.draining.load(Ordering::Relaxed) {
            ServerState::Draining
        } else {
            ServerState::Up
        };
        let notifier_ok = self.notifier.healthy.load(Ordering::Relaxed);
        let slot = &self.board.slots[self.slot];
        slot.set_unreplicated(self.replication.get().map(|r| r.last_behind()));
        slot.heartbeat(state, self.store.free_disk(), notifier_ok, now_ms());
    }

    /// Reports the server's state at least every TTL/3.
    pub(crate) async fn heartbeat(self: Arc<Self>) {
        let every = (self.ttl / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            // statvfs, off the async threads; not on the store's readers, where a
            // heartbeat would queue behind slow reads and the server look dead.
            let s = self.clone();
            let _ = tokio::task::spawn_blocking(move || s.report()).await;
        }
    }

    /// Applies retention once a minute: reminders before expiry, deletion after it; and
    /// looks for stray audio in [`AUDIO_LEAVES_PER_TICK`] of the audio's leaf directories
    /// (all of them in about 17 hours).
    pub(crate) async fn retention(self: Arc<Self>, policy: Retention) {
        let mut cursor = 0u32;
        loop {
            let s = self.clone();
            let res = self
                .store
                .write(move |_| {
                    let now = now_ms();
                    if let Err(e) = s.store.prune_outbox(now) {
                        tracing::error!(error = %e, "pruning finished notifications failed");
                    }
                    s.store.sweep(now, &policy, |m, expires| {
                        let lang = s.language(m.recipient);
                        s.texts.reminder(m.caller, m.link_number, expires, lang)
                    })
                })
                .await;
            match res {
                Ok(Ok(done)) if done.deleted + done.reminded > 0 => {
                    tracing::info!(
                        deleted = done.deleted,
                        reminded = done.reminded,
                        "retention sweep"
                    );
                    if done.reminded > 0 {
                        self.notifier.wake.notify_one();
                    }
                }
                Ok(Err(e)) => tracing::error!(error = %e, "retention sweep failed"),
                _ => {}
            }
            let from = cursor;
            let swept = self.store.read(move |s| {
                let mut c = from;
                s.sweep_audio(&mut c, AUDIO_LEAVES_PER_TICK).map(|n| (n, c))
            });
            match swept.await {
                Ok(Ok((n, next))) => {
                    cursor = next;
                    if n > 0 {
                        tracing::warn!(removed = n, "stray audio removed");
                    }
                }
                Ok(Err(e)) => tracing::error!(error = %e, "audio sweep failed"),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
}
