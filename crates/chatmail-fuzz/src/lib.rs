//! Fuzzing of the parsers our daemons run on what peers send: SMTP and
//! LMTP sessions (command lines, DATA framing), replies of remote SMTP
//! servers, `/mxdeliv` request envelopes and bodies, Dovecot dict
//! connections, the encryption policy on MIME and OpenPGP (mail-parser
//! and our packet-header walk), its agreement with Delta Chat's MIME
//! parser, DKIM input (mail-auth), chatmail.ini and envelope addresses.
//!
//! Each target is a plain function over bytes ([`TARGETS`]). The engine
//! is libFuzzer, coverage-guided, through cargo-fuzz on our stable
//! toolchain (`fuzz/`, one binary per target; `tests/fuzz` runs them),
//! seeded with real inputs: the test mails, SMTP and dict transcripts, the
//! example chatmail.ini (`chatmail-fuzz seeds DIR` writes them). A panic,
//! a timeout or running out of memory is a finding; each finding becomes
//! a file in `regressions/<target>/` that `cargo test` replays.

pub mod targets;

pub use targets::{TARGETS, Target};

/// Runs the target called `name` on `input`: what each fuzz binary does.
///
/// # Panics
/// When there is no such target, and when the target finds something.
pub fn run_target(name: &str, input: &[u8]) {
    let Some(target) = targets::target(name) else {
        panic!("no fuzz target {name}");
    };
    (target.run)(input);
}
