//! filtermail-transport: Postfix's default transport (LMTP) for mail to
//! other domains. It delivers to other chatmail relays over HTTPS
//! `/mxdeliv` or SMTP with mandatory STARTTLS, with one global bound on
//! deliveries in flight and an immediate 4xx for destinations that are
//! over-queued or unreachable, so that a dead destination can neither
//! exhaust memory nor hold up the others.

mod connect;
mod daemon;
mod deliver;
mod destination;
mod handler;
mod https_out;
pub mod internal;
mod metrics;
mod mx;
mod reply;
mod smtp_out;
mod state;
mod tls;

pub use daemon::{run, run_daemon, transport};
pub use destination::Destination;
pub use handler::{Limits, Transport};
pub use metrics::{FastTempfail, Protocol, TransportMetrics};
