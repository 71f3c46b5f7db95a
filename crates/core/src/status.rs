//! Server status as the router sees it, shared without locks.
//!
//! Each server owns one [`ServerSlot`] and writes it; routers only read. With the local
//! backend both live in one process; with NATS a subscriber writes the slots.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::number::{LinkPool, PhoneNumber};

/// A server's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Taking calls.
    Up,
    /// Finishing its calls; takes no new ones.
    Draining,
    /// Not running (or nothing heard).
    Down,
}

impl ServerState {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Up => "up",
            ServerState::Draining => "draining",
            ServerState::Down => "down",
        }
    }

    fn from_u8(v: u8) -> ServerState {
        match v {
            0 => ServerState::Up,
            1 => ServerState::Draining,
            _ => ServerState::Down,
        }
    }
}

/// The link to the control plane (NATS) as the router sees it.
#[derive(Debug)]
pub struct ControlLink {
    connected: AtomicBool,
    /// When the link went down (ms since the UNIX epoch); 0 while it is up.
    down_since_ms: AtomicU64,
    grace_ms: u64,
}

impl Default for ControlLink {
    /// The local backend: always connected.
    fn default() -> Self {
        ControlLink {
            connected: AtomicBool::new(true),
            down_since_ms: AtomicU64::new(0),
            grace_ms: 0,
        }
    }
}

/// What a process tells operators about its control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlHealth {
    /// Connected (or in-process).
    Ok,
    /// Unreachable for `down_for_ms`; statuses stay usable for `grace_left_ms` more.
    Degraded {
        /// How long the link has been down.
        down_for_ms: u64,
        /// How much longer the last known status is routed on (0: no longer).
        grace_left_ms: u64,
    },
}

impl ControlLink {
    /// A NATS link, down until it connects; outages are bridged for `grace_ms`.
    pub fn nats(grace_ms: u64, now_ms: u64) -> ControlLink {
        ControlLink {
            connected: AtomicBool::new(false),
            down_since_ms: AtomicU64::new(now_ms.max(1)),
            grace_ms,
        }
    }

    /// The link dropped at `now_ms`.
    pub fn down(&self, now_ms: u64) {
        if self.connected.swap(false, Relaxed) {
            self.down_since_ms.store(now_ms.max(1), Relaxed);
        }
    }

    /// The link is up at `now_ms`; returns when it had gone down if the outage is still
    /// within its grace (the statuses frozen since then can be thawed).
    fn up(&self, now_ms: u64) -> Option<u64> {
        if self.connected.swap(true, Relaxed) {
            return None;
        }
        let since = self.down_since_ms.swap(0, Relaxed);
        (since != 0 && now_ms < since.saturating_add(self.grace_ms)).then_some(since)
    }

    /// True while connected.
    pub fn connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    /// See [`StatusBoard::status_time`].
    pub fn status_time(&self, now_ms: u64) -> u64 {
        if self.connected.load(Relaxed) {
            return now_ms;
        }
        let since = self.down_since_ms.load(Relaxed);
        if since != 0 && now_ms < since.saturating_add(self.grace_ms) {
            since.min(now_ms)
        } else {
            now_ms
        }
    }

    /// Health for `/healthz`, `/metrics` and `boxless status`.
    pub fn health(&self, now_ms: u64) -> ControlHealth {
        if self.connected.load(Relaxed) {
            return ControlHealth::Ok;
        }
        let since = self.down_since_ms.load(Relaxed);
        ControlHealth::Degraded {
            down_for_ms: now_ms.saturating_sub(since),
            grace_left_ms: since.saturating_add(self.grace_ms).saturating_sub(now_ms),
        }
    }
}

/// Free disk below this makes a server unavailable (bytes).
pub const MIN_FREE_DISK: u64 = 64 * 1024 * 1024;

/// The status of one server.
#[derive(Debug)]
pub struct ServerSlot {
    /// Server id.
    pub id: String,
    /// Its SIP address.
    pub sip: SocketAddr,
    /// Its SIP-over-TLS address, if it has one.
    pub sip_tls: Option<SocketAddr>,
    /// Its link numbers.
    pub pool: LinkPool,
    state: AtomicU8,
    active: AtomicU32,
    capacity: AtomicU32,
    free_disk: AtomicU64,
    notifier_ok: AtomicBool,
    last_update_ms: AtomicU64,
    probe_down: AtomicBool,
    /// Messages not yet in JetStream; [`NOT_REPLICATING`] when it does not replicate.
    unreplicated: AtomicU64,
    /// It answers its own link numbers (false while a server that comes back catches up
    /// with what the server that took it over did meanwhile).
    serves_self: AtomicBool,
    /// The other servers whose link numbers and web links it answers (it took them over):
    /// bit `i` is the board's slot `i`.
    serves_others: AtomicU64,
    /// Share of new calls (0: standby); from the configuration.
    pub weight: u32,
}

