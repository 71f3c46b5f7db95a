//! Transactions as Boxless needs them (RFC 3261 §17), sans-IO: time comes in as an
//! argument, what to send is returned, nothing here reads a clock or owns a socket. Each
//! names its deadlines in a [`TimerTable`] and answers `poll_timeout`/`handle_timeout`,
//! the one timer idiom of the workspace (`boxless-timer`).
//!
//! - [`UasInvite`]: our `2xx` to an INVITE, retransmitted (T1 doubling to T2) until the ACK
//!   comes, given up after 64·T1 (§13.3.1.4: the UAS core does this on every transport).
//! - [`UacNonInvite`]: a BYE, UPDATE or OPTIONS we send: Timer E retransmits it over UDP,
//!   Timer F (64·T1) ends it without an answer (§17.1.2).
//! - [`UacInvite`]: an INVITE we send (the router's proxy): Timer A retransmits it over
//!   UDP, Timer B ends the wait for any answer, Timer C the wait for a final one after a
//!   provisional (§16.6 step 11), Timer D absorbs the final's retransmissions (§17.1.1).
//!   It also holds a CANCEL until a provisional response allows it (§9.1).

use std::time::{Duration, Instant};

use boxless_timer::TimerTable;
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

/// The deadlines a transaction may hold.
#[derive(Debug, Clone, Copy)]
enum Timer {
    /// Send again (Timers A, E, G).
    Retransmit,
    /// Give up waiting for the answer (Timers B, C, F, H).
    GiveUp,
    /// Linger after the end to absorb retransmissions (Timer D).
    Linger,
}

impl From<Timer> for usize {
    fn from(t: Timer) -> usize {
        t as usize
    }
}

/// A message sent again at growing intervals (T1 doubling, up to `cap`) until an answer or
/// a deadline: what the transactions here share.
#[derive(Debug, Clone)]
struct Schedule {
    timers: TimerTable<Timer, 3>,
    every: Duration,
    cap: Duration,
}

impl Schedule {
    fn new(
        now: Instant,
        retransmit: bool,
        t: SipTimers,
        give_up: Duration,
        cap: Duration,
    ) -> Schedule {
        let mut timers = TimerTable::default();
        if retransmit {
            timers.set(Timer::Retransmit, now + t.t1);
        }
        timers.set(Timer::GiveUp, now + give_up);
        Schedule {
            timers,
            every: t.t1,
            cap,
        }
    }

    fn stop(&mut self) {
        self.timers.clear(Timer::Retransmit);
        self.timers.clear(Timer::GiveUp);
    }

    fn running(&self) -> bool {
        self.timers.get(Timer::GiveUp).is_some()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    fn handle_timeout(&mut self, now: Instant) -> Option<Fired> {
        if self.timers.fired(Timer::GiveUp, now) {
            self.stop();
            return Some(Fired::TimedOut);
        }
        if !self.timers.fired(Timer::Retransmit, now) {
            return None;
        }
        self.every = (self.every * 2).min(self.cap);
        self.timers.set(Timer::Retransmit, now + self.every);
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
            schedule: Schedule::new(now, true, t, t.timeout(), t.t2),
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
            schedule: Schedule::new(now, !reliable, t, t.timeout(), t.t2),
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
            self.schedule.every = self.schedule.cap;
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

/// Where an INVITE client transaction stands (§17.1.1.2, with RFC 6026's Accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteState {
    /// Sent; no answer yet (Timers A and B run).
    Calling,
    /// A provisional response came (Timer C runs).
    Proceeding,
    /// A non-2xx final response came and was ACKed (Timer D runs).
    Completed,
    /// A 2xx came; its retransmissions still arrive for 64·T1 (RFC 6026).
    Accepted,
    /// Over.
    Terminated,
}

/// How long a proxy waits on an INVITE it sent: policy, where RFC 3261 gives only bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InviteWaits {
    /// Timer B, the wait for any answer: 64·T1 in RFC 3261; a proxy that fails over to
    /// another server waits less (Kamailio's `fr_timer`).
    pub answer: Duration,
    /// Timer C, the wait for a final answer once a provisional came (§16.6 step 11;
    /// Kamailio's `fr_inv_timer`).
    pub ring: Duration,
}

/// What an INVITE client transaction's timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteFired {
    /// Send the INVITE again (Timer A).
    Retransmit,
    /// No answer at all (Timer B): the transaction is over, nothing was set up.
    NoAnswer,
    /// A provisional but no final answer in time (Timer C): send a CANCEL; the transaction
    /// waits on for the `487` to ACK it.
    NoFinal,
}

