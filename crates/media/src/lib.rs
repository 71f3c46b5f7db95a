//! Boxless media, sans-IO: SDP, RTP, G.711, prompts and audio maths.
#![warn(missing_docs)]

pub mod audio;
pub mod dtmf;
pub mod g711;
pub mod prompts;
pub mod rtp;
pub mod sdp;
pub mod upload;

pub use dtmf::DtmfDetector;
pub use g711::{Codec, Law};
pub use prompts::Prompts;
pub use rtp::{FRAME, Pending, Received, RtpReceiver, RtpSender};
pub use sdp::{Direction, Negotiated, SdpError, negotiate, write_sdp};
