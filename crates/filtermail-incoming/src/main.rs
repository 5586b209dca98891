use std::path::PathBuf;

use clap::Parser;

/// Before-queue filter for mail from other servers: SMTP behind Postfix's
/// port 25 and HTTP POST /mxdeliv behind nginx, reinjecting accepted mail
/// into Postfix.
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
    filtermail_incoming::run_daemon(&config)
}
