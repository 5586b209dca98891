//! `chatmail-configure [CONFIG]`: writes the Postfix, Dovecot, nginx and
//! OpenDKIM configuration of a chatmail relay and checks it with postconf,
//! doveconf, nginx -t and opendkim -n. `chatmail-configure dns [--check]`
//! prints the DNS records the relay needs, or checks them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use chatmail_config::{Config, DEFAULT_CONFIG_PATH, ensure_secret};
use chatmail_configure::acme::{self, AcmeLayout};
use chatmail_configure::{
    Context, Layout, OpenDkimLayout, Vmail, WebLayout, check_dovecot, check_nginx_site,
    check_opendkim, check_postfix, copy_www_files, dns, ensure_dkim_key, remove_unused, render_all,
    write_files,
};
use clap::{Parser, Subcommand};

/// What certbot runs after renewing the certificate: the servers that
/// use it read it again.
const RELOAD_ON_RENEWAL: &str = "systemctl reload postfix dovecot nginx";

#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    configure: Args,
}

#[derive(Subcommand)]
enum Command {
    /// Prints the DNS records the relay needs, in zone-file form; with
    /// --check, asks DNS and lists what is missing or different (exit
    /// status 1; 2 when DNS could not be asked).
    Dns(DnsArgs),
}

#[derive(clap::Args)]
struct DnsArgs {
    /// chatmail.ini of the relay.
    #[arg(default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Compare with what DNS answers instead of printing.
    #[arg(long)]
    check: bool,
    /// The relay's public IPv4 address (A record); repeatable.
    #[arg(long, value_name = "ADDRESS")]
    ipv4: Vec<Ipv4Addr>,
    /// The relay's public IPv6 address (AAAA record); repeatable.
    #[arg(long, value_name = "ADDRESS")]
    ipv6: Vec<Ipv6Addr>,
    /// The DKIM signing key (default: the one chatmail-configure creates).
    #[arg(long, value_name = "FILE")]
    dkim_key: Option<PathBuf>,
}

#[derive(clap::Args)]
struct Args {
    /// chatmail.ini of the relay.
    #[arg(default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Write into DIR/postfix, DIR/dovecot, DIR/nginx and DIR/www instead
    /// of /etc/postfix, /etc/dovecot, /etc/nginx/sites-available and
    /// /var/www/chatmail (the files then refer to each other there).
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// TLS certificate chain (PEM) for SMTP and IMAP.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// A DKIM signer of your own, as Postfix names a milter
    /// (`inet:127.0.0.1:8891`). Without it a domain relay signs with
    /// Debian's OpenDKIM, which chatmail-configure sets up (key, tables,
    /// /etc/opendkim.conf).
    #[arg(long, value_name = "MILTER")]
    dkim_milter: Option<String>,
    /// Get the certificate from an ACME CA with certbot (HTTP-01 through
    /// the relay's nginx site, which must already be serving: run once
    /// without it first); certbot's timer renews it and reloads the
    /// servers. chatmail.ini's acme_email registers the account.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    acme: bool,
    /// The CA's ACME directory.
    #[arg(long, value_name = "URL", default_value = acme::LETS_ENCRYPT, requires = "acme")]
    acme_server: String,
    /// CA certificates (PEM) to trust for the ACME server besides the
    /// system's, for a private CA.
    #[arg(long, value_name = "FILE", requires = "acme")]
    acme_ca_bundle: Option<PathBuf>,
    /// Skip `postconf`, `doveconf`, `nginx -t` and `opendkim -n` on the
    /// result.
    #[arg(long)]
    no_check: bool,
}

