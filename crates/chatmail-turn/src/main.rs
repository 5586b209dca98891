use std::path::PathBuf;

use anyhow::Context as _;
use chatmail_config::{DEFAULT_CONFIG_PATH, MetricsDaemon};
use chatmail_metrics::Endpoint;
use chatmail_turn::TurnMetrics;
use clap::Parser;

/// TURN server of a chatmail relay (UDP, port turn_port): relays the
/// media of Delta Chat calls whose peers cannot reach each other, with
/// credentials it hands to chatmail-metadata on turn_socket_path.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// chatmail.ini
    #[arg(default_value = DEFAULT_CONFIG_PATH)]
    config_path: PathBuf,
}

fn main() -> anyhow::Result<()> {
    chatmail_daemon::init_logging();
    let cli = Cli::parse();
    let config = chatmail_config::Config::load(&cli.config_path)?;
    let endpoint = Endpoint::for_daemon(&config, MetricsDaemon::ChatmailTurn)?;
    let metrics = TurnMetrics::new();
    let mut registry = chatmail_metrics::registry();
    metrics.register(&mut registry);
    let runtime = chatmail_daemon::single_threaded_runtime().context("starting the runtime")?;
    runtime.block_on(async {
        Endpoint::spawn_optional(endpoint, registry)?;
        chatmail_turn::run(&config, metrics, chatmail_daemon::shutdown_signal()).await
    })
}
