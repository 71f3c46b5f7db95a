//! Transactions as Boxless needs them (RFC 3261 §17), sans-IO: time comes in as an
//! argument, what to send is returned, nothing here reads a clock or owns a socket.
//!
//! - [`UasInvite`]: our `2xx` to an INVITE, retransmitted (T1 doubling to T2) until the ACK
//!   comes, given up after 64·T1 (§13.3.1.4: the UAS core does this on every transport).
//! - [`UacNonInvite`]: a BYE, UPDATE or OPTIONS we send: Timer E retransmits it over UDP,
//!   Timer F (64·T1) ends it without an answer (§17.1.2).

use std::time::{Duration, Instant};

/// RFC 3261 timer values: configuration, not constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipTimers {
    /// Round-trip estimate (default 500 ms).
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
}

impl Default for SipTimers {
    fn default() -> Self {
        SipTimers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
        }
    }
}

impl SipTimers {
    /// 64·T1: how long a transaction waits for its answer.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// What a transaction's timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// Send the message again (see `message()`).
    Retransmit,
    /// No answer (ACK, final response) in time: the transaction is over.
    TimedOut,
}

/// A message sent again at growing intervals (T1 doubling up to T2) until an answer or a
/// deadline: what both transactions here share.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    next: Option<(Instant, Duration)>,
    deadline: Option<Instant>,
    t2: Duration,
}

impl Schedule {
    fn new(now: Instant, retransmit: bool, t: SipTimers) -> Schedule {
        Schedule {
            next: retransmit.then_some((now + t.t1, t.t1)),
            deadline: Some(now + t.timeout()),
            t2: t.t2,
        }
    }

    fn stop(&mut self) {
        self.next = None;
        self.deadline = None;
    }

    fn running(&self) -> bool {
        self.deadline.is_some()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match (self.next, self.deadline) {
            (Some((n, _)), Some(d)) => Some(n.min(d)),
            (None, d) => d,
            (Some((n, _)), None) => Some(n),
        }
    }

    fn handle_timeout(&mut self, now: Instant) -> Option<Fired> {
        if self.deadline.is_some_and(|d| now >= d) {
            self.stop();
            return Some(Fired::TimedOut);
        }
        let (at, every) = self.next?;
        if now < at {
            return None;
        }
        let every = (every * 2).min(self.t2);
        self.next = Some((now + every, every));
        Some(Fired::Retransmit)
    }
}

/// The UAS side of an INVITE once we sent a `2xx`.
#[derive(Debug, Clone)]
pub struct UasInvite {
    cseq: u32,
    response: Vec<u8>,
    schedule: Schedule,
}

impl UasInvite {
    /// Our `2xx` to the INVITE with CSeq `cseq`, sent at `now`.
    pub fn new(now: Instant, cseq: u32, response: Vec<u8>, t: SipTimers) -> UasInvite {
        UasInvite {
            cseq,
            response,
            schedule: Schedule::new(now, true, t),
        }
    }

    /// The INVITE's CSeq number.
    pub fn cseq(&self) -> u32 {
        self.cseq
    }

    /// The `2xx` bytes (for a retransmission or an INVITE retransmitted by the caller).
    pub fn message(&self) -> &[u8] {
        &self.response
    }

    /// True once the ACK came (or the wait for it ended).
    pub fn acked(&self) -> bool {
        !self.schedule.running()
    }

    /// The ACK for this INVITE arrived.
    pub fn ack(&mut self) {
        self.schedule.stop();
    }

    /// When [`UasInvite::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.schedule.poll_timeout()
    }

    /// Advances its timers.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Fired> {
        self.schedule.handle_timeout(now)
    }
}

/// A non-INVITE request we sent, until its final response.
#[derive(Debug, Clone)]
pub struct UacNonInvite {
    request: Vec<u8>,
    branch: String,
    schedule: Schedule,
}

