use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Runs one of the filtermail daemons with the command line of the program
/// we replace, so existing systemd units keep working.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The relay's chatmail.ini.
    config_path: PathBuf,
    mode: Mode,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Outgoing,
    Incoming,
    Transport,
}

fn main() -> anyhow::Result<()> {
    chatmail_daemon::init_logging();
    let cli = Cli::parse();
    let config = chatmail_config::Config::load(&cli.config_path)?;
    match cli.mode {
        Mode::Outgoing => filtermail_outgoing::run_daemon(&config),
        Mode::Incoming => filtermail_incoming::run_daemon(&config),
        Mode::Transport => filtermail_transport::run_daemon(&config),
    }
}
