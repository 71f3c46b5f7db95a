//! The whole system on loopback, each test with its own `serve` in-process, its own ports
//! and a fake SMSC, calls placed with the test phone. One test binary, so that the tests
//! run side by side (most of their time is calls played in real time; `.cargo/config.toml`
//! gives the harness threads for it) and the application is linked once for all of them.
//! `tests/head_of_line.rs` stays a binary of its own: it times answers to 20 ms.

#[path = "../common/mod.rs"]
mod common;

mod e2e;
mod greetings;
mod transcripts;
mod trust;
