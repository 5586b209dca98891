use std::path::PathBuf;

use clap::Parser;

/// Postfix's LMTP transport for mail to other domains: HTTPS /mxdeliv,
/// then SMTP with STARTTLS, bounded and failing fast for dead
/// destinations.
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
    filtermail_transport::run_daemon(&config)
}