/// A consistent-enough copy of a slot for decisions and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusView {
    /// Lifecycle state as reported.
    pub state: ServerState,
    /// Calls in progress.
    pub active: u32,
    /// Most concurrent calls.
    pub capacity: u32,
    /// Free bytes on its data disk.
    pub free_disk: u64,
    /// True while its notifier can send.
    pub notifier_ok: bool,
    /// When the status was last written (ms since the UNIX epoch).
    pub last_update_ms: u64,
    /// The router's own SIP OPTIONS probes find it dead (never published).
    pub probe_down: bool,
    /// Messages not yet in JetStream (`[store] replication`); None: it does not replicate.
    pub unreplicated: Option<u64>,
}

/// A slot's `unreplicated` when its server does not replicate.
const NOT_REPLICATING: u64 = u64::MAX;

impl StatusView {
    /// A server that is up, idle, with room and a healthy notifier, reported at `at_ms`.
    pub fn up(capacity: u32, at_ms: u64) -> StatusView {
        StatusView {
            state: ServerState::Up,
            active: 0,
            capacity,
            free_disk: u64::MAX,
            notifier_ok: true,
            last_update_ms: at_ms,
            probe_down: false,
            unreplicated: None,
        }
    }

    /// The selection rule: fresh, up, below capacity, enough disk, notifier healthy.
    pub fn available(&self, now_ms: u64, ttl_ms: u64) -> bool {
        self.fresh(now_ms, ttl_ms)
            && !self.probe_down
            && self.state == ServerState::Up
            && self.active < self.capacity
            && self.free_disk >= MIN_FREE_DISK
            && self.notifier_ok
    }

    /// True when the status is younger than the TTL.
    pub fn fresh(&self, now_ms: u64, ttl_ms: u64) -> bool {
        self.last_update_ms != 0 && now_ms.saturating_sub(self.last_update_ms) < ttl_ms
    }

    /// The state an operator should see: a stale status reads as down.
    pub fn effective_state(&self, now_ms: u64, ttl_ms: u64) -> ServerState {
        if self.fresh(now_ms, ttl_ms) && !self.probe_down {
            self.state
        } else {
            ServerState::Down
        }
    }
}

impl ServerSlot {
    /// A slot that reads as down until its server writes it.
    pub fn new(id: &str, sip: SocketAddr, pool: LinkPool, capacity: u32) -> ServerSlot {
        ServerSlot {
            id: id.to_string(),
            sip,
            sip_tls: None,
            pool,
            state: AtomicU8::new(2),
            active: AtomicU32::new(0),
            capacity: AtomicU32::new(capacity),
            free_disk: AtomicU64::new(0),
            notifier_ok: AtomicBool::new(false),
            last_update_ms: AtomicU64::new(0),
            probe_down: AtomicBool::new(false),
            unreplicated: AtomicU64::new(NOT_REPLICATING),
            serves_self: AtomicBool::new(true),
            serves_others: AtomicU64::new(0),
            weight: 1,
        }
    }

    /// The same slot with `weight` (see `[[servers]] weight`).
    pub fn with_weight(mut self, weight: u32) -> ServerSlot {
        self.weight = weight;
        self
    }

    /// The same slot with a SIP-over-TLS address.
    pub fn with_tls(mut self, addr: Option<SocketAddr>) -> ServerSlot {
        self.sip_tls = addr;
        self
    }

    /// Reads the slot.
    pub fn view(&self) -> StatusView {
        StatusView {
            state: ServerState::from_u8(self.state.load(Relaxed)),
            active: self.active.load(Relaxed),
            capacity: self.capacity.load(Relaxed),
            free_disk: self.free_disk.load(Relaxed),
            notifier_ok: self.notifier_ok.load(Relaxed),
            last_update_ms: self.last_update_ms.load(Relaxed),
            probe_down: self.probe_down.load(Relaxed),
            unreplicated: Some(self.unreplicated.load(Relaxed)).filter(|&n| n != NOT_REPLICATING),
        }
    }

    /// How many of its messages JetStream does not have yet (None: it does not replicate).
    pub fn set_unreplicated(&self, n: Option<u64>) {
        self.unreplicated
            .store(n.unwrap_or(NOT_REPLICATING), Relaxed);
    }

