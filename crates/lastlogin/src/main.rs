use anyhow::Context;
use clap::Parser;
use dovecot_dict::daemon::{self, DictDaemonArgs};

/// Dovecot last_login dict server of a chatmail relay: records the day of
/// each account's last login as the mtime of its password file.
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
    daemon::run(&cli.dict, lastlogin::LastLoginDict::new(config.mailboxes()))
        .with_context(|| format!("serving {}", cli.dict.socket_path.display()))
}
