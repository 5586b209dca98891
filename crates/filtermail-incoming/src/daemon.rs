use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use chatmail_config::{Config, MetricsDaemon};
use chatmail_daemon::MessageBudget;
use chatmail_metrics::{Direction, Endpoint, FilterMetrics};
use chatmail_smtp::{Protocol, SessionConfig, SessionCounters, ShareBy};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::dkim::DkimVerifier;
use crate::filter::{IncomingFilter, OriginCheck};
use crate::http::HttpLimits;

/// Set to `1` to turn the DKIM check off (tests without DNS only).
pub const SKIP_DKIM_ENV: &str = "FILTERMAIL_SKIP_DKIM";

/// Runs the daemon: binds the SMTP and HTTP ports, then serves until
/// SIGTERM or SIGINT.
pub fn run_daemon(config: &Config) -> anyhow::Result<()> {
    let endpoint = Endpoint::for_daemon(config, MetricsDaemon::FiltermailIncoming)?;
    let metrics = FilterMetrics::new(Direction::Incoming);
    let mut registry = chatmail_metrics::registry();
    metrics.register(&mut registry);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        Endpoint::spawn_optional(endpoint, registry)?;
        let origin = origin_check(config)?;
        let smtp_addr = format!(
            "{}:{}",
            config.filtermail_host, config.filtermail_smtp_port_incoming
        );
        let http_addr = format!(
            "{}:{}",
            config.filtermail_host, config.filtermail_http_port_incoming
        );
        let smtp = chatmail_daemon::bind_tcp(&smtp_addr)
            .await
            .with_context(|| format!("binding {smtp_addr}"))?;
        let http = chatmail_daemon::bind_tcp(&http_addr)
            .await
            .with_context(|| format!("binding {http_addr}"))?;
        tracing::info!(%smtp_addr, %http_addr, "filtermail-incoming listening");
        run(
            config,
            smtp,
            http,
            origin,
            metrics,
            chatmail_daemon::shutdown_signal(),
        )
        .await;
        Ok(())
    })
}

fn origin_check(config: &Config) -> anyhow::Result<OriginCheck> {
    if std::env::var(SKIP_DKIM_ENV).is_ok_and(|value| is_truthy(&value)) {
        tracing::warn!(
            "{SKIP_DKIM_ENV} is set: DKIM CHECKS ARE OFF, anyone can forge domain senders; \
             never run a production relay like this"
        );
        return Ok(OriginCheck::Skip);
    }
    let resolver = chatmail_dns::resolver(config, chatmail_dns::NegativeAnswers::Forgotten)
        .context("setting up DNS for DKIM")?;
    Ok(OriginCheck::Dkim(Arc::new(DkimVerifier::new(resolver))))
}

/// The values that switch a flag on, as the program we replace reads its
/// environment: `1`, `true`, `yes`, `on`, in any case.
fn is_truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// Serves SMTP on `smtp` and HTTP on `http` until `shutdown`.
pub async fn run(
    config: &Config,
    smtp: TcpListener,
    http: TcpListener,
    origin: OriginCheck,
    metrics: FilterMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let counters = SessionCounters::for_filter(&metrics);
    let filter = Arc::new(IncomingFilter::new(config, origin, metrics));
    let max_message_size = config.max_message_bytes();
    // Both doors share one budget for message bytes.
    let budget =
        MessageBudget::fairly_shared(config.message_memory_bytes(), config.client_share_bytes());
    let session = SessionConfig {
        budget: budget.clone(),
        // Postfix names the remote client with XFORWARD.
        share_by: ShareBy::ClientAddress,
        counters,
        ..SessionConfig::new(
            Protocol::Smtp,
            config.mail_domain.hostname(),
            max_message_size,
        )
    };
    let max_connections = config.filter_connection_limit();
    let stop = CancellationToken::new();
    let smtp_server = chatmail_smtp::serve(
        smtp,
        Arc::clone(&filter),
        session,
        max_connections,
        stop.clone().cancelled_owned(),
    );
    let http_server = crate::http::serve(
        http,
        filter,
        HttpLimits {
            max_message_size,
            max_connections,
            budget,
            min_rate: chatmail_smtp::MinRate::default(),
        },
        stop.clone().cancelled_owned(),
    );
    let stopper = async {
        shutdown.await;
        stop.cancel();
    };
    tokio::join!(smtp_server, http_server, stopper);
}

#[cfg(test)]
mod tests {
    use super::is_truthy;

    #[test]
    fn skip_dkim_takes_the_usual_truthy_values() {
        for value in ["1", "true", "TRUE", "yes", "On", " 1 "] {
            assert!(is_truthy(value), "{value}");
        }
        for value in ["", "0", "false", "no", "off", "2", "skip"] {
            assert!(!is_truthy(value), "{value}");
        }
    }
}
