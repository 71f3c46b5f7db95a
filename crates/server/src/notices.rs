//! What a finished call leaves in the store: the message and the notices to the
//! recipient's channels, or a missed-call alert; and, at start, what a crash cut short.
//! Everything here blocks on the store: callers run it off the async threads.

use boxless_core::PhoneNumber;
use boxless_core::recipient::{Channel, Language, Route};
use boxless_store::replica::MessageRecord;
use boxless_store::{Arrival, Recording};

use crate::server::MessagingServer;

impl MessagingServer {
    /// The language of `n`'s texts: its entry's, else its country's (blocking: reads the
    /// recipients' copy).
    pub(crate) fn language(&self, n: PhoneNumber) -> Language {
        let prefs = self.directory.get(n).ok().flatten();
        self.languages.for_number(n, prefs.as_ref())
    }

    /// Where `recipient`'s notices go (its entry's channels that this server can use;
    /// no entry: an SMS to the recipient) and in which language (blocking).
    pub(crate) fn routes(&self, recipient: PhoneNumber) -> (Vec<Route>, Language) {
        // The copy answers even while NATS is away.
        let prefs = self
            .directory
            .get(recipient)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "recipients' copy unreadable: SMS to the recipient only");
                None
            })
            .unwrap_or_default();
        let routes = prefs.routes(recipient, |c| match c {
            Channel::Sms => true,
            Channel::Email => self.email_on,
            Channel::Webhook => self.webhook_on,
        });
        if routes.len() < prefs.channels.len() {
            tracing::warn!(%recipient, "a channel of the recipient's entry is not configured on this server ([email] smtp, webhook.secret_file): left out");
        }
        (routes, self.languages.for_number(recipient, Some(&prefs)))
    }

    /// Wakes the notifiers that have work now that a message's notices to `routes` are
    /// queued: the SMS worker, and the e-mail and webhook worker only when a route uses
    /// it (woken for none, it would only read that there is nothing: two turns on a
    /// reader thread).
    fn queued(&self, routes: &[Route]) {
        self.notifier.wake.notify_one();
        if routes.iter().any(|r| r.channel() != Channel::Sms) {
            self.notifier.wake_others.notify_one();
        }
    }

    /// Stores a finished recording as a message and queues its notices to the
    /// recipient's channels (blocking), and asks for its transcript (`voiced`: whether
    /// any of it was voice): the message's id, or None when it was not stored.
    pub(crate) fn deposit(&self, rec: Recording, keep: u64, voiced: bool) -> Option<String> {
        let (routes, lang) = self.routes(rec.arrival().recipient);
        let render = |f: &boxless_store::SmsFacts<'_>, c: Channel| self.texts.message(f, c, lang);
        match self
            .store
            .deposit_recording(rec, keep, &routes, self.fallback_after_ms, render)
        {
            Ok(m) => {
                tracing::info!(id = %m.id, duration_ms = m.duration_ms, link = %m.link_number, "message stored");
                metrics::counter!("boxless_messages_stored_total", "server" => self.id.clone())
                    .increment(1);
                self.queued(&routes);
                if let Some(t) = &self.transcriber {
                    t.submit(&m.id, voiced, lang);
                }
                Some(m.id)
            }
            Err(e) => {
                tracing::error!(error = %e, "message NOT stored");
                metrics::counter!("boxless_store_errors_total").increment(1);
                None
            }
        }
    }

    /// Records message `id`'s transcript and re-writes its notices still waiting with it
    /// (blocking): true when it landed (it lands once).
    pub(crate) fn transcribed(&self, id: &str, t: &boxless_store::Transcript) -> bool {
        // The SMS is cut to its parts with the real link in it, which only the store knows
        // (the text carries a mark until it goes).
        let link = self.store.web_link(id);
        // The recipient's language, read once, only when a notice is still waiting.
        let mut lang = None;
        let render = |f: &boxless_store::SmsFacts<'_>, c: Channel, text: Option<&str>| {
            let lang = *lang.get_or_insert_with(|| self.language(f.message.recipient));
            self.texts.message_with(f, c, lang, text, link.as_deref())
        };
        let now = boxless_core::now_ms();
        match self
            .store
            .transcribed(id, t, self.fallback_after_ms, render, now)
        {
            Ok(landed) => {
                if landed {
                    tracing::info!(%id, state = t.state.as_str(), "transcript recorded");
                }
                landed
            }
            Err(e) => {
                tracing::error!(%id, error = %e, "transcript NOT recorded");
                false
            }
        }
    }

    /// Keeps message `r` taken over from another server (or missed by this one while it
    /// was taken over) with its audio, notifying it when it never was (blocking): true
    /// when it was new here.
    pub(crate) fn adopt(&self, r: &MessageRecord, wav: &[u8]) -> boxless_store::Result<bool> {
        let Some(recipient) = PhoneNumber::parse_e164(&format!("+{}", r.recipient)) else {
            return Ok(false);
        };
        let (routes, lang) = self.routes(recipient);
        let render = |f: &boxless_store::SmsFacts<'_>, c: Channel| self.texts.message(f, c, lang);
        let added = self
            .store
            .adopt(r, wav, &routes, self.fallback_after_ms, render)?;
        if added && r.state == "new" {
            self.queued(&routes);
        }
        // The lost server's recogniser never answered: this one's is asked (the store
        // kept it `pending` only because there is one).
        if added
            && r.transcript_state == "pending"
            && let Some(t) = &self.transcriber
        {
            t.submit(&r.id, true, lang);
        }
        Ok(added)
    }

    /// Queues a missed-call alert and drops the call's recording, if any (blocking).
    /// `elsewhere`: another server's alert covers this caller's burst (the cluster's
    /// count said so), so it is only recorded.
    pub(crate) fn missed_call(&self, a: Arrival, rec: Option<Recording>, elsewhere: bool) -> bool {
        let (recipient, caller, at) = (a.recipient, a.caller, a.received_at_ms);
        let lang = self.language(recipient);
        let render = |calls| self.texts.missed_call(caller, calls, at, lang);
        let merge = self.missed_call_merge_ms;
        let queued = self
            .store
            .missed_call(recipient, caller, at, merge, elsewhere, render);
        // Dropped only once the alert is durable: a crash in between alerts again (the
        // alerts of one caller merge), never not at all.
        if let Some(rec) = rec
            && let Err(e) = self.store.discard_recording(rec)
        {
            tracing::error!(error = %e, "a short recording's file NOT removed");
        }
        match queued {
            Ok(queued) => {
                metrics::counter!("boxless_missed_calls_total").increment(1);
                if queued {
                    self.notifier.wake.notify_one();
                } else {
                    metrics::counter!("boxless_sms_merged_total", "reason" => "missed_call_burst")
                        .increment(1);
                    let why = if elsewhere {
                        "another server's alert covers this caller's burst"
                    } else {
                        "the same caller's alert went out just now"
                    };
                    tracing::info!(%recipient, "missed-call alert merged: {why}");
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "missed-call alert NOT stored");
                false
            }
        }
    }

    /// Deposits what a crash (or a stop) cut short: each recording long enough is a
    /// message, notified as any other; a shorter one a missed call; one in `kept_elsewhere`
    /// (another server kept it while it answered for this one) is dropped (blocking).
    pub(crate) fn recover(&self, kept_elsewhere: &std::collections::HashSet<String>) {
        let leftovers = self
            .leftovers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let found = match self
            .store
            .interrupted_of(|id| leftovers.as_ref().is_none_or(|l| l.contains(id)))
        {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(server = %self.id, error = %e, "interrupted recordings NOT recovered");
                return;
            }
        };
        for rec in found {
            if kept_elsewhere.contains(rec.id()) {
                tracing::info!(server = %self.id, id = %rec.id(), "a recording cut short was kept by the server that answered for this one: dropped here");
                if let Err(e) = self.store.discard_recording(rec) {
                    tracing::error!(error = %e, "a recording's file NOT removed");
                }
                continue;
            }
            self.salvage(rec);
        }
    }

    /// Keeps a recording its call did not store: a message when long enough, else a
    /// missed call (blocking).
    pub(crate) fn salvage(&self, rec: Recording) {
        let min = self.settings.min_samples as u64 * u64::from(rec.rate()) / 8000;
        tracing::warn!(server = %self.id, id = %rec.id(), duration_ms = rec.duration_ms(), "keeping a recording cut short");
        metrics::counter!("boxless_recordings_recovered_total").increment(1);
        if rec.samples() >= min {
            self.deposit(rec, u64::MAX, true);
        } else {
            self.missed_call(rec.arrival(), Some(rec), false);
        }
    }
}
