use std::path::PathBuf;
use std::sync::Mutex;

use chatmail_config::{Config, DEFAULT_CONFIG_PATH};
use chatmail_expire::{Problems, Report, for_each_mailbox, scan_mailbox, write_public_atomic};
use clap::Parser;

/// Reports the storage used by mailboxes and messages, and login
/// statistics: a human summary, or metrics files for monitoring.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The relay's chatmail.ini.
    #[arg(default_value = DEFAULT_CONFIG_PATH)]
    config_path: PathBuf,
    /// Act as if today were N days ago.
    #[arg(long, default_value_t = 0)]
    days: u32,
    /// Only sum up message sizes of accounts whose last login is at least
    /// this many days old.
    #[arg(long, value_name = "DAYS", default_value_t = 0)]
    min_login_age: u32,
    /// Only count messages in this maildir subdirectory.
    #[arg(long, value_parser = ["cur", "new", "tmp"])]
    mdir: Option<String>,
    /// Visit at most N mailboxes.
    #[arg(long)]
    maxnum: Option<usize>,
    /// Write Prometheus metrics to PATH (a directory gets fsreport.prom).
    #[arg(long, value_name = "PATH")]
    textfile: Option<PathBuf>,
    /// Write the older metrics format to FILE.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "/var/www/html/metrics")]
    legacy_metrics: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli.config_path)?;
    let now = chatmail_expire::reference_time(cli.days);
    let empty = Report::new(now, cli.min_login_age, cli.mdir.as_deref());
    let total = Mutex::new(empty.clone());
    let problems = Problems::default();
    for_each_mailbox(&config.mailboxes_dir, cli.maxnum, &problems, |dir| {
        if let Some(mailbox) = scan_mailbox(dir, &problems) {
            let mut one = empty.clone();
            one.add(&mailbox);
            if let Ok(mut total) = total.lock() {
                total.merge(&one);
            }
        }
    })
    .map_err(|error| anyhow::anyhow!("{}: {error}", config.mailboxes_dir.display()))?;
    let report = total
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a worker panicked"))?;
    if let Some(mut path) = cli.textfile.clone() {
        if path.is_dir() {
            path.push("fsreport.prom");
        }
        write_public_atomic(&path, &report.prometheus())?;
    }
    if let Some(path) = &cli.legacy_metrics {
        write_public_atomic(path, &report.legacy_metrics())?;
    }
    if cli.textfile.is_none() && cli.legacy_metrics.is_none() {
        print!("{}", report.summary());
    }
    if problems.errors() > 0 {
        eprintln!("{} errors while scanning", problems.errors());
    }
    Ok(())
}
