//! filtermail-incoming: Postfix's before-queue filter for mail arriving
//! from other servers, on SMTP (behind port 25) and on HTTP `/mxdeliv`
//! (behind nginx). Both run the same checks: a usable From header, the
//! incoming encryption policy per recipient, and strict DKIM for domain
//! senders; what passes is reinjected into Postfix, with an empty reverse
//! path when the envelope sender is not the From address.

mod daemon;
mod dkim;
mod dkim_key;
mod filter;
pub mod http;
mod key_cache;
mod refused;

pub use daemon::{SKIP_DKIM_ENV, run, run_daemon};
pub use dkim::{DkimFailure, DkimVerifier};
pub use filter::{IncomingFilter, OriginCheck};
