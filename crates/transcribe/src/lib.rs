//! Transcripts from the operator's speech recogniser: the protocol core, without I/O.
//! The route every recogniser Boxless targets speaks is the OpenAI-compatible
//! `POST /v1/audio/transcriptions` (whisper.cpp's server, speaches / faster-whisper-server,
//! LocalAI, vLLM):
//!
//! - [`request`] builds its `multipart/form-data` body (RFC 7578): the WAV as stored,
//!   `model`, `language`, `response_format`;
//! - [`reply`] reads its answer (`verbose_json`, or `json` when the service has no
//!   segments), drops what the recogniser itself doubts (segments it judges silence,
//!   or decoded with very low confidence) and cleans the text before it goes near an SMS,
//!   an e-mail header or a page: a hostile or broken service cannot inject control
//!   characters, direction overrides or megabytes;
//! - [`breaker`] decides whether to ask at all: after repeated failures, or a refused
//!   connection, notices stop waiting for a while.
//!
//! Time is an input (milliseconds), randomness too (the multipart boundary): nothing
//! here blocks or reads a clock.

pub mod breaker;
pub mod reply;
pub mod request;

pub use breaker::Breaker;
pub use reply::{Outcome, Reply, ReplyError};
