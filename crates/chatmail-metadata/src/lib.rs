//! chatmail-metadata: the Dovecot dict behind IMAP METADATA, storing
//! Delta Chat's push device tokens and serving server keys, and the
//! persistent push notifier that tells the notification service about
//! new messages.

mod dict;
mod metrics;
pub mod notifier;
mod server_keys;
mod store;

pub use dict::MetadataDict;
pub use metrics::{Dropped, MetadataMetrics};
pub use notifier::{Notifier, redact};
pub use server_keys::ServerKeys;
pub use store::TokenStore;
