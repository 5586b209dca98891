//! Runs the fuzz targets for a while and reports what they found.
//!
//! ```sh
//! cargo run --release -p chatmail-fuzz -- --seconds 600 --findings target/fuzz
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use chatmail_fuzz::{Campaign, TARGETS, targets::target};
use clap::Parser;

#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Only this target (default: all).
    #[arg(long)]
    target: Option<String>,
    /// Seed of the mutation engine.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where crashing and slow inputs are saved.
    #[arg(long, default_value = "target/fuzz-findings")]
    findings: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let chosen: Vec<_> = match &cli.target {
        Some(name) => match target(name) {
            Some(target) => vec![target],
            None => bail!(
                "no target {name}; targets: {}",
                TARGETS
                    .iter()
                    .map(|t| t.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        None => TARGETS.iter().collect(),
    };
    // Panics are findings, reported below, not noise on stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let campaign = Campaign {
        duration: Duration::from_secs(cli.seconds),
        seed: cli.seed,
        slow: Duration::from_secs(2),
        hang: Duration::from_secs(30),
        findings_dir: Some(cli.findings.clone()),
    };
    let mut found = 0;
    for target in chosen {
        let report = campaign.run(target);
        println!(
            "{:18} {:>10} inputs {:>4} findings",
            report.target,
            report.executions,
            report.findings.len()
        );
        for finding in &report.findings {
            println!("  {}", finding.what);
        }
        found += report.findings.len();
    }
    if found > 0 {
        bail!("{found} findings, saved in {}", cli.findings.display());
    }
    Ok(())
}
