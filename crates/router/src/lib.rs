//! The Boxless router: examines the status the messaging servers report, picks an
//! available one and directs the call there, by `302` (redirect mode) or by forwarding
//! with failover (proxy mode). Calls to a link number go to the server that owns it.
#![warn(missing_docs)]

pub mod decide;
pub mod driver;
pub mod policy;
pub mod probe;
pub mod proxy;
mod relay;

pub use decide::{RouterCore, Verdict};
pub use driver::{RouterSettings, start};
