//! Chaos soak: two local relays (chatmail-local-relay on 127.0.0.1 and
//! 127.0.0.2) under Delta Chat-shaped traffic, encrypted messages between
//! accounts on both relays, logins and push registrations, while the
//! chatmail daemons are killed with SIGKILL at random moments (the local
//! relay restarts them, as systemd does). At the end the queues are
//! flushed and every message accounted for: sent (accepted with 250),
//! delivered, duplicated, lost; and each daemon's memory over the run.
//!
//! ```sh
//! sudo bash tests/bench/chaos-soak.sh --minutes 10
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use rand::seq::IndexedRandom as _;
use rand::{Rng, SeedableRng};
use relay_tests::{ImapClient, PushServer, SelfSignedCert, SmtpClient, TestCa, proc_status_kib};

#[derive(Parser)]
struct Cli {
    /// How long traffic and chaos last.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Accounts on each relay.
    #[arg(long, default_value_t = 20)]
    accounts: usize,
    /// Messages sent at once.
    #[arg(long, default_value_t = 8)]
    senders: usize,
    /// Mean seconds between two kills.
    #[arg(long, default_value_t = 10.0)]
    kill_every: f64,
    /// Where chatmail-local-relay and the daemons are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where the relays keep their state (emptied first).
    #[arg(long, default_value = "/var/tmp/chatmail-chaos-soak")]
    state_dir: PathBuf,
}

const DAEMONS: &[&str] = &[
    "doveauth",
    "lastlogin",
    "chatmail-metadata",
    "filtermail-outgoing",
    "filtermail-incoming",
    "filtermail-transport",
];
const PASSWORD: &str = "soak-password-1";
/// Port bases far from the tests' and the local relay's defaults.
const PORT_BASES: [u16; 2] = [40_000, 42_000];

struct Relay {
    ip: IpAddr,
    state: PathBuf,
    port_base: u16,
    cert: SelfSignedCert,
    child: Child,
}

impl Relay {
    fn start(cli: &Cli, index: usize, ini: &[String]) -> Result<Self> {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, u8::try_from(index + 1)?));
        let port_base = PORT_BASES.get(index).copied().context("two relays")?;
        let peer_base = PORT_BASES.get(1 - index).copied().context("two relays")?;
        let state = cli.state_dir.join(format!("relay-{}", index + 1));
        let mut command = Command::new(cli.bin_dir.join("chatmail-local-relay"));
        command
            .arg("--listen")
            .arg(ip.to_string())
            .arg("--port-base")
            .arg(port_base.to_string())
            .arg("--peer-port-base")
            .arg(peer_base.to_string())
            .arg("--state-dir")
            .arg(&state)
            .arg("--bin-dir")
            .arg(&cli.bin_dir);
        for setting in ini {
            command.arg("--ini").arg(setting);
        }
        let log = std::fs::File::create(cli.state_dir.join(format!("relay-{}.out", index + 1)))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting chatmail-local-relay")?;
        let cert = SelfSignedCert {
            cert_path: state.join("tls/cert.pem"),
            key_path: state.join("tls/key.pem"),
        };
        let relay = Self {
            ip,
            state,
            port_base,
            cert,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect((ip, port_base + 993)).is_err() {
            if Instant::now() > deadline {
                bail!("relay {ip} did not start; see {}", cli.state_dir.display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(relay)
    }

    fn address(&self, local: &str) -> String {
        format!("{local}@[{}]", self.ip)
    }

    /// The pid of `daemon` of this relay, found by its program path.
    fn pid(&self, daemon: &str) -> Option<u32> {
        let program = self.state.join("bin").join(daemon);
        let program = program.to_string_lossy();
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let first = cmdline.split(|&b| b == 0).next()?;
                (first == program.as_bytes()).then_some(pid)
            })
    }

    fn postfix_dir(&self) -> PathBuf {
        self.state.join("postfix")
    }

    fn queued(&self) -> usize {
        Command::new("postqueue")
            .arg("-c")
            .arg(self.postfix_dir())
            .arg("-j")
            .output()
            .map_or(usize::MAX, |output| {
                output
                    .stdout
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count()
            })
    }

    fn flush(&self) {
        let _ = Command::new("postqueue")
            .arg("-c")
            .arg(self.postfix_dir())
            .arg("-f")
            .status();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let _ = self.child.wait();
    }
}

/// The counts of the run.
#[derive(Default)]
struct Tally {
    sent: Mutex<Vec<String>>,
    refused: AtomicU64,
    errors: AtomicU64,
    logins: AtomicU64,
    kills: Mutex<BTreeMap<String, u64>>,
}

