//! Benchmarks filtermail-transport (release build, run as root from the
//! repository root: the daemon runs as vmail like in production).
//!
//! (a) `blackhole`: N concurrent LMTP clients, half sending to a healthy
//!     relay (HTTPS /mxdeliv on loopback), half to a destination whose
//!     host accepts connections and never answers. Reports how fast the
//!     dead half gets its 4xx, how long the healthy half takes, how many
//!     deliveries reached the dead host at once, and the daemon's memory.
//! (b) `slow`: one healthy destination answering each message 50 ms late;
//!     messages/s with C concurrent LMTP clients, against strictly one
//!     message at a time (what the program we replace does per
//!     destination), in the same run.
//! (c) `cpu`: the daemon's CPU time per delivered message (utime + stime
//!     from /proc) with Postfix's smtp-source as the LMTP client (-d, many
//!     messages per session), delivering over HTTPS /mxdeliv into a local
//!     HTTPS sink, or over SMTP with STARTTLS into a local sink (smtp-sink
//!     offers no STARTTLS, which the transport requires), once without
//!     CHUNKING (DATA) and once with it (BDAT, as towards Postfix). The
//!     baseline in the same run is smtp-source straight into smtp-sink
//!     over LMTP.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Parser, Subcommand};
use relay_tests::{
    Daemon, DnsServer, PushServer, SmtpClient, StarttlsSink, TestCa, TransportDaemon,
    TransportSetup, black_hole, free_port, proc_status_kib,
};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Blackhole {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
    },
    Slow {
        #[arg(long, default_value_t = 1000)]
        messages: usize,
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[arg(long, default_value_t = 50)]
        delay_ms: u64,
    },
    Cpu {
        /// The message smtp-source sends (LF line ends; it adds the CR).
        #[arg(long)]
        message: std::path::PathBuf,
        #[arg(long, default_value_t = 20000)]
        messages: usize,
        /// Session counts to measure, each in turn.
        #[arg(long, value_delimiter = ',', default_value = "100,1")]
        sessions: Vec<usize>,
    },
}

const SENDER: &str = "bench@[127.0.0.1]";
const MESSAGE: &str = "From: <bench@[127.0.0.1]>\r\nSubject: x\r\n\r\n\
    -----BEGIN PGP MESSAGE-----\r\n\r\nwcBMA\r\n-----END PGP MESSAGE-----\r\n";
const BLACKHOLE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The healthy half goes to this many domains (all served by the same
/// relay), as outbound mail from a relay goes to many relays.
const HEALTHY_DOMAINS: usize = 50;

struct Setup {
    _dir: tempfile::TempDir,
    _dns: DnsServer,
    https: PushServer,
    daemon: Daemon,
    lmtp_port: u16,
    blackhole_connections: Arc<AtomicUsize>,
}

/// A directory for the daemon, a test CA whose certificate names
/// mx.healthy.test, and an HTTPS sink answering /mxdeliv with it.
async fn healthy_relay() -> Result<(tempfile::TempDir, TestCa, PushServer)> {
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let ca = TestCa::generate_for(dir.path(), &["mx.healthy.test"])?;
    fs::set_permissions(&ca.ca_path, fs::Permissions::from_mode(0o644))?;
    let https = PushServer::start(&ca).await?;
    https.count_only();
    Ok((dir, ca, https))
}

async fn setup(extra_ini: &str) -> Result<Setup> {
    let (dir, ca, https) = healthy_relay().await?;
    let dns = DnsServer::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    dns.add_mx("healthy.test.", 10, "mx.healthy.test.");
    for n in 0..HEALTHY_DOMAINS {
        dns.add_mx(&format!("h{n}.test."), 10, "mx.healthy.test.");
    }
    dns.add_ip("mx.healthy.test.", IpAddr::V4(Ipv4Addr::LOCALHOST));
    dns.add_mx("blackhole.test.", 10, "mx.blackhole.test.");
    dns.add_ip("mx.blackhole.test.", IpAddr::V4(BLACKHOLE));
    // The black hole listens on both ports the transport uses.
    let smtp_port = free_port()?;
    let blackhole_connections = black_hole(BLACKHOLE, &[https.port(), smtp_port]).await?;
    let transport = TransportDaemon::start(&TransportSetup {
        dir: dir.path(),
        dns: dns.addr(),
        ca_file: &ca.ca_path,
        smtp_port,
        https_port: https.port(),
        allow_private: true,
        extra_ini,
        env: &[("RUST_LOG", "warn")],
    })?;
    Ok(Setup {
        _dir: dir,
        _dns: dns,
        https,
        daemon: transport.daemon,
        lmtp_port: transport.lmtp_port,
        blackhole_connections,
    })
}

/// Sends one message; returns the reply code and how long it took.
async fn send(port: u16, rcpt: &str) -> Result<(u16, Duration)> {
    let mut client = SmtpClient::connect(port).await?;
    client.lhlo().await?;
    let started = Instant::now();
    let replies = client.send_lmtp(SENDER, &[rcpt], MESSAGE).await?;
    let took = started.elapsed();
    client.quit().await;
    Ok((replies.first().map_or(0, |reply| reply.code), took))
}

fn percentile(sorted: &[Duration], permille: usize) -> Duration {
    let last = sorted.len().saturating_sub(1);
    sorted
        .get(last * permille / 1000)
        .copied()
        .unwrap_or_default()
}

async fn blackhole(clients: usize) -> Result<()> {
    let setup = setup("").await?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..clients {
        let port = setup.lmtp_port;
        let healthy = n % 2 == 0;
        let rcpt = if healthy {
            format!("u{n}@h{}.test", n % HEALTHY_DOMAINS)
        } else {
            format!("u{n}@blackhole.test")
        };
        tasks.spawn(async move {
            // A deferred healthy message is retried, as Postfix would
            // (sooner, to measure when the healthy half is through).
            let mut result = send(port, &rcpt).await;
            let mut tries = 1;
            while healthy && tries < 100 && matches!(result, Ok((451, _))) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                result = send(port, &rcpt).await;
                tries += 1;
            }
            (healthy, result)
        });
    }
    let mut healthy_done = Duration::ZERO;
    let mut healthy_ok = 0;
    let mut dead = Vec::new();
    let mut dead_codes = std::collections::BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (healthy, result) = joined?;
        let (code, took) = result?;
        if healthy {
            if code == 250 {
                healthy_ok += 1;
            }
            healthy_done = healthy_done.max(started.elapsed());
        } else {
            *dead_codes.entry(code).or_insert(0) += 1;
            dead.push(took);
        }
    }
    dead.sort_unstable();
    println!(
        "clients={clients} healthy_delivered={healthy_ok} healthy_all_done={:.2}s \
         blackhole_replies={dead_codes:?} blackhole_p50={:?} blackhole_p90={:?} blackhole_max={:?} \
         deliveries_reaching_blackhole={} https_requests={} daemon_rss_peak={} KiB",
        healthy_done.as_secs_f64(),
        percentile(&dead, 500),
        percentile(&dead, 900),
        dead.last().copied().unwrap_or_default(),
        setup.blackhole_connections.load(Ordering::Relaxed),
        setup.https.count(),
        proc_status_kib(setup.daemon.pid(), "VmHWM"),
    );
    Ok(())
}

