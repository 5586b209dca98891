use anyhow::Context;
use chatmail_config::MetricsDaemon;
use chatmail_metrics::Endpoint;
use clap::Parser;
use dovecot_dict::daemon::{self, DictDaemonArgs};

/// Dovecot passdb/userdb dict server of a chatmail relay: serves accounts
/// from mailbox directories and creates them on first login.
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
    let mailboxes = config.mailboxes();
    if let Some(report) = doveauth::migrate::migrate_legacy_passdb(&config.passdb_path, &mailboxes)?
    {
        tracing::info!(
            migrated = report.migrated,
            skipped = report.skipped,
            renamed_to = %report.renamed_to.display(),
            "migrated the legacy sqlite passdb"
        );
    }
    let endpoint = Endpoint::for_daemon(&config, MetricsDaemon::Doveauth)?;
    let metrics = doveauth::AuthMetrics::new();
    let mut registry = chatmail_metrics::registry();
    metrics.register(&mut registry);
    daemon::run_with(&cli.dict, || {
        Endpoint::spawn_optional(endpoint, registry)?;
        Ok(doveauth::AuthDict::new(&config, metrics))
    })
    .with_context(|| format!("serving {}", cli.dict.socket_path.display()))
}
