//! The Dovecot dict protocol as Dovecot 2.3 speaks it over `proxy:` dict
//! sockets, and a server that answers it through a [`DictHandler`].
//!
//! Layers, from the wire inwards:
//! - [`escape`]: Dovecot's tab-escaping of fields;
//! - [`Command`] / [`Reply`]: one protocol line decoded / encoded, no I/O;
//! - [`Session`]: per-connection state (hello, open transactions) turning
//!   commands into handler calls and replies;
//! - [`serve`]: the unix-socket listener and connection loop.

mod command;
pub mod daemon;
pub mod escape;
mod handler;
mod listener;
mod reply;
mod server;
mod session;

pub use command::{Command, CommandError, IterateFlags};
pub use handler::{Change, DictError, DictHandler, Transaction};
pub use listener::{DEFAULT_BACKLOG, SocketOptions, bind};
pub use reply::Reply;
pub use server::{ServerLimits, serve, serve_connection};
pub use session::{Outcome, Session, SessionLimits};
