//! SIP messages for Boxless: zero-copy parsing, stream framing and printing, with no I/O.
#![warn(missing_docs)]

pub mod frame;
pub mod hdr;
pub mod parse;
pub mod parties;
pub mod write;

pub use frame::{Frame, frame};
pub use hdr::{CSeq, NameAddr, Uri, Via};
pub use parse::{Defect, Error, Header, Message, Method, StartLine};
pub use write::{response_target, stateless_tag, write_response};
