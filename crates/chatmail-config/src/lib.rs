//! The relay's configuration file (`chatmail.ini`) and the mailbox directory
//! layout that every chatmail daemon shares.
//!
//! Parsing is pure: [`Config::from_ini_str`] turns text into typed values and
//! reports the first bad key. [`Config::load`] adds the file access and the
//! one-time warning about keys we do not know.

mod address;
mod config;
mod domain;
mod error;
mod mailbox;
mod secret;
mod size;
mod value;

pub use address::{AddressRefusal, EnvelopeAddress, canonical_address, is_account_name};
pub use config::{
    Config, DEFAULT_CONFIG_PATH, LogConfig, LogStorage, MetricsDaemon, SiteConfig, TurnConfig,
};
pub use domain::MailDomain;
pub use error::{AddressError, ConfigError};
pub use mailbox::{Mailbox, Mailboxes, day_start, write_atomic};
pub use secret::ensure_secret;
pub use size::parse_size;
