//! The DNS resolver the filtermail daemons share: DKIM keys for the
//! incoming filter, MX records for the transport.
//!
//! It asks the server named by `dns_resolver` in chatmail.ini, or the
//! servers of /etc/resolv.conf. With `dns_dnssec_validation` (the default)
//! answers from signed zones are validated and bogus ones refused, while
//! unsigned zones still resolve. Whether answers that a name or record
//! does not exist are kept is the caller's choice ([`NegativeAnswers`]).

use std::sync::Arc;
use std::time::Duration;

use chatmail_config::Config;
pub use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::dnssec::TrustAnchors;

/// Answers kept by the resolver's own cache (entries, not bytes).
const CACHE_ENTRIES: u64 = 4096;
/// How long one query may take before it is retried, and how often.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
const QUERY_ATTEMPTS: usize = 2;

/// How long the resolver keeps an answer that a name or record does not
/// exist (NXDOMAIN, or no records of the type asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NegativeAnswers {
    /// Not at all: a record published a moment after a failed lookup must
    /// be found by the next one (DKIM keys, checks of a fresh zone).
    Forgotten,
    /// As long as the zone's SOA allows (RFC 2308), at most this long. A
    /// mail host without IPv6 would otherwise cost a query per message.
    KeptUpTo(Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    #[error("cannot read the system resolver configuration: {0}")]
    SystemConfig(String),
    #[error("cannot create the DNS resolver: {0}")]
    Build(String),
    #[error("cannot read the DNSSEC trust anchor {0}")]
    TrustAnchor(String),
}

/// Builds the resolver for `config`.
pub fn resolver(
    config: &Config,
    negative: NegativeAnswers,
) -> Result<TokioResolver, DnsSetupError> {
    let (servers, mut options) = match config.dns_resolver {
        Some(addr) => {
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for connection in &mut server.connections {
                connection.port = addr.port();
            }
            (
                ResolverConfig::from_name_servers(vec![server]),
                ResolverOpts::default(),
            )
        }
        None => hickory_resolver::system_conf::read_system_conf()
            .map_err(|error| DnsSetupError::SystemConfig(error.to_string()))?,
    };
    options.validate = config.dns_dnssec_validation;
    options.cache_size = CACHE_ENTRIES;
    options.negative_max_ttl = Some(match negative {
        NegativeAnswers::Forgotten => Duration::ZERO,
        NegativeAnswers::KeptUpTo(limit) => limit,
    });
    options.timeout = QUERY_TIMEOUT;
    options.attempts = QUERY_ATTEMPTS;
    // Mail domains are absolute; never try them under a search domain.
    options.ndots = 0;
    let mut builder = TokioResolver::builder_with_config(servers, TokioRuntimeProvider::default())
        .with_options(options);
    // The resolver's own trust_anchor option names a file it never reads;
    // the anchors must be handed over loaded.
    if let (true, Some(path)) = (config.dns_dnssec_validation, &config.dns_trust_anchor) {
        let anchors = TrustAnchors::from_file(path)
            .map_err(|error| DnsSetupError::TrustAnchor(format!("{}: {error}", path.display())))?;
        builder = builder.with_trust_anchor(Arc::new(anchors));
    }
    builder
        .build()
        .map_err(|error| DnsSetupError::Build(error.to_string()))
}