/// What a response did to an INVITE client transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// `100 Trying`: retransmissions stop; nothing to pass on.
    Trying,
    /// `101`-`199`: to pass on.
    Provisional,
    /// The first final response: to act on. A non-2xx one is to be ACKed.
    Final,
    /// A non-2xx final response again (our ACK was lost): ACK it again, nothing else.
    FinalAgain,
    /// A 2xx again, or a 2xx from another fork: to pass on (the ACK is end to end).
    Accepted,
    /// Nothing this transaction expects in its state.
    Stray,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    None,
    /// Asked for before any provisional response: not sent yet (§9.1).
    Held,
    Sent,
}

/// An INVITE we sent (the router's proxy forwarding a call), until its final answer.
#[derive(Debug, Clone)]
pub struct UacInvite {
    request: Vec<u8>,
    branch: String,
    state: InviteState,
    schedule: Schedule,
    waits: InviteWaits,
    t: SipTimers,
    reliable: bool,
    cancel: Cancel,
}

/// Timer D over UDP (§17.1.1.2: at least 32 s).
const TIMER_D: Duration = Duration::from_secs(32);

impl UacInvite {
    /// `request` (with top Via `branch`) sent at `now`; `reliable`: over TCP or TLS, where
    /// Timer A does not run and Timer D is zero.
    pub fn new(
        now: Instant,
        request: Vec<u8>,
        branch: String,
        reliable: bool,
        t: SipTimers,
        waits: InviteWaits,
    ) -> UacInvite {
        UacInvite {
            request,
            branch,
            state: InviteState::Calling,
            // Timer A doubles without the T2 cap (§17.1.1.2); Timer B bounds it.
            schedule: Schedule::new(now, !reliable, t, waits.answer, waits.answer),
            waits,
            t,
            reliable,
            cancel: Cancel::None,
        }
    }

    /// The INVITE's bytes.
    pub fn message(&self) -> &[u8] {
        &self.request
    }

    /// Its branch.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// Where it stands.
    pub fn state(&self) -> InviteState {
        self.state
    }

    /// A response with our branch and CSeq method INVITE.
    pub fn response(&mut self, now: Instant, code: u16) -> Received {
        use InviteState::*;
        match (self.state, code) {
            (Calling | Proceeding, 100..=199) => {
                self.schedule.timers.clear(Timer::Retransmit);
                if self.state == Calling {
                    self.state = Proceeding;
                    // Timer C replaces Timer B, unless a CANCEL already bounds the wait.
                    if self.cancel != Cancel::Sent {
                        self.schedule
                            .timers
                            .set(Timer::GiveUp, now + self.waits.ring);
                    }
                }
                if code == 100 {
                    Received::Trying
                } else {
                    Received::Provisional
                }
            }
            (Calling | Proceeding, 200..=299) => {
                self.schedule.stop();
                self.state = Accepted;
                self.schedule
                    .timers
                    .set(Timer::Linger, now + self.t.timeout());
                Received::Final
            }
            (Calling | Proceeding, 300..) => {
                self.schedule.stop();
                if self.reliable {
                    self.state = Terminated;
                } else {
                    self.state = Completed;
                    self.schedule.timers.set(Timer::Linger, now + TIMER_D);
                }
                Received::Final
            }
            (Completed, 300..) => Received::FinalAgain,
            (Accepted, 200..=299) => Received::Accepted,
            _ => Received::Stray,
        }
    }

    /// The caller gave up: true when a CANCEL is to be sent now. Before any provisional
    /// response it is held, and [`UacInvite::cancel_due`] says when to send it (§9.1).
    pub fn cancel(&mut self, now: Instant) -> bool {
        match (self.state, self.cancel) {
            (InviteState::Calling, Cancel::None) => {
                self.cancel = Cancel::Held;
                false
            }
            (InviteState::Proceeding, Cancel::None) => {
                self.sent_cancel(now);
                true
            }
            _ => false,
        }
    }

    /// True once, when a held CANCEL may go (a provisional response came).
    pub fn cancel_due(&mut self, now: Instant) -> bool {
        if self.cancel == Cancel::Held && self.state == InviteState::Proceeding {
            self.sent_cancel(now);
            return true;
        }
        false
    }

    fn sent_cancel(&mut self, now: Instant) {
        self.cancel = Cancel::Sent;
        // The server owes a 487; past 64·T1 the transaction is over (§9.1).
        self.schedule
            .timers
            .set(Timer::GiveUp, now + self.t.timeout());
    }