impl UacNonInvite {
    /// `request` (with top Via `branch`) sent at `now`; `reliable`: over TCP or TLS,
    /// where the transport retransmits and Timer E does not run.
    pub fn new(
        now: Instant,
        request: Vec<u8>,
        branch: String,
        reliable: bool,
        t: SipTimers,
    ) -> UacNonInvite {
        UacNonInvite {
            request,
            branch,
            schedule: Schedule::new(now, !reliable, t),
        }
    }

    /// The request bytes.
    pub fn message(&self) -> &[u8] {
        &self.request
    }

    /// Its branch.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// True after a final response or the timeout.
    pub fn done(&self) -> bool {
        !self.schedule.running()
    }

    /// A response with our branch: true when it is final (the transaction is over).
    pub fn response(&mut self, code: u16) -> bool {
        if code < 200 {
            // Provisional: stop retransmitting so often (§17.1.2.2), keep waiting.
            let t2 = self.schedule.t2;
            if let Some((at, _)) = self.schedule.next.as_mut() {
                self.schedule.next = Some((*at, t2));
            }
            return false;
        }
        self.schedule.stop();
        true
    }

    /// When [`UacNonInvite::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.schedule.poll_timeout()
    }

    /// Advances its timers.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Fired> {
        self.schedule.handle_timeout(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire_until<F: FnMut(Instant) -> Option<Fired>>(
        t0: Instant,
        mut poll: impl FnMut() -> Option<Instant>,
        mut fire: F,
        until: Duration,
    ) -> Vec<(u128, Fired)> {
        let mut seen = Vec::new();
        while let Some(at) = poll() {
            if at > t0 + until {
                break;
            }
            if let Some(f) = fire(at) {
                seen.push(((at - t0).as_millis(), f));
            }
        }
        seen
    }

    #[test]
    fn ok_is_retransmitted_doubling_to_t2_until_ack_or_64_t1() {
        let t0 = Instant::now();
        let t = SipTimers::default();
        let mut tsx = UasInvite::new(t0, 1, b"200".to_vec(), t);
        let cell = std::cell::RefCell::new(&mut tsx);
        let seen = fire_until(
            t0,
            || cell.borrow().poll_timeout(),
            |now| cell.borrow_mut().handle_timeout(now),
            Duration::from_secs(40),
        );
        let at: Vec<u128> = seen.iter().map(|(ms, _)| *ms).collect();
        assert_eq!(
            &at[..6],
            [500, 1500, 3500, 7500, 11500, 15500],
            "T1, then doubling up to T2 = 4 s"
        );
        assert_eq!(seen.last(), Some(&(32_000, Fired::TimedOut)));
        assert!(tsx.poll_timeout().is_none());

        let mut tsx = UasInvite::new(t0, 1, b"200".to_vec(), t);
        tsx.ack();
        assert!(tsx.acked() && tsx.poll_timeout().is_none());
    }

    #[test]
    fn non_invite_retransmits_over_udp_only_and_ends_on_final_or_timer_f() {
        let t0 = Instant::now();
        let t = SipTimers::default();
        let mut udp = UacNonInvite::new(t0, b"BYE".to_vec(), "z9hG4bK1".into(), false, t);
        assert_eq!(udp.handle_timeout(t0 + t.t1), Some(Fired::Retransmit));
        assert!(!udp.response(100));
        assert_eq!(udp.poll_timeout(), Some(t0 + t.t1 * 3), "as planned...");
        assert_eq!(udp.handle_timeout(t0 + t.t1 * 3), Some(Fired::Retransmit));
        assert_eq!(
            udp.poll_timeout(),
            Some(t0 + t.t1 * 3 + t.t2),
            "...then every T2"
        );
        assert!(udp.response(200));
        assert!(udp.done() && udp.poll_timeout().is_none());

        let mut tcp = UacNonInvite::new(t0, b"BYE".to_vec(), "z9hG4bK2".into(), true, t);
        assert_eq!(tcp.poll_timeout(), Some(t0 + t.timeout()));
        assert_eq!(tcp.handle_timeout(t0 + t.t1), None);
        assert_eq!(tcp.handle_timeout(t0 + t.timeout()), Some(Fired::TimedOut));
        assert!(tcp.done());
    }
}