    /// Whose link numbers it answers: its own (`me`), and those of the board's slots in
    /// the mask `others` (bit `i`: slot `i`; servers it took over).
    pub fn set_serves(&self, me: bool, others: u64) {
        self.serves_self.store(me, Relaxed);
        self.serves_others.store(others, Relaxed);
    }

    /// See [`ServerSlot::set_serves`].
    pub fn serves(&self) -> (bool, u64) {
        (
            self.serves_self.load(Relaxed),
            self.serves_others.load(Relaxed),
        )
    }

    /// The router's probes find the server dead (true) or alive again (false).
    pub fn set_probe_down(&self, down: bool) {
        self.probe_down.store(down, Relaxed);
    }

    /// Writes a whole status (the router's probe verdict is its own and stays).
    pub fn publish(&self, v: StatusView) {
        self.state.store(v.state as u8, Relaxed);
        self.active.store(v.active, Relaxed);
        self.capacity.store(v.capacity, Relaxed);
        self.free_disk.store(v.free_disk, Relaxed);
        self.notifier_ok.store(v.notifier_ok, Relaxed);
        self.last_update_ms.store(v.last_update_ms, Relaxed);
        self.set_unreplicated(v.unreplicated);
    }

    /// A server's periodic report; active calls are counted by [`ServerSlot::call_started`].
    pub fn heartbeat(&self, state: ServerState, free_disk: u64, notifier_ok: bool, now_ms: u64) {
        self.state.store(state as u8, Relaxed);
        self.free_disk.store(free_disk, Relaxed);
        self.notifier_ok.store(notifier_ok, Relaxed);
        self.last_update_ms.store(now_ms, Relaxed);
    }

    /// One more call in progress (returns the new count).
    pub fn call_started(&self) -> u32 {
        self.active.fetch_add(1, Relaxed) + 1
    }

    /// One call fewer.
    pub fn call_ended(&self) {
        let _ = self
            .active
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
    }
}

/// Every server's slot, in configuration order, and the state of the link that fills them.
#[derive(Debug, Default)]
pub struct StatusBoard {
    /// The slots.
    pub slots: Vec<ServerSlot>,
    /// The control plane's link (always up with the local backend).
    pub control: ControlLink,
}

impl StatusBoard {
    /// A board over `slots` with an in-process (always connected) control plane.
    pub fn new(slots: Vec<ServerSlot>) -> StatusBoard {
        StatusBoard {
            slots,
            control: ControlLink::default(),
        }
    }

    /// The time statuses are judged at: `now`, except while the control plane is down and
    /// the outage is younger than its grace, when time stands still at the outage's start
    /// (the last known status stays as fresh as it was when the link went down).
    pub fn status_time(&self, now_ms: u64) -> u64 {
        self.control.status_time(now_ms)
    }

    /// The control plane is back at `now_ms`: statuses that were frozen during a short
    /// outage age again from where they stood, so that none goes stale in the moment
    /// before the servers' fresh statuses arrive.
    pub fn control_up(&self, now_ms: u64) {
        let Some(since) = self.control.up(now_ms) else {
            return;
        };
        let outage = now_ms.saturating_sub(since);
        for s in &self.slots {
            let _ = s.last_update_ms.fetch_update(Relaxed, Relaxed, |t| {
                (t != 0 && t <= since).then(|| (t + outage).min(now_ms))
            });
        }
    }
    /// The slot whose pool holds `n`, if any (retrieval routing).
    pub fn owner_of(&self, n: PhoneNumber) -> Option<usize> {
        self.slots.iter().position(|s| s.pool.contains(n))
    }

    /// A slot by id.
    pub fn by_id(&self, id: &str) -> Option<&ServerSlot> {
        self.slots.iter().find(|s| s.id == id)
    }

    /// True when `n` is a link number slot `me` answers: its own, or one of a server it
    /// took over.
    pub fn answers(&self, me: usize, n: PhoneNumber) -> bool {
        let Some(slot) = self.slots.get(me) else {
            return false;
        };
        if slot.pool.contains(n) {
            return true;
        }
        let others = slot.serves().1;
        others != 0
            && self
                .slots
                .iter()
                .enumerate()
                .any(|(i, s)| i < 64 && others & (1 << i) != 0 && s.pool.contains(n))
    }

