use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use chatmail_config::{Config, DEFAULT_CONFIG_PATH};
use chatmail_expire::{
    Counters, Policy, Problems, Removal, apply, for_each_mailbox, plan, scan_mailbox,
};
use clap::Parser;

/// Expires mailboxes and messages as chatmail.ini says: inactive accounts,
/// leftover directories, old messages, large seen messages, and mailboxes
/// over 70% of max_mailbox_size. A dry run unless --remove is given.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The relay's chatmail.ini.
    #[arg(default_value = DEFAULT_CONFIG_PATH)]
    config_path: PathBuf,
    /// The mailboxes directory (default: mailboxes_dir of chatmail.ini).
    mailboxes_dir: Option<PathBuf>,
    /// Actually remove; without it nothing on disk changes.
    #[arg(long)]
    remove: bool,
    /// Print every path removed (or that would be).
    #[arg(short, long)]
    verbose: bool,
    /// Act as if today were N days ago.
    #[arg(long, default_value_t = 0)]
    days: u32,
    /// Visit at most N mailboxes.
    #[arg(long)]
    maxnum: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli.config_path)?;
    let root = cli
        .mailboxes_dir
        .clone()
        .unwrap_or_else(|| config.mailboxes_dir.clone());
    let policy = Policy::from_config(&config, chatmail_expire::reference_time(cli.days));
    let removal = Removal {
        dry_run: !cli.remove,
        verbose: cli.verbose,
    };
    let counters = Counters::default();
    let problems = Problems::default();
    let started = Instant::now();
    for_each_mailbox(&root, cli.maxnum, &problems, |dir| {
        if let Some(mailbox) = scan_mailbox(dir, &problems) {
            apply(
                &mailbox,
                &plan(&mailbox, &policy),
                removal,
                &counters,
                &problems,
            );
        }
    })
    .map_err(|error| anyhow::anyhow!("{}: {error}", root.display()))?;
    let count = |counter: &AtomicU64| Counters::get(counter);
    let verb = if cli.remove {
        "Removed"
    } else {
        "Would remove"
    };
    let mut summary = format!(
        "{verb} {} out of {} mailboxes and {} out of {} files ({} MB) in {:.2} seconds",
        count(&counters.mailboxes_removed),
        count(&counters.mailboxes),
        count(&counters.files_removed),
        count(&counters.files),
        count(&counters.bytes_removed) / 1_000_000,
        started.elapsed().as_secs_f64(),
    );
    if problems.vanished() > 0 || problems.errors() > 0 {
        summary.push_str(&format!(
            "; {} files vanished during the pass, {} errors",
            problems.vanished(),
            problems.errors()
        ));
    }
    if !cli.remove {
        summary.push_str(" (dry run: nothing was removed; pass --remove to remove)");
    }
    println!("{summary}");
    Ok(())
}
