//! The one way Boxless's sans-IO machines keep time (ARCHITECTURE.md, "Timers").
//!
//! A machine never reads a clock: it answers `poll_timeout() -> Option<Instant>` and acts
//! in `handle_timeout(now)`, as quinn-proto and str0m do. Inside, its deadlines have names
//! in a [`TimerTable`]; a holder of many machines (the router's proxy) keeps when each
//! wants to run in a [`TimerQueue`]. A driver sleeps until the earliest and calls back.

mod queue;
mod table;

pub use queue::TimerQueue;
pub use table::TimerTable;
