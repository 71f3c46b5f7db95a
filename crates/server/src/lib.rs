//! The Boxless messaging server: answers forwarded calls, plays the greeting, records,
//! stores durably and queues the SMS. The call flow is a sans-IO machine ([`deposit`]);
//! [`driver`] runs it on tokio sockets.
#![warn(missing_docs)]

pub mod deposit;
pub mod driver;
pub mod menu;

pub use deposit::{Deposit, DepositSettings, EndReason};
pub use driver::MessagingServer;
