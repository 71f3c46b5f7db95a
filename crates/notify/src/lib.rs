//! The Boxless notifier: SMS text and coding, the outbox retry policy, and the transports
//! (log, SMPP 3.4; SMTP; HTTPS webhooks) driven by two workers per server.
#![warn(missing_docs)]

pub mod backoff;
pub mod email;
pub mod limits;
pub mod peers;
pub mod receipt;
pub mod sender;
pub mod spend;
mod start;
pub mod text;
pub mod webhook;
pub mod worker;

pub use backoff::Backoff;
pub use limits::Limits;
pub use peers::ReceiptBook;
pub use sender::{SendError, Sender, Smpp, SmppSettings};
pub use spend::SpendPolicy;
pub use start::{NoticeTexts, StartError, start};
pub use worker::{Notices, NotifierHandle};
