//! `chatmail-local-relay`: a complete IP-only chatmail relay on a loopback
//! address — private Postfix and Dovecot instances configured by
//! chatmail-configure, and every chatmail daemon — until Ctrl-C.

mod loopback;
mod ports;
mod processes;
mod relay;
mod state;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;

use crate::ports::Ports;
use crate::processes::{Process, run};
use crate::relay::{LocalRelay, Options};

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The loopback address the relay listens on; its mail domain is
    /// `[ADDRESS]` unless `--ini mail_domain=NAME` names a domain (then
    /// OpenDKIM signs its mail, as chatmail-configure sets it up).
    #[arg(long, default_value = "127.0.0.1")]
    listen: Ipv4Addr,
    /// Standard port N is served on PORT_BASE + N (SMTP 25 -> 20025,
    /// submission 465 -> 20465, IMAP 993 -> 20993); internal ports are
    /// PORT_BASE + 1025 and up.
    #[arg(long, default_value_t = 20000)]
    port_base: u16,
    /// The port base of the relays this one delivers to: remote HTTPS
    /// (/mxdeliv) is tried on PEER_PORT_BASE + 443, then SMTP on
    /// PEER_PORT_BASE + 25 (default: the same as ours, as for a second
    /// relay on another loopback address).
    #[arg(long)]
    peer_port_base: Option<u16>,
    /// Mailboxes, sockets, logs, queue and configuration (default
    /// /var/tmp/chatmail-local-relay/ADDRESS); kept across runs.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// An extra chatmail.ini setting, KEY=VALUE (repeatable).
    #[arg(long = "ini", value_name = "KEY=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// Where the chatmail daemons are (default: beside this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// A certificate chain (PEM) instead of the self-signed one made for
    /// the address, for a domain relay other relays verify.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    Ok((key.trim().to_owned(), value.trim().to_owned()))
}

/// What is running; everything is stopped on drop, last started first.
struct Running {
    processes: Vec<Process>,
    postfix_dir: Option<PathBuf>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Postfix first: no new mail while the rest stops.
        if let Some(dir) = self.postfix_dir.take() {
            stop_postfix(&dir);
        }
        while let Some(process) = self.processes.pop() {
            process.stop();
        }
    }
}

fn stop_postfix(config_dir: &Path) {
    if let Err(err) = run(
        Command::new("postfix")
            .arg("-c")
            .arg(config_dir)
            .arg("stop"),
        "postfix stop",
    ) {
        eprintln!("{err:#}");
    }
}

fn random_text(len: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    Ok(bytes
        .iter()
        .filter_map(|b| ALPHABET.get(usize::from(*b) % ALPHABET.len()))
        .map(|b| char::from(*b))
        .collect())
}

fn start(args: &Args) -> Result<Running> {
    if !nix::unistd::geteuid().is_root() {
        bail!("run as root: Postfix and Dovecot start as root and drop privileges");
    }
    if !args.listen.is_loopback() {
        bail!("--listen {} is not a loopback address", args.listen);
    }
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("program directory")?
            .to_owned(),
    };
    let relay = LocalRelay::prepare(&Options {
        address: args.listen,
        ports: Ports::from_base(args.port_base)?,
        peer_ports: Ports::from_base(args.peer_port_base.unwrap_or(args.port_base))?,
        state_dir: args.state_dir.clone().unwrap_or_else(|| {
            PathBuf::from(format!("/var/tmp/chatmail-local-relay/{}", args.listen))
        }),
        settings: args.settings.clone(),
        bin_dir,
        tls: args.tls_cert.clone().zip(args.tls_key.clone()),
    })?;
    let mut running = Running {
        processes: Vec::new(),
        postfix_dir: None,
    };
    relay.start_daemons(&mut running.processes)?;
    relay.start_iroh_relay(&mut running.processes)?;
    relay.start_opendkim(&mut running.processes)?;
    relay.start_postfix()?;
    running.postfix_dir = Some(relay.layout.postfix_dir.clone());
    running.processes.push(relay.start_dovecot()?);
    relay.start_web(&mut running.processes)?;
    print_welcome(args.listen, &relay)?;
    Ok(running)
}

