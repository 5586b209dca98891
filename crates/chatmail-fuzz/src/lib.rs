//! Fuzzing of the parsers our daemons run on what peers send: SMTP and
//! LMTP sessions (command lines, DATA framing), replies of remote SMTP
//! servers, `/mxdeliv` request envelopes and bodies, Dovecot dict
//! connections, the encryption policy on MIME and OpenPGP (mail-parser
//! and our packet-header walk), DKIM input (mail-auth), chatmail.ini and
//! envelope addresses.
//!
//! The toolchain is stable Rust, where cargo-fuzz (nightly) is not
//! available: each target is a plain function over bytes, driven by a
//! small mutation engine seeded with real inputs (the test mails, SMTP and
//! dict transcripts, the example chatmail.ini). A panic or an input that
//! takes too long is a finding; findings are saved, and each one becomes
//! a file in `regressions/<target>/` that the tests replay.

pub mod campaign;
pub mod mutate;
pub mod targets;

pub use campaign::{Campaign, Finding};
pub use targets::{TARGETS, Target};
