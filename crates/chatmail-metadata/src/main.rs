use std::sync::Arc;

use anyhow::Context;
use chatmail_config::MetricsDaemon;
use chatmail_metadata::{MetadataDict, MetadataMetrics, Notifier, ServerKeys, TokenStore};
use chatmail_metrics::Endpoint;
use clap::Parser;
use dovecot_dict::daemon::{self, DictDaemonArgs};

/// Dovecot mail_attribute_dict server of a chatmail relay: device tokens
/// for push notifications, the server metadata Delta Chat reads, and the
/// notifier that sends a push for every new message.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    dict: DictDaemonArgs,
}

fn main() -> anyhow::Result<()> {
    chatmail_daemon::init_logging();
    let cli = Cli::parse();
    let config = chatmail_config::Config::load(&cli.dict.config_path)?;
    let endpoint = Endpoint::for_daemon(&config, MetricsDaemon::ChatmailMetadata)?;
    let metrics = MetadataMetrics::default();
    let mut registry = chatmail_metrics::registry();
    metrics.register(&mut registry);
    daemon::run_with(&cli.dict, || {
        Endpoint::spawn_optional(endpoint, registry)?;
        let store = Arc::new(TokenStore::new(config.mailboxes()));
        let notifier = Notifier::start(&config, Arc::clone(&store), metrics.clone())?;
        Ok(MetadataDict::new(
            store,
            notifier,
            ServerKeys::new(&config),
            metrics,
        ))
    })
    .with_context(|| format!("serving {}", cli.dict.socket_path.display()))
}
