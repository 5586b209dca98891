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
    /// The iroh relay, behind nginx (3340 on a real relay).
    pub iroh_relay: u16,
    /// chatmail-turn's UDP port (3478 on a real relay).
    pub turn: u16,
    /// The metrics endpoints, in the order of [`MetricsDaemon::ALL`]:
    /// `base + 1151` ..., which stays below Linux's ephemeral ports (32768
    /// and up) for the usual bases: there an outgoing connection could
    /// hold the port just when the daemon binds it.
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
            iroh_relay: at(3340)?,
            turn: at(3478)?,
            metrics: [
                at(1151)?,
                at(1152)?,
                at(1153)?,
                at(1154)?,
                at(1155)?,
                at(1156)?,
                at(1157)?,
                at(1158)?,
            ],
        })
    }
}
