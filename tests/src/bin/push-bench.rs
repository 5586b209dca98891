//! Tools for benchmarking chatmail-metadata's notifier:
//! - `sink`: a notification server (HTTPS, HTTP/2, test CA written to
//!   `--dir`) answering every request with one status, keeping the number
//!   of requests it got in `<dir>/count`;
//! - `fill`: writes N notifications into a pending_notifications queue,
//!   in the daemon's file format, for the daemon to send at start;
//! - `load`: the baseline, posting N tokens to a URL with the same HTTP
//!   client library and concurrency as the notifier, reporting the rate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use chatmail_metadata::notifier::{Answer, Pending, PushClient, Queue};
use clap::{Parser, Subcommand};
use relay_tests::{PushServer, TestCa};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Sink {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 200)]
        status: u16,
    },
    Fill {
        /// The mailboxes_dir whose queue to fill.
        mailboxes_dir: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        count: usize,
    },
    Load {
        url: String,
        #[arg(long)]
        ca: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        #[arg(long, default_value_t = 512)]
        concurrency: usize,
    },
}

fn token(n: usize) -> String {
    // About the size of a real FCM token.
    format!("bench{n:08}:{}", "A".repeat(140))
}

async fn sink(dir: PathBuf, status: u16) -> Result<()> {
    let ca = TestCa::generate(&dir)?;
    let server = PushServer::start(&ca).await?;
    server.count_only();
    server.set_default_status(status);
    std::fs::write(dir.join("url"), server.url())?;
    println!("{}", server.url());
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => std::fs::write(dir.join("count"), server.count().to_string())?,
            result = tokio::signal::ctrl_c() => {
                result?;
                println!("requests={}", server.count());
                return Ok(());
            }
        }
    }
}

fn fill(mailboxes_dir: PathBuf, count: usize) -> Result<()> {
    let queue = Queue::open(&mailboxes_dir)?;
    let start_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    for n in 0..count {
        queue.store(&Pending {
            addr: format!("user{}@example.org", n % 1000),
            start_ms,
            token: token(n),
        })?;
    }
    Ok(())
}

async fn load(url: String, ca: PathBuf, count: usize, concurrency: usize) -> Result<()> {
    let client = Arc::new(PushClient::new(&url, Some(&ca))?);
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..count {
        let slot = Arc::clone(&slots).acquire_owned().await?;
        let client = Arc::clone(&client);
        tasks.spawn(async move {
            let answer = client.send(&token(n)).await;
            drop(slot);
            answer
        });
        while let Some(done) = tasks.try_join_next() {
            if let Answer::Retry(reason) = done? {
                bail!("request failed: {reason}");
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        if let Answer::Retry(reason) = done? {
            bail!("request failed: {reason}");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = count as f64 / seconds;
    println!("requests={count} seconds={seconds:.2} per_second={rate:.0}");
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Sink { dir, status } => runtime.block_on(sink(dir, status)),
        Command::Fill {
            mailboxes_dir,
            count,
        } => fill(mailboxes_dir, count),
        Command::Load {
            url,
            ca,
            count,
            concurrency,
        } => runtime.block_on(load(url, ca, count, concurrency)),
    }
}