/// Memory of each daemon (by relay and name): first and peak samples,
/// and the peak of each half of the run.
#[derive(Default)]
struct Memory {
    samples: Mutex<HashMap<String, Vec<(Duration, u64)>>>,
}

fn message(from: &str, to: &str, id: &str) -> String {
    relay_tests::test_mail("encrypted.eml", from, to).replacen(
        "Message-ID: <Mr.UVyJWZmkCKM.hGzNc6glBE_@c2.testrun.org>",
        &format!("Message-ID: <{id}>"),
        1,
    )
}

async fn send_one(relays: &[Relay], tally: &Tally, rng: &mut impl Rng, n: u64, accounts: usize) {
    let from_relay = rng.random_range(0..relays.len());
    let to_relay = rng.random_range(0..relays.len());
    let (Some(source), Some(target)) = (relays.get(from_relay), relays.get(to_relay)) else {
        return;
    };
    let sender = source.address(&account(from_relay, rng.random_range(0..accounts)));
    let recipient = target.address(&account(to_relay, rng.random_range(0..accounts)));
    let id = format!("soak-{n}-{}@chaos.test", rng.random::<u32>());
    let text = message(&sender, &recipient, &id);
    let attempt = async {
        let mut client =
            SmtpClient::connect_tls_at(source.ip, source.port_base + 465, &source.cert).await?;
        client.ehlo().await?;
        let auth = client.auth_plain(&sender, PASSWORD).await?;
        if auth.code != 235 {
            bail!("AUTH: {}", auth.text);
        }
        let reply = client.send(&sender, &[&recipient], &text).await?;
        client.quit().await;
        anyhow::Ok(reply)
    };
    match tokio::time::timeout(Duration::from_secs(120), attempt).await {
        Ok(Ok(reply)) if reply.code == 250 => tally
            .sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id),
        Ok(Ok(_)) => {
            tally.refused.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            tally.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn account(relay: usize, index: usize) -> String {
    format!("soak{relay}{index:04}")
}

async fn login(relay: &Relay, local: &str, token: Option<&str>) -> Result<()> {
    let mut imap = ImapClient::connect_at(relay.ip, relay.port_base + 993, &relay.cert).await?;
    if !imap.login(&relay.address(local), PASSWORD).await? {
        bail!("login refused");
    }
    if let Some(token) = token {
        imap.command(&format!(
            "SETMETADATA INBOX (/private/devicetoken \"{token}\")"
        ))
        .await?;
    }
    Ok(())
}

/// Message-IDs in every message file of the relay's mailboxes.
fn delivered_ids(relay: &Relay, into: &mut HashMap<String, u32>) -> Result<()> {
    for mailbox in std::fs::read_dir(relay.state.join("mail"))?.flatten() {
        for folder in ["new", "cur"] {
            let Ok(files) = std::fs::read_dir(mailbox.path().join(folder)) else {
                continue;
            };
            for file in files.flatten() {
                let Ok(text) = relay_tests::read_message(&file.path()) else {
                    continue;
                };
                if let Some(id) = text
                    .lines()
                    .find_map(|line| line.strip_prefix("Message-ID: <"))
                    .and_then(|rest| rest.strip_suffix('>'))
                    .filter(|id| id.starts_with("soak-"))
                {
                    *into.entry(id.to_owned()).or_default() += 1;
                }
            }
        }
    }
    Ok(())
}

fn sample_memory(relays: &[Relay], memory: &Memory, at: Duration) {
    let mut samples = memory
        .samples
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for (index, relay) in relays.iter().enumerate() {
        for daemon in DAEMONS {
            if let Some(pid) = relay.pid(daemon) {
                let rss = proc_status_kib(pid, "VmRSS");
                if rss > 0 {
                    samples
                        .entry(format!("relay {} {daemon}", index + 1))
                        .or_default()
                        .push((at, rss));
                }
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    relay_tests::raise_fd_limit()?;
    let _ = std::fs::remove_dir_all(&cli.state_dir);
    std::fs::create_dir_all(&cli.state_dir)?;
    set_mode(&cli.state_dir, 0o755)?;
    let ca_dir = cli.state_dir.join("ca");
    std::fs::create_dir_all(&ca_dir)?;
    set_mode(&ca_dir, 0o755)?;
    let ca = TestCa::generate(&ca_dir)?;
    set_mode(&ca.ca_path, 0o644)?;
    let push = PushServer::start(&ca).await?;
    push.count_only();
    let ini = vec![
        "max_user_send_per_minute=100000".to_owned(),
        "max_user_send_burst_size=100000".to_owned(),
        format!("notification_url={}", push.url()),
        format!("notification_ca_file={}", ca.ca_path.display()),
        "notification_retry_base=1s".to_owned(),
    ];
    let relays = vec![Relay::start(&cli, 0, &ini)?, Relay::start(&cli, 1, &ini)?];
    println!("relays on 127.0.0.1 and 127.0.0.2 are up; creating accounts");
    for (index, relay) in relays.iter().enumerate() {
        for n in 0..cli.accounts {
            let local = account(index, n);
            login(relay, &local, Some(&format!("token-{local}"))).await?;
        }
    }

    let tally = Arc::new(Tally::default());
    let memory = Arc::new(Memory::default());
    let relays = Arc::new(relays);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let duration = Duration::from_secs_f64(cli.minutes * 60.0);
    let counter = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..cli.senders {
        let (relays, tally, stop, counter) = (
            Arc::clone(&relays),
            Arc::clone(&tally),
            Arc::clone(&stop),
            Arc::clone(&counter),
        );
        let accounts = cli.accounts;
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(worker as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                send_one(&relays, &tally, &mut rng, n, accounts).await;
                // Logins and token refreshes between messages.
                if n % 5 == 0 {
                    let index = rng.random_range(0..relays.len());
                    if let Some(relay) = relays.get(index) {
                        let local = account(index, rng.random_range(0..accounts));
                        let token = format!("token-{local}");
                        if login(relay, &local, Some(&token)).await.is_ok() {
                            tally.logins.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }
    // Chaos and memory samples until the end of the run.
    let mut rng = rand::rngs::SmallRng::seed_from_u64(99);
    let mut next_kill =
        Instant::now() + Duration::from_secs_f64(rng.random_range(0.0..2.0 * cli.kill_every));
    while started.elapsed() < duration {
        sample_memory(&relays, &memory, started.elapsed());
        if Instant::now() >= next_kill {
            let index = rng.random_range(0..relays.len());
            let daemon = DAEMONS.choose(&mut rng).copied().unwrap_or("doveauth");
            if let Some(pid) = relays.get(index).and_then(|relay| relay.pid(daemon)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(pid)?),
                    nix::sys::signal::Signal::SIGKILL,
                );
                *tally
                    .kills
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(format!("relay {} {daemon}", index + 1))
                    .or_default() += 1;
            }
            next_kill = Instant::now()
                + Duration::from_secs_f64(rng.random_range(0.0..2.0 * cli.kill_every));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    println!(
        "traffic stopped after {:?}; draining the queues",
        started.elapsed()
    );

    // Everything queued is retried until the queues are empty.
    let drain_deadline = Instant::now() + Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let queued: usize = relays.iter().map(Relay::queued).sum();
        if queued == 0 || Instant::now() > drain_deadline {
            println!("queues: {queued} left");
            break;
        }
        for relay in relays.iter() {
            relay.flush();
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    sample_memory(&relays, &memory, started.elapsed());

    let sent = tally
        .sent
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut seen = HashMap::new();
    for relay in relays.iter() {
        delivered_ids(relay, &mut seen)?;
    }
    let lost: Vec<&String> = sent.iter().filter(|id| !seen.contains_key(*id)).collect();
    let duplicated = seen.values().filter(|count| **count > 1).count();
    println!();
    println!(
        "{:.1} minutes: {} sent (250), {} refused, {} client errors (connection, 4xx during a kill), {} logins",
        cli.minutes,
        sent.len(),
        tally.refused.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
        tally.logins.load(Ordering::Relaxed)
    );
    println!(
        "delivered {}, duplicated {duplicated}, lost {}",
        sent.len() - lost.len(),
        lost.len()
    );
    println!("push notifications received: {}", push.count());
    let kills = tally.kills.lock().unwrap_or_else(PoisonError::into_inner);
    println!(
        "SIGKILLs: {} ({})",
        kills.values().sum::<u64>(),
        kills
            .iter()
            .map(|(daemon, count)| format!("{daemon} {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "\nresident memory (KiB): first sample, peak in the first half, peak in the second half, last"
    );
    let half = duration / 2;
    let samples = memory
        .samples
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut names: Vec<&String> = samples.keys().collect();
    names.sort();
    for name in names {
        let Some(series) = samples.get(name) else {
            continue;
        };
        let peak = |first: bool| {
            series
                .iter()
                .filter(|(at, _)| (*at < half) == first)
                .map(|(_, rss)| *rss)
                .max()
                .unwrap_or(0)
        };
        println!(
            "  {name:32} {:>7} {:>7} {:>7} {:>7}",
            series.first().map_or(0, |s| s.1),
            peak(true),
            peak(false),
            series.last().map_or(0, |s| s.1)
        );
    }
    if !lost.is_empty() {
        println!("\nlost: {lost:?}");
        bail!("{} messages lost", lost.len());
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}
