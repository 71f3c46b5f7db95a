//! SIP for Boxless with no I/O: zero-copy parsing, stream framing, printing, and the
//! transaction and dialog state a UAS and the router's proxy need (time is an argument, output is returned).
#![warn(missing_docs)]

pub mod dialog;
pub mod frame;
pub mod hdr;
mod lex;
pub mod owned;
pub mod parse;
pub mod parties;
pub mod session;
pub mod tsx;
pub mod write;

pub use dialog::{Dialog, DialogError, DialogId, Local};
pub use frame::{Frame, frame};
pub use hdr::{CSeq, NameAddr, Uri, Via};
pub use owned::OwnedMessage;
pub use parse::{Defect, Error, Header, Message, Method, StartLine};
pub use tsx::{
    Fired, InviteFired, InviteState, InviteWaits, Received, SipTimers, UacInvite, UacNonInvite,
    UasInvite,
};
pub use write::{Request, response_target, stateless_tag, write_request, write_response};
