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

/// Free disk below this makes a server unavailable (bytes).
pub const MIN_FREE_DISK: u64 = 64 * 1024 * 1024;

/// The status of one server.
#[derive(Debug)]
pub struct ServerSlot {
    /// Server id.
    pub id: String,
    /// Its SIP address.
    pub sip: SocketAddr,
    /// Its link numbers.
    pub pool: LinkPool,
    state: AtomicU8,
    active: AtomicU32,
    capacity: AtomicU32,
    free_disk: AtomicU64,
    notifier_ok: AtomicBool,
    last_update_ms: AtomicU64,
    probe_down: AtomicBool,
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
}

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
            pool,
            state: AtomicU8::new(2),
            active: AtomicU32::new(0),
            capacity: AtomicU32::new(capacity),
            free_disk: AtomicU64::new(0),
            notifier_ok: AtomicBool::new(false),
            last_update_ms: AtomicU64::new(0),
            probe_down: AtomicBool::new(false),
        }
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
        }
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

/// Every server's slot, in configuration order.
#[derive(Debug, Default)]
pub struct StatusBoard {
    /// The slots.
    pub slots: Vec<ServerSlot>,
}

impl StatusBoard {
    /// The slot whose pool holds `n`, if any (retrieval routing).
    pub fn owner_of(&self, n: PhoneNumber) -> Option<usize> {
        self.slots.iter().position(|s| s.pool.contains(n))
    }

    /// A slot by id.
    pub fn by_id(&self, id: &str) -> Option<&ServerSlot> {
        self.slots.iter().find(|s| s.id == id)
    }
}