fn run(args: &Args) -> Result<()> {
    let config = Config::load(&args.config)?;
    let mut layout = Layout::system(Vmail::lookup()?);
    if let Some(dir) = &args.output {
        layout.postfix_dir = dir.join("postfix");
        layout.dovecot_dir = dir.join("dovecot");
        layout.web = WebLayout::in_dir(dir, layout.web.fcgiwrap_socket.clone());
        layout.opendkim = Some(OpenDkimLayout::in_dir(&dir.join("opendkim")));
        layout.acme = AcmeLayout::in_dir(&dir.join("acme"));
        layout.iroh_relay_config = dir.join("iroh-relay.toml");
        layout.journald_override = Some(dir.join("journald").join("chatmail.conf"));
    }
    let domain = config.mail_domain.address_domain();
    if args.acme {
        anyhow::ensure!(
            !config.mail_domain.is_ip(),
            "--acme: an IP-only relay gets no certificate from a CA"
        );
        if let Some((chain, key)) = layout.acme.certificate(&domain) {
            (layout.tls_cert, layout.tls_key) = (chain, key);
        }
    }
    if let Some(cert) = &args.tls_cert {
        layout.tls_cert.clone_from(cert);
    }
    if let Some(key) = &args.tls_key {
        layout.tls_key.clone_from(key);
    }
    layout.dkim_milter.clone_from(&args.dkim_milter);
    let context = Context::new(&config, &layout);
    let mut written = write_files(&render_all(&context, &layout)?)?;
    if args.acme && layout.acme.certificate(&domain).is_none() {
        // nginx serves the challenge from the web root it already has.
        let (chain, key) = acme::obtain(
            &layout.acme,
            &acme::AcmeRequest {
                domain: &domain,
                email: config.acme_email.as_deref(),
                server: &args.acme_server,
                webroot: &layout.web.www_dir,
                deploy_hook: RELOAD_ON_RENEWAL,
                ca_bundle: args.acme_ca_bundle.as_deref(),
            },
        )
        .context("getting the certificate")?;
        println!("obtained the certificate {}", chain.display());
        (layout.tls_cert, layout.tls_key) = (chain, key);
        let context = Context::new(&config, &layout);
        written.extend(write_files(&render_all(&context, &layout)?)?);
    }
    written.extend(copy_www_files(&context, &layout)?);
    for path in &written {
        println!("wrote {}", path.display());
    }
    let removed = remove_unused(&context, &layout)?;
    for path in &removed {
        println!("removed {} (no longer used)", path.display());
    }
    if written.is_empty() && removed.is_empty() {
        println!("configuration unchanged");
    }
    // chatmail-turn's secret: made once, when the relay is first
    // configured, and never replaced (credentials handed out stay valid).
    let turn_secret = match &args.output {
        Some(dir) => dir.join("chatmail-turn").join("secret"),
        None => config.turn.secret_path.clone(),
    };
    let owner = (args.output.is_none()).then_some((layout.vmail.uid, layout.vmail.gid));
    if ensure_secret(&turn_secret, owner)
        .with_context(|| format!("creating {} (turn_secret_path)", turn_secret.display()))?
    {
        println!("created the TURN secret {}", turn_secret.display());
    }
    let opendkim = layout.opendkim.as_ref().filter(|_| context.dkim.is_some());
    if let Some(opendkim) = opendkim {
        let selector = &config.dkim_selector;
        if ensure_dkim_key(opendkim, selector)? {
            println!(
                "created the DKIM key {} (publish it: chatmail-configure dns)",
                opendkim.key_file(selector).display()
            );
        }
    }
    if !args.no_check {
        check_postfix(&layout.postfix_dir).context("the rendered Postfix configuration")?;
        check_dovecot(&layout.dovecot_dir.join("dovecot.conf"))
            .context("the rendered Dovecot configuration")?;
        let scratch =
            std::env::temp_dir().join(format!("chatmail-configure-nginx-{}", std::process::id()));
        let checked = check_nginx_site(&layout.web.nginx_conf, &scratch);
        // Only nginx's scratch files are in there.
        let _ = std::fs::remove_dir_all(&scratch);
        checked.context("the rendered nginx configuration")?;
        if let Some(opendkim) = opendkim {
            check_opendkim(&opendkim.conf).context("the rendered OpenDKIM configuration")?;
        }
        println!("postconf, doveconf and nginx accept the configuration");
    }
    if (!written.is_empty() || !removed.is_empty()) && args.output.is_none() {
        let mut restart = Vec::new();
        if opendkim.is_some() {
            restart.push("opendkim");
        }
        // Its unit starts only while its configuration exists.
        if context.iroh.is_some() || !removed.is_empty() {
            restart.push("iroh-relay");
        }
        if written
            .iter()
            .chain(&removed)
            .any(|path| Some(path) == layout.journald_override.as_ref())
        {
            restart.push("systemd-journald");
        }
        if restart.is_empty() {
            println!("apply it with: systemctl reload postfix dovecot nginx");
        } else {
            println!(
                "apply it with: systemctl restart {} && systemctl reload postfix dovecot nginx",
                restart.join(" ")
            );
        }
    }
    Ok(())
}

/// `chatmail-configure dns`: prints the zone, or checks it (exit status
/// 1 when records are missing or different).
fn dns(args: &DnsArgs) -> Result<ExitCode> {
    let config = Config::load(&args.config)?;
    anyhow::ensure!(
        !config.mail_domain.is_ip(),
        "{} is an IP-only relay: it needs no DNS records",
        config.mail_domain
    );
    let key = args
        .dkim_key
        .clone()
        .unwrap_or_else(|| OpenDkimLayout::system().key_file(&config.dkim_selector));
    let dkim_record = if key.exists() {
        Some(chatmail_configure::dkim_dns_record(&key)?)
    } else {
        eprintln!(
            "chatmail-configure: no DKIM key at {} yet (chatmail-configure creates it): \
             its record is left out",
            key.display()
        );
        None
    };
    let addresses: Vec<IpAddr> = (args.ipv4.iter().copied().map(IpAddr::V4))
        .chain(args.ipv6.iter().copied().map(IpAddr::V6))
        .collect();
    let zone = dns::zone(
        &config,
        &dns::ZoneInput {
            dkim_record: dkim_record.as_deref(),
            addresses: &addresses,
        },
    );
    if !args.check {
        print!("{zone}");
        return Ok(ExitCode::SUCCESS);
    }
    let domain = config.mail_domain.address_domain();
    let expected = dns::parse_zone(&zone, &domain).map_err(anyhow::Error::msg)?;
    let resolver = chatmail_dns::resolver(&config, chatmail_dns::NegativeAnswers::Forgotten)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let checked = runtime.block_on(dns::check(&expected, &resolver));
    let mismatches = match checked {
        Ok(mismatches) => mismatches,
        Err(error) => {
            eprintln!("chatmail-configure: cannot check DNS: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    for mismatch in &mismatches {
        let found = if mismatch.found.is_empty() {
            "nothing".to_owned()
        } else {
            mismatch.found.join(" | ")
        };
        for value in &mismatch.missing {
            println!(
                "missing: {} {} {value}  (DNS has: {found})",
                mismatch.name, mismatch.record_type
            );
        }
    }
    if mismatches.is_empty() {
        println!("all {} record sets of {domain} are in DNS", expected.len());
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A failed `dns --check` says 1 by itself; it cannot check: 2.
    let (result, failed) = match &cli.command {
        Some(Command::Dns(args)) => (dns(args), ExitCode::from(2)),
        None => (
            run(&cli.configure).map(|()| ExitCode::SUCCESS),
            ExitCode::FAILURE,
        ),
    };
    result.unwrap_or_else(|err| {
        eprintln!("chatmail-configure: {err:#}");
        failed
    })
}
