//! Which messages a chatmail relay carries: OpenPGP-encrypted mail, plus a
//! few cleartext kinds the protocol needs (SecureJoin requests, a
//! self-sent Autocrypt Setup Message, mailer-daemon reports). Pure: bytes
//! and envelope in, a [`Verdict`] out; malformed input is a verdict too.

mod ambiguity;
mod armor;
mod classify;
mod elide;
#[cfg(feature = "reference-parse")]
pub mod oracle;
mod packets;
#[cfg(any(test, feature = "reference-parse"))]
pub mod sample;
mod sender;

#[cfg(feature = "reference-parse")]
pub use classify::classify_whole;
pub use classify::{Direction, Envelope, ParsedMessage, Verdict, classify};
pub use sender::from_header_address;