async fn slow(messages: usize, clients: usize, delay: Duration) -> Result<()> {
    let setup = setup("").await?;
    setup.https.set_delay(delay);
    // Warm up: the connection to the relay.
    send(setup.lmtp_port, "warm@healthy.test").await?;

    let serial_count = (messages / 10).max(10);
    let started = Instant::now();
    for n in 0..serial_count {
        let (code, _) = send(setup.lmtp_port, &format!("s{n}@healthy.test")).await?;
        anyhow::ensure!(code == 250, "serial send got {code}");
    }
    let serial_rate = serial_count as f64 / started.elapsed().as_secs_f64();

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let next = Arc::clone(&next);
        let port = setup.lmtp_port;
        tasks.spawn(async move {
            let mut client = SmtpClient::connect(port).await?;
            client.lhlo().await?;
            let mut refused = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < messages {
                let replies = client
                    .send_lmtp(SENDER, &["p@healthy.test"], MESSAGE)
                    .await?;
                if replies.first().is_none_or(|reply| reply.code != 250) {
                    refused += 1;
                }
            }
            client.quit().await;
            Ok::<_, anyhow::Error>(refused)
        });
    }
    let mut refused = 0;
    while let Some(joined) = tasks.join_next().await {
        refused += joined??;
    }
    let parallel_rate = messages as f64 / started.elapsed().as_secs_f64();
    println!(
        "delay={delay:?} one_at_a_time={serial_rate:.1}/s ({serial_count} messages) \
         parallel={parallel_rate:.1}/s ({messages} messages, {clients} LMTP clients, {refused} got 4xx) \
         ratio={:.1} daemon_rss_peak={} KiB",
        parallel_rate / serial_rate,
        proc_status_kib(setup.daemon.pid(), "VmHWM"),
    );
    Ok(())
}

/// The CPU time `pid` has used so far, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |n: usize| -> Result<u64> {
        Ok(fields
            .get(n)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    // utime and stime are fields 14 and 15; the list starts at field 3.
    Ok(field(11)? + field(12)?)
}

fn clock_ticks_per_second() -> Result<f64> {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    Ok(String::from_utf8(output.stdout)?.trim().parse()?)
}

