//! What a deposit's caller hears first (docs/sip.md, "Greetings"): the recipient's own
//! greeting when they set one (the busy one for a call forwarded on busy, else the
//! no-answer one), then the tone; else the default (`messages.greeting`).
//!
//! The greetings live in the recipients' copy ([`boxless_store::Directory`]). A call reads
//! which greeting applies and its revision from the primary key; the audio comes from a
//! small cache while that revision is the one cached, so a recipient who gets many calls
//! costs one read of its audio per change, not per call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use boxless_core::config::Greeting;
use boxless_core::recipient::GreetingKind;
use boxless_core::{PhoneNumber, now_ms};
use boxless_media::Law;
use boxless_store::GreetingChange;

use crate::server::MessagingServer;

/// Samples the cache holds at most (about 8 MB): some dozens of greetings.
const CACHE_SAMPLES: usize = 4 * 1024 * 1024;

/// Greetings recently played, with their revision.
#[derive(Debug, Default)]
pub(crate) struct GreetingCache {
    held: Mutex<Held>,
}

/// A greeting's revision and its audio (the tone included).
type Cached = (u64, Arc<[i16]>);

#[derive(Debug, Default)]
struct Held {
    by: HashMap<(PhoneNumber, GreetingKind), Cached>,
    samples: usize,
}

impl GreetingCache {
    fn get(&self, n: PhoneNumber, kind: GreetingKind, revision: u64) -> Option<Arc<[i16]>> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.by.get(&(n, kind)) {
            Some((r, a)) if *r == revision => Some(a.clone()),
            _ => None,
        }
    }

    fn put(&self, n: PhoneNumber, kind: GreetingKind, revision: u64, audio: Arc<[i16]>) {
        if audio.len() > CACHE_SAMPLES {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, old)) = held.by.remove(&(n, kind)) {
            held.samples -= old.len();
        }
        // Full: make room by dropping whatever comes first; a greeting dropped is read
        // again at its next call.
        while held.samples + audio.len() > CACHE_SAMPLES {
            let Some(k) = held.by.keys().next().copied() else {
                break;
            };
            if let Some((_, old)) = held.by.remove(&k) {
                held.samples -= old.len();
            }
        }
        held.samples += audio.len();
        held.by.insert((n, kind), (revision, audio));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.lock().unwrap().by.len()
    }
}

impl MessagingServer {
    /// What a deposit for `recipient` plays before it records (blocking: reads the
    /// recipients' copy). `busy`: the call was forwarded on busy.
    pub(crate) fn greeting_for(&self, recipient: PhoneNumber, busy: bool) -> Arc<[i16]> {
        match self.own_greeting(recipient, busy) {
            Some(g) => g,
            None => match self.greeting {
                Greeting::Digits => {
                    let lang = self.language(recipient);
                    self.prompts.greeting(lang, &recipient.digits()).into()
                }
                Greeting::Tone => self.tone.clone(),
            },
        }
    }

    /// Keeps `owner`'s greeting recorded by phone (None: removes it), as the API would:
    /// to the recipients' bucket with NATS, and the event from this server.
    pub(crate) async fn set_own_greeting(&self, owner: PhoneNumber, audio: Option<Vec<i16>>) {
        let kind = GreetingKind::NoAnswer;
        let done = match audio {
            Some(a) => {
                let seconds = a.len() as f64 / 8000.0;
                let ulaw = a.iter().map(|&x| Law::Ulaw.encode(x)).collect();
                self.recipients
                    .put_greeting(owner, kind, ulaw)
                    .await
                    .map(|()| GreetingChange::Set { seconds })
            }
            None => self
                .recipients
                .delete_greeting(owner, kind)
                .await
                .map(|_| GreetingChange::Removed),
        };
        match done {
            Ok(change) => {
                tracing::info!(%owner, ?change, "greeting changed by phone");
                let written =
                    self.store
                        .write_greeting_event(change, owner, kind, "phone", now_ms());
                if let Err(e) = written {
                    tracing::error!(error = %e, ?change, "greetings: the event could not be written");
                }
            }
            Err(e) => {
                metrics::counter!("boxless_greeting_writes_failed_total").increment(1);
                tracing::error!(%owner, error = %e, "a greeting recorded by phone could not be kept");
            }
        }
    }

    /// The recipient's own greeting followed by the tone, when it has one.
    fn own_greeting(&self, recipient: PhoneNumber, busy: bool) -> Option<Arc<[i16]>> {
        let v = self
            .directory
            .greeting_version(recipient, GreetingKind::for_call(busy))
            .inspect_err(|e| tracing::warn!(error = %e, %recipient, "greetings: cannot read; the default plays"))
            .ok()??;
        if let Some(a) = self.greetings.get(recipient, v.kind, v.revision) {
            return Some(a);
        }
        let (ulaw, revision) = self.directory.greeting(recipient, v.kind).ok()??;
        let mut samples: Vec<i16> = Vec::with_capacity(ulaw.len() + self.tone.len());
        samples.extend(ulaw.iter().map(|&b| Law::Ulaw.decode(b)));
        samples.extend_from_slice(&self.tone);
        let audio: Arc<[i16]> = samples.into();
        self.greetings
            .put(recipient, v.kind, revision, audio.clone());
        Some(audio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(k: u64) -> PhoneNumber {
        PhoneNumber::parse_e164(&format!("+1555123{k:04}")).unwrap()
    }

    #[test]
    fn the_cache_answers_only_for_the_revision_it_holds_and_stays_bounded() {
        let c = GreetingCache::default();
        let a: Arc<[i16]> = vec![1; 10].into();
        c.put(n(1), GreetingKind::NoAnswer, 3, a.clone());
        assert!(c.get(n(1), GreetingKind::NoAnswer, 3).is_some());
        assert!(
            c.get(n(1), GreetingKind::NoAnswer, 4).is_none(),
            "changed since"
        );
        assert!(c.get(n(1), GreetingKind::Busy, 3).is_none());
        let big: Arc<[i16]> = vec![0; CACHE_SAMPLES / 3].into();
        for k in 0..10 {
            c.put(n(k), GreetingKind::Busy, 1, big.clone());
        }
        let held = c.held.lock().unwrap().samples;
        assert!(held <= CACHE_SAMPLES, "{held}");
        assert!(c.len() <= 4);
        // Too big for the cache at all: not kept.
        c.put(
            n(99),
            GreetingKind::Busy,
            1,
            vec![0; CACHE_SAMPLES + 1].into(),
        );
        assert!(c.get(n(99), GreetingKind::Busy, 1).is_none());
    }
}
