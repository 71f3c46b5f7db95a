//! Whether to ask the recogniser at all. A recogniser that is down must not cost every
//! notice its whole wait: after [`Breaker::new`]'s `max_failures` failures in a row, or at
//! once when the connection is refused (nothing listens: no answer will come), the breaker
//! opens and notices stop waiting for `open_ms`; then one request is let through as a
//! probe (half-open), and its outcome closes the breaker or opens it again.

/// How a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens (connection refused, no route): opens the breaker at once.
    Refused,
    /// A timeout, an error status, an answer that is not a transcription.
    Other,
}

/// The breaker's state; time comes in as milliseconds.
#[derive(Debug, Clone)]
pub struct Breaker {
    max_failures: u32,
    open_ms: u64,
    failures: u32,
    /// Open until then (0: closed).
    open_until_ms: u64,
    /// A probe is out (half-open): no other request until it is answered.
    probing: bool,
}

impl Breaker {
    /// Opens after `max_failures` failures in a row (at least 1), for `open_ms`.
    pub fn new(max_failures: u32, open_ms: u64) -> Breaker {
        Breaker {
            max_failures: max_failures.max(1),
            open_ms,
            failures: 0,
            open_until_ms: 0,
            probing: false,
        }
    }

    /// True while notices should not wait for a transcript at `now`: open, or a probe
    /// is out.
    pub fn open(&self, now_ms: u64) -> bool {
        self.probing || now_ms < self.open_until_ms
    }

    /// Whether a request may go at `now`; after the open time, one goes as the probe.
    pub fn allow(&mut self, now_ms: u64) -> bool {
        if self.probing || now_ms < self.open_until_ms {
            return false;
        }
        if self.open_until_ms != 0 {
            self.probing = true;
        }
        true
    }

    /// The request was answered.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.open_until_ms = 0;
        self.probing = false;
    }

    /// The request failed at `now`.
    pub fn failed(&mut self, now_ms: u64, how: Failure) {
        self.failures = self.failures.saturating_add(1);
        if self.probing || how == Failure::Refused || self.failures >= self.max_failures {
            self.open_until_ms = now_ms.saturating_add(self.open_ms).max(1);
        }
        self.probing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_then_probes_once() {
        let mut b = Breaker::new(3, 30_000);
        assert!(b.allow(0) && !b.open(0));
        b.failed(1, Failure::Other);
        b.failed(2, Failure::Other);
        // A success in between starts the count again.
        b.succeeded();
        b.failed(3, Failure::Other);
        b.failed(4, Failure::Other);
        assert!(b.allow(5) && !b.open(5));
        b.failed(6, Failure::Other);
        assert!(b.open(7) && !b.allow(7));
        assert!(!b.allow(30_005));
        // Open time over: one probe, nothing beside it.
        assert!(b.allow(30_006));
        assert!(b.open(30_007) && !b.allow(30_007));
        // The probe fails: open again for the whole time.
        b.failed(30_100, Failure::Other);
        assert!(!b.allow(60_099));
        assert!(b.allow(60_100));
        b.succeeded();
        assert!(!b.open(60_101) && b.allow(60_101) && b.allow(60_102));
    }

    #[test]
    fn a_refused_connection_opens_at_once() {
        let mut b = Breaker::new(5, 10_000);
        assert!(b.allow(100));
        b.failed(100, Failure::Refused);
        assert!(b.open(101) && !b.allow(101));
        assert!(b.allow(10_100));
    }
}