/// smtp-source over LMTP into `port`: `messages` copies of `message` in
/// `sessions` sessions. Prints msgs/s and, if `pid` is given, its CPU
/// time per message.
fn smtp_source(
    label: &str,
    port: u16,
    message: &std::path::Path,
    messages: usize,
    sessions: usize,
    pid: Option<u32>,
) -> Result<()> {
    let before = pid.map(cpu_ticks).transpose()?;
    let started = Instant::now();
    let status = std::process::Command::new("smtp-source")
        .args(["-L", "-d", "-s", &sessions.to_string()])
        .args(["-m", &messages.to_string(), "-f", SENDER])
        .args(["-t", "user@healthy.test", "-F"])
        .arg(message)
        .arg(format!("127.0.0.1:{port}"))
        .status()?;
    anyhow::ensure!(status.success(), "smtp-source failed: {status}");
    let seconds = started.elapsed().as_secs_f64();
    let cpu = match (pid, before) {
        (Some(pid), Some(before)) => {
            let ticks = cpu_ticks(pid)? - before;
            format!(
                "cpu/msg={:4.0} us",
                ticks as f64 * 1e6 / clock_ticks_per_second()? / messages as f64
            )
        }
        _ => String::new(),
    };
    println!(
        "{label:<34} sessions={sessions:<4} msgs/s={:6.0}  {cpu}",
        messages as f64 / seconds
    );
    Ok(())
}

async fn cpu(message: std::path::PathBuf, messages: usize, sessions: Vec<usize>) -> Result<()> {
    let (dir, ca, https) = healthy_relay().await?;
    let smtp = StarttlsSink::start(&ca, false).await?;
    // A second sink offers CHUNKING, as Postfix does: the transport then
    // sends each message with its envelope as one BDAT chunk.
    let chunking = StarttlsSink::start(&ca, true).await?;
    let dns = DnsServer::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    dns.add_mx("healthy.test.", 10, "mx.healthy.test.");
    dns.add_ip("mx.healthy.test.", IpAddr::V4(Ipv4Addr::LOCALHOST));
    // One destination takes every session here; a relay spreads them over
    // many, so the per-destination bound would only measure tempfails.
    let extra_ini = "filtermail_transport_destination_limit = 1000\n";
    let env = [("RUST_LOG", "warn")];
    let over_https = TransportDaemon::start(&TransportSetup {
        dir: dir.path(),
        dns: dns.addr(),
        ca_file: &ca.ca_path,
        smtp_port: smtp.port(),
        https_port: https.port(),
        allow_private: true,
        extra_ini,
        env: &env,
    })?;
    // Nothing listens on this HTTPS port, so every delivery goes over SMTP.
    let over_smtp = TransportDaemon::start(&TransportSetup {
        dir: dir.path(),
        dns: dns.addr(),
        ca_file: &ca.ca_path,
        smtp_port: smtp.port(),
        https_port: free_port()?,
        allow_private: true,
        extra_ini,
        env: &env,
    })?;
    let over_bdat = TransportDaemon::start(&TransportSetup {
        dir: dir.path(),
        dns: dns.addr(),
        ca_file: &ca.ca_path,
        smtp_port: chunking.port(),
        https_port: free_port()?,
        allow_private: true,
        extra_ini,
        env: &env,
    })?;
    let sink_port = free_port()?;
    let mut sink = std::process::Command::new("smtp-sink")
        .args(["-L", "-u", "postfix", "-m", "4000"])
        .arg(format!("127.0.0.1:{sink_port}"))
        .arg("4096")
        .stderr(std::process::Stdio::null())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sink_pid = sink.id();

    let result = tokio::task::spawn_blocking(move || {
        for sessions in sessions {
            smtp_source(
                "baseline: smtp-sink (its CPU)",
                sink_port,
                &message,
                messages,
                sessions,
                Some(sink_pid),
            )?;
            let https_before = https.count();
            smtp_source(
                "filtermail-transport, HTTPS",
                over_https.lmtp_port,
                &message,
                messages,
                sessions,
                Some(over_https.daemon.pid()),
            )?;
            let smtp_before = smtp.messages();
            smtp_source(
                "filtermail-transport, SMTP",
                over_smtp.lmtp_port,
                &message,
                messages,
                sessions,
                Some(over_smtp.daemon.pid()),
            )?;
            let chunked_before = chunking.messages();
            smtp_source(
                "filtermail-transport, SMTP BDAT",
                over_bdat.lmtp_port,
                &message,
                messages,
                sessions,
                Some(over_bdat.daemon.pid()),
            )?;
            println!(
                "  delivered: HTTPS {} SMTP {} SMTP BDAT {}",
                https.count() - https_before,
                smtp.messages() - smtp_before,
                chunking.messages() - chunked_before,
            );
        }
        for (name, daemon) in [
            ("HTTPS", &over_https),
            ("SMTP", &over_smtp),
            ("SMTP BDAT", &over_bdat),
        ] {
            println!(
                "filtermail-transport ({name}) peak RSS: {} KiB",
                proc_status_kib(daemon.daemon.pid(), "VmHWM")
            );
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let _ = sink.kill();
    let _ = sink.wait();
    result?
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Blackhole { clients } => blackhole(clients).await,
            Command::Slow {
                messages,
                clients,
                delay_ms,
            } => slow(messages, clients, Duration::from_millis(delay_ms)).await,
            Command::Cpu {
                message,
                messages,
                sessions,
            } => cpu(message, messages, sessions).await,
        }
    })
}
