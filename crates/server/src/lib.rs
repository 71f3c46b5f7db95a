//! The Boxless messaging server: answers forwarded calls, plays the greeting, records,
//! stores durably and queues the SMS; answers calls to its link numbers and plays the
//! messages. Admission ([`admission`]), the caller's leg ([`leg`]) and the two call
//! machines ([`deposit`], [`retrieval`], held as a [`call::CallFlow`]), the menu
//! ([`menu`]) and the SIP endpoint ([`endpoint`]: what each message is for) are sans-IO;
//! [`driver`] owns the SIP sockets, and each call runs in its own task.
#![warn(missing_docs)]

pub mod admission;
pub mod call;
pub mod deposit;
pub mod driver;
pub mod endpoint;
mod flow;
mod greetings;
mod intake;
pub mod leg;
pub mod menu;
mod notices;
pub mod replication;
pub mod retrieval;
mod server;
mod shard;
pub mod takeover;
mod task;
mod transcripts;
mod upkeep;
mod wire;

pub use call::{CallFlow, CallSettings, EndReason, FrameGrid};
pub use server::MessagingServer;

#[cfg(test)]
mod harness;
