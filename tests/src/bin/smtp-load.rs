//! SMTP load generator: N connections, each sending PGP/MIME-encrypted
//! messages of a given size one after another (MAIL, RCPT and DATA
//! pipelined), reporting messages per second and per-message latency.
//! `--idle` instead opens N connections that only say EHLO and wait, to
//! measure what idle sessions cost the server. `--dkim-dns ADDR` signs the
//! message with a fresh DKIM key of the sender's domain and serves that
//! key from a DNS server at ADDR for the run (for filtermail-incoming).
//! `--write-message FILE` writes the message for Postfix's `smtp-source
//! -F` instead and, with `--dkim-dns`, serves the key for --seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use relay_tests::{DkimKey, DnsServer, encrypted_message};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Cli {
    /// host:port of the SMTP server.
    target: String,
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Message size in bytes (approximate: the armored payload is sized).
    #[arg(long, default_value_t = 4096)]
    size: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value = "sender@example.org")]
    from: String,
    #[arg(long, default_value = "recipient@example.org")]
    to: String,
    /// Only open the connections and hold them idle for --seconds.
    #[arg(long)]
    idle: bool,
    /// Sign with DKIM and serve the key from a DNS server at this address.
    #[arg(long)]
    dkim_dns: Option<std::net::SocketAddr>,
    /// The DKIM key type: ed25519 or rsa (2048 bits).
    #[arg(long, default_value = "ed25519")]
    dkim_key: String,
    /// Write the message to FILE (for `smtp-source -F`) and send nothing;
    /// with --dkim-dns, keep serving its key for --seconds.
    #[arg(long, value_name = "FILE")]
    write_message: Option<std::path::PathBuf>,
}

/// Signs `message` with a new key of the sender's domain, published by a
/// DNS server at `addr` (kept running while the handle lives).
async fn dkim_sign(
    cli: &Cli,
    addr: std::net::SocketAddr,
    message: &[u8],
) -> Result<(DnsServer, Vec<u8>)> {
    let domain = cli.from.rsplit_once('@').context("sender domain")?.1;
    // A new selector per run: a filter may still cache an older run's key.
    let selector = format!("bench{}", std::process::id());
    let key = match cli.dkim_key.as_str() {
        "ed25519" => DkimKey::ed25519(domain, &selector)?,
        "rsa" => DkimKey::rsa(domain, &selector)?,
        other => bail!("unknown key type {other}"),
    };
    let dns = DnsServer::start_at(addr).await?;
    dns.add_txt(&key.record_name(), &[&key.record()]);
    Ok((dns, key.sign(message)?))
}

async fn read_reply(stream: &mut BufReader<TcpStream>, line: &mut String) -> Result<u16> {
    loop {
        line.clear();
        if stream.read_line(line).await? == 0 {
            bail!("connection closed");
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .context("bad reply");
        }
    }
}

async fn connect(target: &str) -> Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    if read_reply(&mut stream, &mut line).await? != 220 {
        bail!("no greeting");
    }
    stream.get_mut().write_all(b"EHLO load.test\r\n").await?;
    if read_reply(&mut stream, &mut line).await? != 250 {
        bail!("EHLO refused");
    }
    Ok(stream)
}

async fn sender(cli: Arc<Cli>, message: Arc<Vec<u8>>, deadline: Instant) -> Result<Vec<u32>> {
    let mut stream = connect(&cli.target).await?;
    let envelope = format!(
        "MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
        cli.from, cli.to
    );
    let mut line = String::new();
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let started = Instant::now();
        stream.get_mut().write_all(envelope.as_bytes()).await?;
        for want in [250, 250, 354] {
            let code = read_reply(&mut stream, &mut line).await?;
            if code != want {
                bail!("expected {want}, got {line:?}");
            }
        }
        stream.get_mut().write_all(&message).await?;
        let code = read_reply(&mut stream, &mut line).await?;
        if code != 250 {
            bail!("message refused: {line:?}");
        }
        latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    // Servers such as smtp-sink keep sessions open until QUIT or timeout.
    stream.get_mut().write_all(b"QUIT\r\n").await?;
    Ok(latencies)
}

fn percentile(sorted: &[u32], permille: usize) -> u32 {
    let last = sorted.len().saturating_sub(1);
    sorted.get(last * permille / 1000).copied().unwrap_or(0)
}

fn main() -> Result<()> {
    let cli = Arc::new(Cli::parse());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(cli.seconds);
        if cli.idle {
            let mut open = Vec::new();
            for _ in 0..cli.connections {
                open.push(connect(&cli.target).await?);
            }
            println!("idle_connections={}", open.len());
            tokio::time::sleep_until(deadline.into()).await;
            return Ok(());
        }
        let mut message = encrypted_message(&cli.from, &cli.to, cli.size)?;
        let _dns = match cli.dkim_dns {
            Some(addr) => {
                let (dns, signed) = dkim_sign(&cli, addr, &message).await?;
                message = signed;
                Some(dns)
            }
            None => None,
        };
        if let Some(path) = &cli.write_message {
            std::fs::write(path, &message)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {} ({} bytes)", path.display(), message.len());
            if cli.dkim_dns.is_some() {
                tokio::time::sleep_until(deadline.into()).await;
            }
            return Ok(());
        }
        message.extend_from_slice(b".\r\n");
        let message = Arc::new(message);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..cli.connections {
            tasks.spawn(sender(Arc::clone(&cli), Arc::clone(&message), deadline));
        }
        let mut latencies = Vec::new();
        for result in tasks.join_all().await {
            latencies.extend(result?);
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort_unstable();
        #[allow(clippy::cast_precision_loss)]
        let rate = latencies.len() as f64 / elapsed;
        println!(
            "connections={} size={} messages={} messages_per_second={rate:.0} p50_us={} p99_us={}",
            cli.connections,
            message.len(),
            latencies.len(),
            percentile(&latencies, 500),
            percentile(&latencies, 990),
        );
        Ok(())
    })
}