    /// The slot that answers slot `owner`'s link numbers and web links now: the owner
    /// itself while it is up and serves them, else a server that is up and took it over
    /// (docs/high-availability.md). None: nobody does.
    pub fn serving(&self, owner: usize, now_ms: u64, ttl_ms: u64) -> Option<usize> {
        let at = self.status_time(now_ms);
        let up = |s: &ServerSlot| s.view().effective_state(at, ttl_ms) == ServerState::Up;
        let o = self.slots.get(owner)?;
        if o.serves().0 && up(o) {
            return Some(owner);
        }
        let bit = 1u64.checked_shl(owner as u32)?;
        self.slots
            .iter()
            .position(|s| s.serves().1 & bit != 0 && up(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(grace_ms: u64) -> StatusBoard {
        let slot = ServerSlot::new(
            "ms1",
            ([127, 0, 0, 1], 5070).into(),
            LinkPool::default(),
            10,
        );
        StatusBoard {
            slots: vec![slot],
            control: ControlLink::nats(grace_ms, 1_000),
        }
    }

    fn fresh_at(b: &StatusBoard, now: u64) -> bool {
        b.slots[0].view().fresh(b.status_time(now), 3_000)
    }

    #[test]
    fn an_outage_within_its_grace_keeps_the_last_status_usable() {
        let b = board(30_000);
        b.control_up(1_500);
        b.slots[0].publish(StatusView::up(10, 10_000));
        assert!(fresh_at(&b, 12_000));
        assert!(!fresh_at(&b, 13_500), "stale after the TTL while connected");
        // NATS goes away 2 s after the last status: time stands still for statuses.
        b.control.down(12_000);
        assert!(fresh_at(&b, 13_500));
        assert!(fresh_at(&b, 41_999));
        assert_eq!(
            b.control.health(20_000),
            ControlHealth::Degraded {
                down_for_ms: 8_000,
                grace_left_ms: 22_000
            }
        );
        // Back after 20 s: the status is as old as it was at the outage (2 s), and ages on.
        b.control_up(32_000);
        assert_eq!(b.control.health(32_000), ControlHealth::Ok);
        assert_eq!(b.slots[0].view().last_update_ms, 30_000);
        assert!(fresh_at(&b, 32_900));
        assert!(!fresh_at(&b, 33_000));
    }

    #[test]
    fn past_its_grace_the_last_status_goes_stale() {
        let b = board(5_000);
        b.control_up(1_500);
        b.slots[0].publish(StatusView::up(10, 10_000));
        b.control.down(11_000);
        assert!(fresh_at(&b, 15_999));
        assert!(!fresh_at(&b, 16_000));
        assert_eq!(
            b.control.health(17_000),
            ControlHealth::Degraded {
                down_for_ms: 6_000,
                grace_left_ms: 0
            }
        );
        // Coming back after the grace thaws nothing: only new statuses count.
        b.control_up(20_000);
        assert_eq!(b.slots[0].view().last_update_ms, 10_000);
        assert!(!fresh_at(&b, 20_000));
    }

    #[test]
    fn before_the_first_connection_nothing_is_known_and_health_is_degraded() {
        let b = board(30_000);
        assert!(!fresh_at(&b, 2_000));
        assert!(matches!(
            b.control.health(2_000),
            ControlHealth::Degraded { .. }
        ));
        // A second "down" while already down keeps the first outage's start.
        b.control.down(5_000);
        assert_eq!(
            b.control.health(6_000),
            ControlHealth::Degraded {
                down_for_ms: 5_000,
                grace_left_ms: 25_000
            }
        );
        assert_eq!(StatusBoard::default().control.health(9), ControlHealth::Ok);
    }

    #[test]
    fn a_server_s_numbers_go_to_whoever_serves_them() {
        let slot =
            |id: &str| ServerSlot::new(id, ([127, 0, 0, 1], 5070).into(), LinkPool::default(), 10);
        let b = StatusBoard::new(vec![slot("ms1"), slot("ms2"), slot("ms3")]);
        for s in &b.slots {
            s.publish(StatusView::up(10, 1_000));
        }
        assert_eq!(b.serving(0, 1_500, 3_000), Some(0), "its own, by default");
        // ms1 lost: nobody serves it until ms3 says it took it over.
        assert_eq!(b.serving(0, 4_500, 3_000), None);
        b.slots[1].publish(StatusView::up(10, 4_000));
        b.slots[2].publish(StatusView::up(10, 4_000));
        b.slots[2].set_serves(true, 0b001);
        assert_eq!(b.serving(0, 4_500, 3_000), Some(2));
        // ms1 back but still catching up: ms3 keeps its numbers.
        b.slots[0].publish(StatusView::up(10, 4_400));
        b.slots[0].set_serves(false, 0);
        assert_eq!(b.serving(0, 4_500, 3_000), Some(2));
        // Handed back.
        b.slots[2].set_serves(true, 0);
        b.slots[0].set_serves(true, 0);
        assert_eq!(b.serving(0, 4_500, 3_000), Some(0));
        assert_eq!(b.serving(7, 4_500, 3_000), None, "no such slot");
    }
}
