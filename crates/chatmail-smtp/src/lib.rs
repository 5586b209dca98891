//! SMTP and LMTP for the filtermail daemons: a server session engine that
//! hands each transaction to a [`SmtpHandler`], and a client that
//! reinjects accepted mail into Postfix.

mod client;
mod command;
mod counters;
mod data;
mod line;
mod rate;
mod reply;
mod server;
mod session;
mod step;

pub use client::{
    ClientError, MAX_REPLY_BYTES, Reinjector, dot_stuff, read_reply, write_command, write_data,
};
pub use counters::{SessionCounters, reinjection_outcome};
pub use data::{DataError, DataReader};
pub use rate::MinRate;
pub use reply::{AddressRole, Reply};
pub use server::serve;
pub use session::{
    DataOutcome, Envelope, Protocol, SessionConfig, ShareBy, SmtpHandler, run_session,
};
