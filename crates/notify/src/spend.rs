//! What an SMS may cost: the operator's spend limits, decided when a job is due (sans-IO:
//! the worker brings the job and its number's rolling hour, and does what this says).
//!
//! - A notification to a number outside `sms.allowed_prefixes` is never sent (SMS pumping
//!   makes its money on foreign and premium ranges): it is kept as `blocked`, counted and
//!   logged, and the message it belongs to is stored and retrievable as usual.
//! - Past `sms.max_per_recipient_per_hour` SMS to a number in the last rolling hour, a
//!   notice is merged into that number's digest, due when the hour has room again; a
//!   digest due while the hour is still full waits for room.

use boxless_core::PhoneNumber;
use boxless_store::{JobKind, OutboxJob, Window, outbox::HOUR_MS};

/// The spend limits of one notifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendPolicy {
    /// E.164 prefixes (`+1`, `+4420`); empty: any destination.
    pub allowed_prefixes: Vec<String>,
    /// SMS per number per rolling hour.
    pub max_per_hour: u32,
}

impl Default for SpendPolicy {
    fn default() -> Self {
        SpendPolicy {
            allowed_prefixes: Vec::new(),
            max_per_hour: 10,
        }
    }
}

/// What to do with a due job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// Send it.
    Send,
    /// Never send it: its number is outside the allowed prefixes.
    Block,
    /// Merge it into the number's digest, due at this time (ms).
    Merge {
        /// When the hour has room again.
        digest_at: u64,
    },
    /// A digest whose hour is still full: wait until then (ms).
    Defer {
        /// When the hour has room again.
        until: u64,
    },
}

impl SpendPolicy {
    /// Decides about `job`, given the SMS its number got in the hour before `now`.
    pub fn decide(&self, job: &OutboxJob, window: Window, now: u64) -> Spend {
        if !self.allows(job.destination) {
            return Spend::Block;
        }
        // The one answer to a STOP/START goes at once: it is sent only when the number's
        // state changed, so a phone gets no more of them than it sends texts.
        if window.sent < self.max_per_hour || job.kind == JobKind::Confirm {
            return Spend::Send;
        }
        // The hour has room again when its oldest SMS is an hour old.
        let room = window.oldest_ms.map_or(now, |o| o + HOUR_MS).max(now + 1);
        match job.kind {
            JobKind::Digest => Spend::Defer { until: room },
            _ => Spend::Merge { digest_at: room },
        }
    }

    /// True when an SMS may go to `n`.
    pub fn allows(&self, n: PhoneNumber) -> bool {
        if self.allowed_prefixes.is_empty() {
            return true;
        }
        let n = n.to_string();
        self.allowed_prefixes
            .iter()
            .any(|p| n.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(kind: JobKind, to: &str) -> OutboxJob {
        OutboxJob {
            id: 1,
            channel: boxless_core::recipient::Channel::Sms,
            address: None,
            step: 0,
            message_id: None,
            kind,
            destination: PhoneNumber::parse_e164(to).unwrap(),
            source: None,
            text: String::new(),
            attempts: 0,
        }
    }

    #[test]
    fn past_the_hourly_limit_notices_merge_and_digests_wait() {
        let p = SpendPolicy {
            allowed_prefixes: vec!["+1".into()],
            max_per_hour: 3,
        };
        let now = 10 * HOUR_MS;
        let w = |sent, oldest: Option<u64>| Window {
            sent,
            oldest_ms: oldest,
        };
        let m = job(JobKind::Message, "+15551230002");
        assert_eq!(p.decide(&m, w(2, Some(now - 1000)), now), Spend::Send);
        assert_eq!(
            p.decide(&m, w(3, Some(now - 1000)), now),
            Spend::Merge {
                digest_at: now - 1000 + HOUR_MS
            }
        );
        let d = job(JobKind::Digest, "+15551230002");
        assert_eq!(
            p.decide(&d, w(3, Some(now - 5)), now),
            Spend::Defer {
                until: now - 5 + HOUR_MS
            }
        );
        assert_eq!(p.decide(&d, w(2, Some(now - 5)), now), Spend::Send);
        assert_eq!(
            p.decide(&job(JobKind::MissedCall, "+23480000001"), w(0, None), now),
            Spend::Block,
            "a blocked prefix wins over everything"
        );
    }

    #[test]
    fn prefixes_allow_only_their_ranges() {
        let n = |s: &str| PhoneNumber::parse_e164(s).unwrap();
        let any = SpendPolicy::default();
        assert!(any.allows(n("+23480000001")));
        let p = SpendPolicy {
            allowed_prefixes: vec!["+1".into(), "+4420".into()],
            ..SpendPolicy::default()
        };
        assert!(p.allows(n("+15551230002")));
        assert!(p.allows(n("+442079460000")));
        assert!(!p.allows(n("+447700900000")), "+44 7… is not +44 20…");
        assert!(!p.allows(n("+23480000001")));
        assert!(!p.allows(n("+37060000000")));
    }
}
