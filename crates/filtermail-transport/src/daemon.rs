use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chatmail_config::{Config, MetricsDaemon};
use chatmail_dns::NegativeAnswers;
use chatmail_metrics::Endpoint;
use chatmail_smtp::{Protocol, SessionConfig};
use tokio::net::TcpListener;

use crate::deliver::{Deliverer, HostLimits, Ports};
use crate::handler::{Limits, Transport};
use crate::metrics::TransportMetrics;
use crate::tls::TlsConfigs;

/// Postfix runs up to maxproc (1000) LMTP clients; a few more connections
/// let closing ones overlap.
const MAX_LMTP_CONNECTIONS: usize = 1100;

/// Answers that a domain, an MX or an address does not exist are kept as
/// the zone says, up to five minutes: a mail host without IPv6 would
/// otherwise cost an AAAA query per message, and a fix in DNS still takes
/// effect within minutes.
const NEGATIVE_ANSWERS: NegativeAnswers = NegativeAnswers::KeptUpTo(Duration::from_secs(5 * 60));

/// Runs the daemon: binds the LMTP port, then serves until SIGTERM or
/// SIGINT.
pub fn run_daemon(config: &Config) -> anyhow::Result<()> {
    let endpoint = Endpoint::for_daemon(config, MetricsDaemon::FiltermailTransport)?;
    let metrics = TransportMetrics::default();
    let mut registry = chatmail_metrics::registry();
    metrics.register(&mut registry);
    let runtime = chatmail_daemon::single_threaded_runtime()?;
    runtime.block_on(async {
        Endpoint::spawn_optional(endpoint, registry)?;
        let transport = transport(config, metrics)?;
        let addr = format!(
            "{}:{}",
            config.filtermail_host, config.filtermail_lmtp_port_transport
        );
        let listener = chatmail_daemon::bind_tcp(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(%addr, "filtermail-transport listening");
        run(
            config,
            listener,
            transport,
            chatmail_daemon::shutdown_signal(),
        )
        .await;
        Ok(())
    })
}

/// The transport for `config`, counting into `metrics`; must be made
/// inside a tokio runtime.
pub fn transport(config: &Config, metrics: TransportMetrics) -> anyhow::Result<Transport> {
    let resolver = chatmail_dns::resolver(config, NEGATIVE_ANSWERS).context("setting up DNS")?;
    let tls = TlsConfigs::new(config.filtermail_transport_ca_file.as_deref())?;
    let ports = Ports {
        smtp: config.filtermail_transport_smtp_port,
        https: config.filtermail_transport_https_port,
    };
    let deliverer = Deliverer::new(
        resolver,
        tls,
        config.mail_domain.hostname(),
        ports,
        config.filtermail_transport_allow_private,
        HostLimits {
            // No more sessions to one host are ever busy at once.
            idle_connections: config.filtermail_transport_destination_limit,
            in_flight: config.filtermail_transport_host_limit,
            https_timeout: config.filtermail_transport_https_timeout,
        },
    );
    let limits = Limits {
        max_deliveries: config.filtermail_transport_max_deliveries,
        per_destination: config.filtermail_transport_destination_limit,
        ..Limits::default()
    };
    Ok(Transport::new(
        config.mail_domain.clone(),
        deliverer,
        limits,
        metrics,
    ))
}

/// Serves LMTP on `listener` until `shutdown`.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    transport: Transport,
    shutdown: impl Future<Output = ()>,
) {
    let session = SessionConfig {
        // Deliveries end within their own deadline (300 s); the session
        // must not cut them short.
        handler_timeout: std::time::Duration::from_secs(400),
        // Messages waiting for a delivery slot keep their bytes too.
        // Each account holds at most its share.
        budget: chatmail_daemon::MessageBudget::fairly_shared(
            config.message_memory_bytes(),
            config.client_share_bytes(),
        ),
        share_by: chatmail_smtp::ShareBy::Sender,
        ..SessionConfig::new(
            Protocol::Lmtp,
            config.mail_domain.hostname(),
            config.max_message_bytes(),
        )
    };
    chatmail_smtp::serve(
        listener,
        Arc::new(transport),
        session,
        MAX_LMTP_CONNECTIONS,
        shutdown,
    )
    .await;
}
