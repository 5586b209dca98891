use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::{dump_log, free_port, terminate, wait_for_path, wait_for_port};
use crate::tls::SelfSignedCert;
use crate::workdir::{VmailUser, WorkDir};

/// How a private Dovecot instance is set up.
#[derive(Debug, Clone, Default)]
pub struct DovecotOptions {
    /// An extra LMTP unix listener (usually inside Postfix's `private/`
    /// directory), owned by the postfix user as Postfix expects.
    pub lmtp_socket: Option<PathBuf>,
    /// An extra auth (SASL) unix listener for Postfix, usually
    /// `<postfix queue>/private/auth`.
    pub auth_socket: Option<PathBuf>,
    /// Configuration appended to the base: passdb/userdb sections, plugins.
    pub config: String,
}

/// A running private Dovecot serving IMAP over TLS and LMTP; stopped on
/// drop.
pub struct Dovecot {
    work: WorkDir,
    child: Child,
    imaps_port: u16,
    cert: SelfSignedCert,
    config_path: PathBuf,
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);
const START_LIMIT: Duration = Duration::from_secs(15);

impl Dovecot {
    pub fn start(options: &DovecotOptions) -> Result<Self> {
        let work = WorkDir::new()?;
        let vmail = VmailUser::lookup()?;
        let cert = SelfSignedCert::generate(work.path())?;
        let imaps_port = free_port()?;
        let log = work.path().join("dovecot.log");
        let instance = format!(
            "chatmail-test-{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        );

        let mut config = String::new();
        writeln!(config, "base_dir = {}", work.path().join("run").display())?;
        writeln!(
            config,
            "state_dir = {}",
            work.path().join("state").display()
        )?;
        writeln!(config, "instance_name = {instance}")?;
        writeln!(config, "log_path = {}", log.display())?;
        writeln!(config, "first_valid_uid = {}", vmail.uid)?;
        writeln!(config, "ssl_cert = <{}", cert.cert_path.display())?;
        writeln!(config, "ssl_key = <{}", cert.key_path.display())?;
        config.push_str(
            "listen = 127.0.0.1
protocols = imap lmtp
ssl = required
disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_username_chars = abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567890.-_@[]
mail_location = maildir:~
",
        );
        writeln!(
            config,
            "service imap-login {{\n  inet_listener imap {{\n    port = 0\n  }}\n  \
             inet_listener imaps {{\n    port = {imaps_port}\n    ssl = yes\n  }}\n}}"
        )?;
        if let Some(socket) = &options.lmtp_socket {
            config.push_str(&postfix_listener("lmtp", socket, "0600"));
        }
        if let Some(socket) = &options.auth_socket {
            config.push_str(&postfix_listener("auth", socket, "0660"));
        }
        config.push_str(&options.config);
        let config_path = work.path().join("dovecot.conf");
        fs::write(&config_path, config)?;

        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(work.path().join("dovecot.stderr"))?)
            .spawn()
            .context("running dovecot; is dovecot-core installed?")?;
        let dovecot = Self {
            work,
            child,
            imaps_port,
            cert,
            config_path,
        };
        wait_for_port(imaps_port, START_LIMIT).map_err(|err| dovecot.startup_error(err))?;
        for socket in options.lmtp_socket.iter().chain(&options.auth_socket) {
            wait_for_path(socket, START_LIMIT).map_err(|err| dovecot.startup_error(err))?;
        }
        Ok(dovecot)
    }

    fn startup_error(&self, err: anyhow::Error) -> anyhow::Error {
        let stderr =
            fs::read_to_string(self.work.path().join("dovecot.stderr")).unwrap_or_default();
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        err.context(format!(
            "dovecot did not start\nstderr: {stderr}\nlog: {log}"
        ))
    }

    #[must_use]
    pub fn imaps_port(&self) -> u16 {
        self.imaps_port
    }

    /// The certificate Dovecot presents, for clients to trust.
    #[must_use]
    pub fn cert(&self) -> &SelfSignedCert {
        &self.cert
    }

    #[must_use]
    pub fn config_path(&self) -> &PathBuf {
        &self.config_path
    }

    #[must_use]
    pub fn log_path(&self) -> PathBuf {
        self.work.path().join("dovecot.log")
    }
}

/// A unix listener of `service` at `socket`, owned by the postfix user as
/// Postfix expects of the peers in its `private/` directory.
fn postfix_listener(service: &str, socket: &std::path::Path, mode: &str) -> String {
    format!(
        "service {service} {{\n  unix_listener {} {{\n    user = postfix\n    \
         group = postfix\n    mode = {mode}\n  }}\n}}\n",
        socket.display()
    )
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_log("dovecot", &self.log_path());
        }
        terminate(&mut self.child, Duration::from_secs(10));
    }
}
