//! doveauth: the Dovecot passdb and userdb of a chatmail relay, served over
//! the dict protocol. Accounts are mailbox directories; a login with an
//! unknown address creates the account when the creation rules allow it.

mod handler;
pub mod key;
mod metrics;
pub mod migrate;
pub mod password;
pub mod policy;
pub mod system;

pub use handler::AuthDict;
pub use metrics::AuthMetrics;
