//! Every port of one local relay, derived from a base so that relays on
//! different loopback addresses can use the same numbers.

use anyhow::{Context, Result};
use chatmail_config::MetricsDaemon;
use chatmail_configure::PublicPorts;

#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub public: PublicPorts,
    pub filter_outgoing: u16,
    pub filter_incoming: u16,
    pub filter_incoming_http: u16,
    pub transport_lmtp: u16,
    pub reinject: u16,
    pub reinject_incoming: u16,
    /// The metrics endpoints, in the order of [`MetricsDaemon::ALL`]
    /// (`base + 9151` ...).
    pub metrics: [u16; MetricsDaemon::ALL.len()],
}

impl Ports {
    /// Standard port N becomes `base + N`; the internal ones
    /// `base + 1025`, `base + 1080`, ... (10025 and 10080 on a real relay).
    pub fn from_base(base: u16) -> Result<Self> {
        let at = |offset: u16| {
            base.checked_add(offset)
                .with_context(|| format!("--port-base {base} leaves no room for port +{offset}"))
        };
        Ok(Self {
            public: PublicPorts::offset(base)?,
            filter_outgoing: at(1080)?,
            filter_incoming: at(1081)?,
            filter_incoming_http: at(1082)?,
            transport_lmtp: at(1083)?,
            reinject: at(1025)?,
            reinject_incoming: at(1026)?,
            metrics: [
                at(9151)?,
                at(9152)?,
                at(9153)?,
                at(9154)?,
                at(9155)?,
                at(9156)?,
            ],
        })
    }
}
