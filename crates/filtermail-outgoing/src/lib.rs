//! filtermail-outgoing: Postfix's before-queue filter for mail that relay
//! users submit. It rate-limits senders, checks that the From header is
//! the authenticated envelope sender, enforces the encryption policy,
//! drops disabled recipients, and reinjects what passes into Postfix,
//! answering the client only with Postfix's own answer.

mod filter;

pub use filter::{OutgoingFilter, run, run_daemon};