fn print_welcome(address: Ipv4Addr, relay: &LocalRelay) -> Result<()> {
    let (domain, state) = (&relay.domain, &relay.state);
    let user = random_text(9)?;
    let password = random_text(20)?;
    let public = relay.ports.public;
    println!("chatmail relay {domain} is running.");
    println!();
    println!(
        "  IMAP  {address}:{} (TLS), {address}:{} (STARTTLS), {address}:{} (TLS, ALPN imap)",
        public.imaps, public.imap, public.https
    );
    println!(
        "  SMTP  {address}:{} (TLS), {address}:{} (STARTTLS), {address}:{} (TLS, ALPN smtp), \
         {address}:{} (from other relays)",
        public.smtps, public.submission, public.https, public.smtp
    );
    println!(
        "  HTTPS https://{address}:{}/ (the relay's pages; POST /new hands out accounts; \
         other relays POST /mxdeliv)",
        public.https
    );
    println!(
        "  calls (TURN) {address}:{} (UDP; relays to loopback peers too)",
        relay.ports.turn
    );
    if let Some(url) = &relay.iroh_relay {
        println!("  realtime (iroh relay) {url}/relay, through nginx");
    }
    for (key, addr) in &relay.metrics {
        let name = key.trim_start_matches("metrics_listen_").replace('_', "-");
        println!("  metrics http://{addr}/metrics ({name})");
    }
    println!("  state {}", state.root.display());
    println!("  logs  {}", state.log().display());
    println!();
    println!("Any new address logs in and creates its account; in Delta Chat, scan or paste:");
    println!();
    println!(
        "  dclogin:{user}@{domain}?p={password}&v=1&ih={address}&ip={}&is=ssl&sh={address}&sp={}&ss=ssl&ic=3",
        public.imaps, public.smtps
    );
    println!();
    println!("(ic=3 accepts the relay's self-signed certificate.) Ctrl-C stops the relay.");
    Ok(())
}

/// Restarts a daemon that exits, as systemd does (Restart=always); a
/// daemon that keeps exiting right after its start, or Dovecot exiting,
/// stops the relay.
async fn watch(running: &mut Running) {
    const QUICK_EXIT: Duration = Duration::from_secs(2);
    const MAX_QUICK_EXITS: u32 = 5;
    const PERIOD: Duration = Duration::from_millis(500);
    // Not at once: a Ctrl-C that also stopped the daemons must be seen
    // first, and it is only seen once the runtime has waited for events.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PERIOD, PERIOD);
    let mut started = vec![std::time::Instant::now(); running.processes.len()];
    let mut quick_exits = vec![0u32; running.processes.len()];
    let mut nginx_reported = false;
    loop {
        tick.tick().await;
        for (index, process) in running.processes.iter_mut().enumerate() {
            let Some(status) = process.exited() else {
                continue;
            };
            if process.name == "dovecot" {
                eprintln!("dovecot exited ({status}); stopping the relay. See its log.");
                return;
            }
            if process.name == "nginx" {
                // As a relay whose web server is down: other relays
                // deliver over SMTP, and /new is gone until a restart.
                if !nginx_reported {
                    eprintln!(
                        "nginx exited ({status}); other relays now deliver over SMTP. \
                         Restart the relay to bring HTTPS back."
                    );
                    nginx_reported = true;
                }
                continue;
            }
            let (Some(since), Some(quick)) = (started.get_mut(index), quick_exits.get_mut(index))
            else {
                return;
            };
            *quick = if since.elapsed() < QUICK_EXIT {
                *quick + 1
            } else {
                0
            };
            if *quick >= MAX_QUICK_EXITS {
                eprintln!(
                    "{} keeps exiting ({status}); stopping the relay. See its log.",
                    process.name
                );
                return;
            }
            eprintln!("{} exited ({status}); restarting it", process.name);
            if let Err(err) = process.restart() {
                eprintln!(
                    "cannot restart {}: {err:#}; stopping the relay",
                    process.name
                );
                return;
            }
            *since = std::time::Instant::now();
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("chatmail-local-relay: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Caught before anything starts: Ctrl-C during the start, or right
    // after it, must stop what was started, not kill this program alone.
    let mut signals = match runtime.block_on(async { chatmail_daemon::ShutdownSignals::catch() }) {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("chatmail-local-relay: cannot catch Ctrl-C: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut running = match start(&args) {
        Ok(running) => running,
        Err(err) => {
            eprintln!("chatmail-local-relay: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let crashed = runtime.block_on(async {
        tokio::select! {
            // Ctrl-C at a terminal reaches the daemons too: once it is
            // here, their exits are the stop, not crashes to restart.
            biased;
            () = signals.received() => false,
            () = watch(&mut running) => true,
        }
    });
    println!("stopping the relay");
    drop(running);
    if crashed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
