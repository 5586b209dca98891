use std::sync::Arc;

use anyhow::Context;
use chatmail_metadata::{MetadataDict, Notifier, ServerKeys, TokenStore};
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
    daemon::run_with(&cli.dict, || {
        let store = Arc::new(TokenStore::new(config.mailboxes()));
        let notifier = Notifier::start(&config, Arc::clone(&store))?;
        Ok(MetadataDict::new(store, notifier, ServerKeys::new(&config)))
    })
    .with_context(|| format!("serving {}", cli.dict.socket_path.display()))
}
