//! Load generator for dict servers: many clients doing lookups as Dovecot
//! does (one request in flight per connection), reporting throughput and
//! latency. Also creates synthetic accounts and serves a constant-answer
//! dict as the baseline that measures the protocol engine alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use dovecot_dict::{DictError, DictHandler, ServerLimits, SocketOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates N accounts `userNNNNNN@DOMAIN` under MAILBOXES_DIR.
    Populate {
        mailboxes_dir: PathBuf,
        #[arg(long, default_value = "example.org")]
        domain: String,
        #[arg(long, default_value_t = 10_000)]
        users: usize,
    },
    /// Serves a dict that answers every lookup with a fixed JSON object.
    ServeConstant { socket: PathBuf },
    /// Runs lookups against SOCKET and prints the results.
    Load {
        socket: PathBuf,
        #[arg(long, default_value = "example.org")]
        domain: String,
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// userdb or passdb keys.
        #[arg(long, default_value = "userdb")]
        kind: String,
    },
}

/// A realistic stored hash; lookups do not verify it.
const HASH: &str = "{SHA512-CRYPT}$6$rounds=5000$abcdefghijklmnop$\
VLvqN07OcfYgrgKaEwMJHcCqKUJCIMN19d1Db.cpwczFJqk/C/zUrmFHWVlJ5DSP.MfTnOCAmLEGCylyRYUlt1";

fn user(i: usize, domain: &str) -> String {
    format!("user{i:06}@{domain}")
}

fn populate(dir: &Path, domain: &str, users: usize) -> Result<()> {
    let mailboxes = chatmail_config::Mailboxes::new(dir);
    for i in 0..users {
        let mailbox = mailboxes.mailbox(&user(i, domain))?;
        if mailbox.password_hash()?.is_none() {
            mailbox.write_password_hash(HASH)?;
        }
    }
    Ok(())
}

struct ConstantDict;

impl DictHandler for ConstantDict {
    async fn lookup(&self, _key: &str, _user: &str) -> Result<Option<String>, DictError> {
        Ok(Some(format!(
            r#"{{"home":"/home/vmail/mail/example.org/user000001@example.org","uid":"vmail","gid":"vmail","addr":"user000001@example.org","password":"{HASH}"}}"#
        )))
    }
}

fn serve_constant(socket: &Path) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = dovecot_dict::bind(socket, SocketOptions::default())?;
        dovecot_dict::serve(
            listener,
            Arc::new(ConstantDict),
            ServerLimits::default(),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await;
        Ok(())
    })
}

struct ClientResult {
    lookups: u64,
    latencies_us: Vec<u32>,
}

async fn client(
    socket: PathBuf,
    keys: Arc<Vec<String>>,
    offset: usize,
    deadline: Instant,
) -> Result<ClientResult> {
    let stream = UnixStream::connect(&socket).await?;
    let mut stream = BufReader::new(stream);
    stream.get_mut().write_all(b"H3\t2\t0\t\tauth\n").await?;
    let mut result = ClientResult {
        lookups: 0,
        latencies_us: Vec::new(),
    };
    let mut reply = String::new();
    let mut i = offset;
    while Instant::now() < deadline {
        let key = keys.get(i % keys.len()).context("no keys")?;
        i += 1;
        let started = Instant::now();
        stream.get_mut().write_all(key.as_bytes()).await?;
        reply.clear();
        stream.read_line(&mut reply).await?;
        if !reply.starts_with('O') {
            bail!("unexpected reply {reply:?}");
        }
        result.lookups += 1;
        // Every 16th sample keeps the latency record small.
        if result.lookups.is_multiple_of(16) {
            let micros = started.elapsed().as_micros();
            result
                .latencies_us
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
        }
    }
    Ok(result)
}

fn percentile(sorted: &[u32], fraction: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let last = sorted.len() - 1;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let at = ((last as f64) * fraction).round() as usize;
    sorted.get(at.min(last)).copied().unwrap_or(0)
}

fn load(
    socket: &Path,
    domain: &str,
    users: usize,
    clients: usize,
    seconds: u64,
    kind: &str,
) -> Result<()> {
    let keys: Vec<String> = (0..users)
        .map(|i| match kind {
            "passdb" => format!("Lshared/passdb/some-password\"{}\t\n", user(i, domain)),
            _ => format!("Lshared/userdb/{}\t\n", user(i, domain)),
        })
        .collect();
    let keys = Arc::new(keys);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = runtime.block_on(async {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            tasks.spawn(client(
                socket.to_owned(),
                Arc::clone(&keys),
                c * (users / clients.max(1)),
                deadline,
            ));
        }
        let results = tasks.join_all().await;
        (results, started.elapsed())
    });
    let (results, elapsed) = results;
    let mut total = 0;
    let mut latencies = Vec::new();
    for result in results {
        let result = result?;
        total += result.lookups;
        latencies.extend(result.latencies_us);
    }
    latencies.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "lookups={total} seconds={:.1} lookups_per_second={rate:.0} p50_us={} p99_us={}",
        elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    );
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Populate {
            mailboxes_dir,
            domain,
            users,
        } => populate(&mailboxes_dir, &domain, users),
        Command::ServeConstant { socket } => serve_constant(&socket),
        Command::Load {
            socket,
            domain,
            users,
            clients,
            seconds,
            kind,
        } => load(&socket, &domain, users, clients, seconds, &kind),
    }
}
