//! The Boxless messaging server: answers forwarded calls, plays the greeting, records,
//! stores durably and queues the SMS; answers calls to its link numbers and plays the
//! messages. The call flow ([`call`]) and the retrieval menu ([`menu`]) are sans-IO
//! machines; [`driver`] runs them on tokio sockets.
#![warn(missing_docs)]

pub mod call;
pub mod driver;
pub mod menu;

pub use call::{CallFlow, CallSettings, EndReason};
pub use driver::MessagingServer;
