//! A whole relay on loopback for end-to-end tests: Postfix and Dovecot
//! with the integration files this repository ships, doveauth and
//! lastlogin behind Dovecot, and optionally filtermail-outgoing behind
//! Postfix's submission services and filtermail-incoming behind its
//! port-25 service.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use chatmail_config::MetricsDaemon;
use chatmail_configure::{
    BehindHttps, Context, DictSockets, Layout, OpenDkimLayout, Vmail, ensure_dkim_key,
    render_template,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::daemon::{Daemon, Ready};
use crate::dovecot::{Dovecot, DovecotOptions};
use crate::imap::ImapClient;
use crate::metrics::{Scrape, metrics_ini_values};
use crate::postfix::{Postfix, PostfixOptions};
use crate::process::{free_port, wait_for_port};
use crate::smtp::SmtpClient;
use crate::workdir::{VmailUser, WorkDir};

#[derive(Debug, Clone, Default)]
pub struct RelayOptions {
    /// chatmail.ini lines (`key = value`) that override the test defaults.
    pub ini: Vec<(String, String)>,
    /// Route submission through filtermail-outgoing (the shipped
    /// postfix/master.cf services), instead of straight into the queue.
    pub outgoing_filter: bool,
    /// Route mail from other servers through filtermail-incoming: the
    /// shipped port-25 service (on a free port, see [`Relay::mx_port`]).
    pub incoming_filter: bool,
    /// Load the shipped quota fragment, rendered with `max_mailbox_size`
    /// of the ini and this workspace's chatmail-quota-expire.
    pub quota: bool,
    /// Run chatmail-metadata behind Dovecot's mail_attribute_dict with the
    /// shipped fragment and Lua push script.
    pub metadata: bool,
    /// Sign outgoing mail with OpenDKIM, set up as chatmail-configure
    /// does for a domain relay (key, tables, opendkim.conf) in the work
    /// directory; see [`Relay::dkim_key`].
    pub opendkim: bool,
}

pub struct Relay {
    // Dropped in declaration order: servers, then daemons, then files.
    pub dovecot: Dovecot,
    pub postfix: Postfix,
    _daemons: Vec<Daemon>,
    outgoing_filter: Option<Daemon>,
    incoming_filter: Option<Daemon>,
    metadata: Option<Daemon>,
    ini_values: BTreeMap<String, String>,
    /// Implicit-TLS submission (as on port 465).
    pub submission_port: u16,
    mx_port: Option<u16>,
    pub work: WorkDir,
}

fn dict_args(socket: &Path, ini: &Path) -> Vec<OsString> {
    vec![
        socket.as_os_str().to_owned(),
        ini.as_os_str().to_owned(),
        "--socket-mode".into(),
        "660".into(),
    ]
}

fn start_daemon(name: &str, args: &[OsString], ready: Ready<'_>, log_dir: &Path) -> Result<Daemon> {
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(AsRef::as_ref).collect();
    Daemon::start(name, &refs, ready, log_dir)
}

impl Relay {
    pub fn start(options: &RelayOptions) -> Result<Self> {
        let work = WorkDir::new()?;
        let vmail = VmailUser::lookup()?;
        let mail = work.subdir("mail", 0o755)?;
        vmail.own(&mail)?;
        let run = work.subdir("run", 0o755)?;
        vmail.own(&run)?;

        let filter_port = free_port()?;
        let reinject_port = free_port()?;
        let incoming_port = free_port()?;
        let incoming_http_port = free_port()?;
        let reinject_incoming_port = free_port()?;
        let mut ini_values: BTreeMap<String, String> = [
            ("mail_domain", "127.0.0.1".to_owned()),
            ("mailboxes_dir", mail.display().to_string()),
            (
                "nocreate_file",
                work.path().join("nocreate").display().to_string(),
            ),
            ("max_load_1m", "1000".to_owned()),
            ("min_free_disk_space", "1M".to_owned()),
            ("min_available_memory", "1M".to_owned()),
            ("filtermail_smtp_port", filter_port.to_string()),
            ("postfix_reinject_port", reinject_port.to_string()),
            ("filtermail_smtp_port_incoming", incoming_port.to_string()),
            (
                "filtermail_http_port_incoming",
                incoming_http_port.to_string(),
            ),
            (
                "postfix_reinject_port_incoming",
                reinject_incoming_port.to_string(),
            ),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .chain(metrics_ini_values()?)
        .collect();
        for (key, value) in &options.ini {
            ini_values.insert(key.clone(), value.clone());
        }

        let mut relay_daemons = Vec::new();
        let ini = write_ini(work.path(), &ini_values)?;
        let auth_socket = run.join("doveauth.socket");
        let lastlogin_socket = run.join("lastlogin.socket");
        relay_daemons.push(start_daemon(
            "doveauth",
            &dict_args(&auth_socket, &ini),
            Ready::Socket(&auth_socket),
            work.path(),
        )?);
        relay_daemons.push(start_daemon(
            "lastlogin",
            &dict_args(&lastlogin_socket, &ini),
            Ready::Socket(&lastlogin_socket),
            work.path(),
        )?);

        // The shipped templates, rendered for this relay's paths and ports.
        let config = chatmail_config::Config::load(&ini)?;
        let starttls_port = free_port()?;
        let submission_port = free_port()?;
        let mx_port = free_port()?;
        let mut layout = Layout::system(Vmail {
            uid: vmail.uid,
            gid: vmail.gid,
        });
        layout.postfix_dir = work.subdir("postfix-maps", 0o755)?;
        layout.dovecot_dir = work.path().to_owned();
        layout.sockets = DictSockets::in_dir(&run);
        layout.bin_dir = crate::daemon::daemon_binary("chatmail-quota-expire")?
            .parent()
            .context("binary directory")?
            .to_owned();
        layout.listen = Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        layout.ports.smtp = mx_port;
        layout.ports.submission = starttls_port;
        layout.ports.smtps = submission_port;
        // Postfix's submission behind port 443 (no nginx here): a port of
        // its own, as every instance runs beside others.
        layout.ports.behind_https = BehindHttps {
            web: free_port()?,
            imaps: free_port()?,
            smtps: free_port()?,
        };
        layout.opendkim = options
            .opendkim
            .then(|| OpenDkimLayout::in_dir(&work.path().join("opendkim")));
        let context = Context::new(&config, &layout);
        let opendkim = match &layout.opendkim {
            Some(opendkim) => Some(start_opendkim(&context, opendkim, &config)?),
            None => None,
        };
        let rendered = |name: &str| render_template(name, &context);
        fs::write(
            work.path().join("auth.conf"),
            rendered("dovecot/auth.conf")?,
        )?;
        // Global mail_plugins must come before protocol blocks.
        let mut dovecot_config = rendered("dovecot/mailstore.conf.ext")?;
        if options.quota {
            // Global mail_plugins must come before protocol blocks.
            dovecot_config.push_str(&rendered("dovecot/quota.conf.ext")?);
        }
        dovecot_config.push_str(&rendered("dovecot/auth-dict.conf.ext")?);
        dovecot_config.push_str(&rendered("dovecot/last-login.conf.ext")?);
        dovecot_config.push_str(&rendered("dovecot/metrics.conf.ext")?);
        if options.metadata {
            fs::write(
                work.path().join("push_notification.lua"),
                rendered("dovecot/push_notification.lua")?,
            )?;
            dovecot_config.push_str(&rendered("dovecot/metadata.conf.ext")?);
        }
        // Failed logins are part of the tests: no delay after each, and no
        // growing per-IP penalty.
        dovecot_config.push_str(
            "auth_failure_delay = 0\n\
             service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n",
        );

        let uses_filters = options.outgoing_filter || options.incoming_filter;
        let (postfix_options, submission_port, mx_port) = if uses_filters {
            for map in [
                "submission_header_cleanup",
                "sender_login_map",
                "lmtp_header_cleanup",
                "vrfy_command_filter",
            ] {
                fs::write(
                    layout.postfix_dir.join(map),
                    rendered(&format!("postfix/{map}"))?,
                )?;
            }
            let options = PostfixOptions {
                mydestination: config.mail_domain.address_domain(),
                main_cf: rendered("postfix/main-chatmail.cf")?,
                master_cf: rendered("postfix/master-chatmail.cf")?,
                ..PostfixOptions::default()
            };
            (options, Some(submission_port), Some(mx_port))
        } else {
            let options = PostfixOptions {
                mydestination: config.mail_domain.address_domain(),
                sasl_submission: true,
                ..PostfixOptions::default()
            };
            (options, None, None)
        };
        let postfix = Postfix::start(&postfix_options)?;
        let submission_port = match submission_port {
            Some(port) => {
                for port in [port, reinject_port, reinject_incoming_port] {
                    wait_for_port(port, Duration::from_secs(15))?;
                }
                port
            }
            None => postfix.submission_port().context("submission service")?,
        };
        let dovecot = Dovecot::start(&DovecotOptions {
            lmtp_socket: Some(lmtp_socket(&postfix)),
            auth_socket: Some(postfix.private_dir().join("auth")),
            config: dovecot_config,
        })?;
        relay_daemons.extend(opendkim);
        let mut relay = Self {
            dovecot,
            postfix,
            _daemons: relay_daemons,
            outgoing_filter: None,
            incoming_filter: None,
            metadata: None,
            ini_values,
            submission_port,
            mx_port,
            work,
        };
        if options.outgoing_filter {
            relay.restart_outgoing_filter(&[])?;
        }
        if options.incoming_filter {
            relay.restart_incoming_filter(&[], &[])?;
        }
        if options.metadata {
            relay.start_metadata()?;
        }
        Ok(relay)
    }

    fn metadata_socket(&self) -> PathBuf {
        self.work.path().join("run").join("metadata.socket")
    }

    /// The dict sockets of doveauth, lastlogin and (with `metadata`)
    /// chatmail-metadata, by daemon name.
    #[must_use]
    pub fn dict_sockets(&self) -> Vec<(&'static str, PathBuf)> {
        let run = self.work.path().join("run");
        let mut sockets = vec![
            ("doveauth", run.join("doveauth.socket")),
            ("lastlogin", run.join("lastlogin.socket")),
        ];
        if self.metadata.is_some() {
            sockets.push(("chatmail-metadata", self.metadata_socket()));
        }
        sockets
    }

    /// Starts chatmail-metadata (after [`Relay::kill_metadata`]).
    pub fn start_metadata(&mut self) -> Result<()> {
        let socket = self.metadata_socket();
        let ini = write_ini(self.work.path(), &self.ini_values)?;
        self.metadata = Some(start_daemon(
            "chatmail-metadata",
            &dict_args(&socket, &ini),
            Ready::Socket(&socket),
            self.work.path(),
        )?);
        // A socket file left by a killed daemon exists before the new one
        // listens: wait until it accepts.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("chatmail-metadata does not accept connections");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills chatmail-metadata with SIGKILL; its socket file stays, as
    /// after a crash.
    pub fn kill_metadata(&mut self) {
        if let Some(daemon) = self.metadata.take() {
            daemon.kill();
        }
    }

    /// chatmail-metadata's log so far.
    #[must_use]
    pub fn metadata_log(&self) -> String {
        self.metadata.as_ref().map(Daemon::log).unwrap_or_default()
    }

    /// Dovecot's LMTP socket, where Postfix delivers local mail.
    #[must_use]
    pub fn lmtp_socket(&self) -> PathBuf {
        lmtp_socket(&self.postfix)
    }

    /// The port of Postfix's port-25 service (with `incoming_filter`).
    #[must_use]
    pub fn mx_port(&self) -> Option<u16> {
        self.mx_port
    }

    /// A session on the port-25 service as another relay opens it:
    /// STARTTLS (the service requires TLS), then EHLO.
    pub async fn connect_mx(&self) -> Result<SmtpClient<TlsStream<TcpStream>>> {
        let port = self.mx_port.context("the relay has no port-25 service")?;
        let mut client = SmtpClient::connect_starttls(port, self.postfix.cert()).await?;
        client.ehlo().await?;
        Ok(client)
    }

    /// OpenDKIM's private key (with [`RelayOptions::opendkim`]).
    #[must_use]
    pub fn dkim_key(&self) -> PathBuf {
        let selector = self.ini_value("dkim_selector").unwrap_or("opendkim");
        OpenDkimLayout::in_dir(&self.work.path().join("opendkim")).key_file(selector)
    }

    /// The value of `key` in this relay's chatmail.ini.
    /// Scrapes the metrics endpoint of `daemon`.
    pub async fn scrape(&self, daemon: MetricsDaemon) -> Result<Scrape> {
        let port = self
            .ini_value(daemon.config_key())
            .and_then(|addr| addr.parse::<std::net::SocketAddr>().ok())
            .with_context(|| format!("{} in chatmail.ini", daemon.config_key()))?
            .port();
        Scrape::fetch(port).await
    }

    #[must_use]
    pub fn ini_value(&self, key: &str) -> Option<&str> {
        self.ini_values.get(key).map(String::as_str)
    }

    /// (Re)starts filtermail-incoming with `overrides` applied to this
    /// relay's chatmail.ini and `env` added to its environment.
    pub fn restart_incoming_filter(
        &mut self,
        overrides: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Result<()> {
        if let Some(old) = self.incoming_filter.take() {
            old.stop();
        }
        let daemon = self.start_filter(
            "filtermail-incoming",
            &[
                "filtermail_smtp_port_incoming",
                "filtermail_http_port_incoming",
            ],
            overrides,
            env,
        )?;
        self.incoming_filter = Some(daemon);
        Ok(())
    }

    /// The incoming filter's process id.
    #[must_use]
    pub fn incoming_filter_pid(&self) -> Option<u32> {
        self.incoming_filter.as_ref().map(Daemon::pid)
    }

    /// The outgoing filter's process id.
    #[must_use]
    pub fn outgoing_filter_pid(&self) -> Option<u32> {
        self.outgoing_filter.as_ref().map(Daemon::pid)
    }

    /// The outgoing filter's log so far.
    #[must_use]
    pub fn outgoing_filter_log(&self) -> String {
        self.outgoing_filter
            .as_ref()
            .map(Daemon::log)
            .unwrap_or_default()
    }

    /// doveauth's log so far.
    #[must_use]
    pub fn doveauth_log(&self) -> String {
        std::fs::read_to_string(self.work.path().join("doveauth.log")).unwrap_or_default()
    }

    /// The incoming filter's log so far.
    #[must_use]
    pub fn incoming_filter_log(&self) -> String {
        self.incoming_filter
            .as_ref()
            .map(Daemon::log)
            .unwrap_or_default()
    }

    /// (Re)starts filtermail-outgoing, with `overrides` applied to this
    /// relay's chatmail.ini for the new process only.
    pub fn restart_outgoing_filter(&mut self, overrides: &[(&str, &str)]) -> Result<()> {
        if let Some(old) = self.outgoing_filter.take() {
            old.stop();
        }
        let daemon = self.start_filter(
            "filtermail-outgoing",
            &["filtermail_smtp_port"],
            overrides,
            &[],
        )?;
        self.outgoing_filter = Some(daemon);
        Ok(())
    }

    fn start_filter(
        &self,
        name: &str,
        port_keys: &[&str],
        overrides: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        let mut values = self.ini_values.clone();
        for (key, value) in overrides {
            values.insert((*key).to_owned(), (*value).to_owned());
        }
        let dir = self.work.path().join(name);
        fs::create_dir_all(&dir)?;
        let ini = write_ini(&dir, &values)?;
        let ports = port_keys
            .iter()
            .map(|key| {
                values
                    .get(*key)
                    .and_then(|port| port.parse().ok())
                    .with_context(|| format!("{key} in chatmail.ini"))
            })
            .collect::<Result<Vec<u16>>>()?;
        let ini = ini.into_os_string();
        Daemon::start_with_env(
            name,
            &[ini.as_os_str()],
            env,
            Ready::Ports(&ports),
            self.work.path(),
        )
    }

    #[must_use]
    pub fn mail(&self) -> PathBuf {
        self.work.path().join("mail")
    }

    #[must_use]
    pub fn nocreate(&self) -> PathBuf {
        self.work.path().join("nocreate")
    }

    /// An IMAP login over TLS; `Ok(true)` when Dovecot says OK.
    pub async fn login(&self, user: &str, password: &str) -> Result<bool> {
        let mut imap = ImapClient::connect(self.dovecot.imaps_port(), self.dovecot.cert()).await?;
        imap.login(user, password).await
    }
}

/// Renders OpenDKIM's files for `layout` as chatmail-configure does,
/// creates the key, and runs OpenDKIM in the foreground.
fn start_opendkim(
    context: &Context,
    layout: &OpenDkimLayout,
    config: &chatmail_config::Config,
) -> Result<Daemon> {
    fs::create_dir_all(&layout.tables_dir)?;
    fs::write(
        &layout.conf,
        render_template("opendkim/opendkim.conf", context)?,
    )?;
    for table in ["KeyTable", "SigningTable"] {
        fs::write(
            layout.tables_dir.join(table),
            render_template(&format!("opendkim/{table}"), context)?,
        )?;
    }
    ensure_dkim_key(layout, &config.dkim_selector)?;
    let mut command = std::process::Command::new("opendkim");
    command.arg("-f").arg("-x").arg(&layout.conf);
    Daemon::spawn(
        "opendkim",
        command,
        Ready::Socket(&layout.socket),
        &layout.tables_dir,
    )
}

fn lmtp_socket(postfix: &Postfix) -> PathBuf {
    postfix.private_dir().join("dovecot-lmtp")
}

fn write_ini(dir: &Path, values: &BTreeMap<String, String>) -> Result<PathBuf> {
    let mut text = String::from("[params]\n");
    for (key, value) in values {
        text.push_str(&format!("{key} = {value}\n"));
    }
    let path = dir.join("chatmail.ini");
    fs::write(&path, text)?;
    Ok(path)
}
