//! Generates a synthetic relay for expiry benchmarks: N mailboxes with
//! password files and M message files in all, spread over cur/ and new/
//! (and an IMAP subfolder), named as Dovecot names them (`,S=` sizes) and
//! dated over the last 40 days. Files are empty: scanning cost depends on
//! names and inodes, not on content.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    /// Where to create the mailboxes (created if missing).
    dir: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    mailboxes: usize,
    #[arg(long, default_value_t = 1_000_000)]
    messages: usize,
    /// Parallel writers.
    #[arg(long, default_value_t = 4)]
    threads: usize,
}

/// A cheap deterministic sequence (no dependency on a random source).
fn mix(seed: u64) -> u64 {
    let mut x = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn ago(seconds: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(seconds)
}

fn make_mailbox(root: &Path, index: usize, messages: usize) -> Result<()> {
    let dir = root.join(format!("user{index:06}@example.org"));
    for part in ["cur", "new", "tmp", ".Sent/cur", ".Sent/new", ".Sent/tmp"] {
        fs::create_dir_all(dir.join(part))?;
    }
    let seed = index as u64;
    let password = File::create(dir.join("password"))?;
    password.set_modified(ago(mix(seed) % (120 * 86_400)))?;
    for n in 0..messages {
        let r = mix(seed << 32 | n as u64);
        let size = 2_000 + r % 300_000;
        let part = match r % 10 {
            0..=5 => "cur",
            6..=8 => "new",
            _ => ".Sent/cur",
        };
        let name = format!(
            "{}.M{n}P{index}.relay,S={size},W={size}:2,S",
            1_700_000_000 + n
        );
        let file = File::create(dir.join(part).join(name))?;
        file.set_modified(ago((r >> 20) % (40 * 86_400)))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    fs::create_dir_all(&cli.dir)?;
    let per_mailbox = cli.messages / cli.mailboxes.max(1);
    let threads = cli.threads.max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                let root = cli.dir.as_path();
                let mailboxes = cli.mailboxes;
                scope.spawn(move || -> Result<()> {
                    for index in (worker..mailboxes).step_by(threads) {
                        make_mailbox(root, index, per_mailbox)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("worker panicked"))??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    println!(
        "created {} mailboxes with {} messages each in {}",
        cli.mailboxes,
        per_mailbox,
        cli.dir.display()
    );
    Ok(())
}
