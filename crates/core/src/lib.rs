//! Boxless domain types shared by every part: phone and link numbers, configuration,
//! server status, clock and randomness helpers, web playback tokens.
#![warn(missing_docs)]

pub mod acl;
pub mod config;
pub mod number;
pub mod recipient;
pub mod status;
pub mod util;
pub mod web;

pub use acl::{Admission, FloodGuard, Gate, PeerFilter};
pub use config::{Checked, Config, ConfigError, RouterMode, ServerSpec};
pub use number::{LinkPool, Numbering, PhoneNumber};
pub use status::{ControlHealth, ControlLink, ServerSlot, ServerState, StatusBoard, StatusView};
pub use util::{Rng, now_ms, rfc3339};
