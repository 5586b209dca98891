//! `chatmail-configure [CONFIG]`: writes the Postfix, Dovecot and nginx
//! configuration of a chatmail relay and checks it with postconf,
//! doveconf and nginx -t.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use chatmail_config::{Config, DEFAULT_CONFIG_PATH};
use chatmail_configure::{
    Context, Layout, OpenDkimLayout, Vmail, WebLayout, check_dovecot, check_nginx_site,
    check_opendkim, check_postfix, ensure_dkim_key, render_all, write_files,
};
use clap::Parser;

#[derive(Parser)]
#[command(version, about)]
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
    /// Skip `postconf`, `doveconf` and `nginx -t` on the result.
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
    }
    if let Some(cert) = &args.tls_cert {
        layout.tls_cert.clone_from(cert);
    }
    if let Some(key) = &args.tls_key {
        layout.tls_key.clone_from(key);
    }
    layout.dkim_milter.clone_from(&args.dkim_milter);
    let context = Context::new(&config, &layout);
    let files = render_all(&context, &layout)?;
    let written = write_files(&files)?;
    for path in &written {
        println!("wrote {}", path.display());
    }
    if written.is_empty() {
        println!("configuration unchanged");
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
        let checked = check_nginx_site(&layout.web.site, &scratch);
        // Only nginx's scratch files are in there.
        let _ = std::fs::remove_dir_all(&scratch);
        checked.context("the rendered nginx site")?;
        if let Some(opendkim) = opendkim {
            check_opendkim(&opendkim.conf).context("the rendered OpenDKIM configuration")?;
        }
        println!("postconf, doveconf and nginx accept the configuration");
    }
    if let Some(enabled) = &layout.web.sites_enabled {
        enable_site(&layout.web.site, enabled)?;
    }
    if !written.is_empty() && args.output.is_none() {
        if opendkim.is_some() {
            println!(
                "apply it with: systemctl restart opendkim && systemctl reload postfix dovecot nginx"
            );
        } else {
            println!("apply it with: systemctl reload postfix dovecot nginx");
        }
    }
    Ok(())
}

/// Links the site into nginx's sites-enabled (as Debian's packages do),
/// unless a file of that name is already there.
fn enable_site(site: &Path, enabled_dir: &Path) -> Result<()> {
    let Some(name) = site.file_name() else {
        return Ok(());
    };
    let link = enabled_dir.join(name);
    if link.symlink_metadata().is_ok() || !enabled_dir.is_dir() {
        return Ok(());
    }
    std::os::unix::fs::symlink(site, &link)
        .with_context(|| format!("linking {} to {}", link.display(), site.display()))?;
    println!("enabled the nginx site: {}", link.display());
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chatmail-configure: {err:#}");
            ExitCode::FAILURE
        }
    }
}
