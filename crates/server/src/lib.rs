//! The Boxless messaging server: answers forwarded calls, plays the greeting, records,
//! stores durably and queues the SMS; answers calls to its link numbers and plays the
//! messages. Admission ([`admission`]), the caller's leg ([`leg`]) and the two call
//! machines ([`deposit`], [`retrieval`], held as a [`call::CallFlow`]) and the menu
//! ([`menu`]) are sans-IO; [`driver`] runs them on tokio sockets.
#![warn(missing_docs)]

pub mod admission;
pub mod call;
pub mod deposit;
pub mod driver;
mod intake;
pub mod leg;
pub mod menu;
pub mod retrieval;
mod shard;

pub use call::{CallFlow, CallSettings, EndReason};
pub use driver::MessagingServer;

#[cfg(test)]
mod harness;