    /// When [`UacInvite::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.schedule.poll_timeout()
    }

    /// Advances its timers.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<InviteFired> {
        if self.schedule.timers.fired(Timer::Linger, now) {
            self.state = InviteState::Terminated;
            return None;
        }
        match self.schedule.handle_timeout(now)? {
            Fired::Retransmit => Some(InviteFired::Retransmit),
            Fired::TimedOut if self.state == InviteState::Calling => {
                self.state = InviteState::Terminated;
                Some(InviteFired::NoAnswer)
            }
            Fired::TimedOut if self.cancel == Cancel::Sent => {
                self.state = InviteState::Terminated;
                None
            }
            Fired::TimedOut => {
                self.sent_cancel(now);
                Some(InviteFired::NoFinal)
            }
        }
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

    fn invite(t0: Instant, reliable: bool) -> UacInvite {
        let waits = InviteWaits {
            answer: Duration::from_secs(2),
            ring: Duration::from_secs(60),
        };
        UacInvite::new(
            t0,
            b"INVITE".to_vec(),
            "z9hG4bK3".into(),
            reliable,
            SipTimers::default(),
            waits,
        )
    }

    #[test]
    fn invite_retransmits_on_timer_a_until_timer_b() {
        let t0 = Instant::now();
        let mut tsx = invite(t0, false);
        let mut at = Vec::new();
        while let Some(now) = tsx.poll_timeout() {
            at.push(((now - t0).as_millis(), tsx.handle_timeout(now)));
        }
        assert_eq!(
            at,
            [
                (500, Some(InviteFired::Retransmit)),
                (1500, Some(InviteFired::Retransmit)),
                (2000, Some(InviteFired::NoAnswer)),
            ]
        );
        assert_eq!(tsx.state(), InviteState::Terminated);
        assert_eq!(tsx.response(t0, 200), Received::Stray, "too late");

        let tcp = invite(t0, true);
        assert_eq!(
            tcp.poll_timeout(),
            Some(t0 + Duration::from_secs(2)),
            "no Timer A"
        );
    }

    #[test]
    fn a_provisional_stops_timer_a_and_timer_c_asks_for_a_cancel() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut tsx = invite(t0, false);
        assert_eq!(tsx.response(t0, 100), Received::Trying);
        assert_eq!(tsx.response(t0 + s(1), 180), Received::Provisional);
        assert_eq!(tsx.state(), InviteState::Proceeding);
        assert_eq!(
            tsx.poll_timeout(),
            Some(t0 + s(60)),
            "Timer C from the first provisional"
        );
        assert_eq!(tsx.handle_timeout(t0 + s(60)), Some(InviteFired::NoFinal));
        // It waits on for the 487, 64·T1 at most.
        assert_eq!(tsx.poll_timeout(), Some(t0 + s(92)));
        assert_eq!(tsx.response(t0 + s(61), 487), Received::Final);
        assert_eq!(tsx.state(), InviteState::Completed);
        assert_eq!(
            tsx.response(t0 + s(62), 487),
            Received::FinalAgain,
            "ACK it again"
        );
        assert_eq!(tsx.poll_timeout(), Some(t0 + s(93)), "Timer D: 32 s");
        assert_eq!(tsx.handle_timeout(t0 + s(93)), None);
        assert_eq!(tsx.state(), InviteState::Terminated);
        assert_eq!(tsx.poll_timeout(), None);
    }

    #[test]
    fn a_cancel_waits_for_a_provisional() {
        let t0 = Instant::now();
        let mut tsx = invite(t0, false);
        assert!(!tsx.cancel(t0), "no provisional yet: held");
        assert!(!tsx.cancel_due(t0));
        assert_eq!(tsx.response(t0, 100), Received::Trying);
        assert!(tsx.cancel_due(t0), "now it may go");
        assert!(!tsx.cancel_due(t0), "once");
        assert!(!tsx.cancel(t0), "and not twice");

        let mut ringing = invite(t0, false);
        ringing.response(t0, 183);
        assert!(ringing.cancel(t0), "after a provisional: at once");
    }

    #[test]
    fn a_2xx_is_accepted_and_its_retransmissions_passed_on() {
        let t0 = Instant::now();
        let mut tsx = invite(t0, false);
        assert_eq!(tsx.response(t0, 200), Received::Final);
        assert_eq!(tsx.state(), InviteState::Accepted);
        assert_eq!(tsx.response(t0, 200), Received::Accepted);
        assert_eq!(tsx.response(t0, 486), Received::Stray);
        assert_eq!(tsx.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        assert_eq!(tsx.handle_timeout(t0 + Duration::from_secs(32)), None);
        assert_eq!(tsx.state(), InviteState::Terminated);

        let mut tcp = invite(t0, true);
        assert_eq!(tcp.response(t0, 503), Received::Final);
        assert_eq!(tcp.state(), InviteState::Terminated, "no Timer D on TCP");
    }
}
