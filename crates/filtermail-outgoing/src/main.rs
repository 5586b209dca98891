use std::path::PathBuf;

use clap::Parser;

/// Before-queue SMTP filter for mail submitted by relay users
/// (Postfix smtpd_proxy_filter), reinjecting accepted mail into Postfix.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The relay's chatmail.ini.
    config_path: PathBuf,
}

fn main() -> anyhow::Result<()> {
    chatmail_daemon::init_logging();
    let cli = Cli::parse();
    let config = chatmail_config::Config::load(&cli.config_path)?;
    filtermail_outgoing::run_daemon(&config)
}
