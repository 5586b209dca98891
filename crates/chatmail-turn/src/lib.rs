//! chatmail-turn: the TURN server (RFC 8656, UDP) Delta Chat's calls use
//! when peers cannot reach each other directly. Built on webrtc-rs's
//! `turn` crate, with what a public relay needs around it: credentials
//! signed by a random secret of this relay (handed to chatmail-metadata
//! on a unix socket), a filter that keeps allocations away from the
//! relay's own and internal networks, and bounds on allocations,
//! bandwidth and lifetime.

pub mod auth;
pub mod credentials;
pub mod daemon;
pub mod gate;
pub mod metrics;
pub mod peers;
pub mod relay;
pub mod secret;

pub use daemon::run;
pub use metrics::TurnMetrics;
