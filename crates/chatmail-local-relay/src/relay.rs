//! One local relay: its state directory and rendered configuration, then
//! its processes started in dependency order (dict daemons and filters,
//! Postfix, Dovecot), each waited for until it serves.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result};
use chatmail_config::{Config, MetricsDaemon};
use chatmail_configure::{
    Context, DictSockets, Layout, OpenDkimLayout, PrivateInstance, Vmail, WebLayout, check_dovecot,
    check_nginx, check_opendkim, check_postfix, copy_www_files, ensure_dkim_key, render_all,
    write_files,
};

use crate::loopback;
use crate::ports::Ports;
use crate::processes::{Process, log_tail, run, wait_for_port, wait_for_socket};
use crate::state::StateDir;

const START_LIMIT: Duration = Duration::from_secs(20);

/// The programs that run as vmail: the daemons, and the quota script
/// Dovecot runs.
const VMAIL_DAEMONS: &[&str] = &[
    "doveauth",
    "lastlogin",
    "chatmail-metadata",
    "filtermail-outgoing",
    "filtermail-incoming",
    "filtermail-transport",
    "chatmail-quota-expire",
    "chatmail-newemail",
    "chatmail-turn",
];

/// What the command line decided.
pub struct Options {
    pub address: Ipv4Addr,
    pub ports: Ports,
    /// Where filtermail-transport finds other relays' SMTP and HTTPS.
    pub peer_ports: Ports,
    pub state_dir: PathBuf,
    /// Extra chatmail.ini settings.
    pub settings: Vec<(String, String)>,
    pub bin_dir: PathBuf,
    /// Certificate chain and key to use instead of a self-signed one.
    pub tls: Option<(PathBuf, PathBuf)>,
}

pub struct LocalRelay {
    address: IpAddr,
    /// The mail domain: `[ADDRESS]` or a domain name.
    pub domain: String,
    pub ports: Ports,
    pub state: StateDir,
    pub layout: Layout,
    /// Where each program serves its metrics, by chatmail.ini key.
    pub metrics: Vec<(&'static str, std::net::SocketAddr)>,
    bin_dir: PathBuf,
    vmail: Vmail,
    /// The iroh relay's URL for clients, when this relay runs its own.
    pub iroh_relay: Option<String>,
}

impl LocalRelay {
    /// Creates the state directory, certificate and chatmail.ini, renders
    /// the configuration and checks it: nothing is started yet.
    pub fn prepare(options: &Options) -> Result<Self> {
        let state = StateDir {
            root: options.state_dir.clone(),
        };
        loopback::ensure_assigned(options.address)?;
        let vmail = Vmail::lookup()?;
        state.prepare(vmail)?;
        if options.tls.is_none() {
            state.ensure_certificate(options.address)?;
        }
        state.write_ini(
            options.address,
            &options.ports,
            &options.peer_ports,
            &options.settings,
        )?;
        let config = Config::load(state.ini())?;
        let address = IpAddr::V4(options.address);
        // The daemons run as vmail, which may not reach where they were
        // built (a checkout under /root): they run from the state dir.
        let bin_dir = state.install_daemons(&options.bin_dir, VMAIL_DAEMONS)?;
        if config.runs_iroh_relay() {
            state
                .install_daemons(&options.bin_dir, &["iroh-relay"])
                .context(
                    "iroh-relay 0.35.0 is needed for realtime channels: build it with \
                     `bash crates/chatmail-relay/build-iroh-relay` (or run without one: \
                     --ini iroh_relay=)",
                )?;
        }
        let private = PrivateInstance {
            root: state.root.clone(),
            instance_name: format!("chatmail-local-{}", options.address),
        };
        let (tls_cert, tls_key) = options
            .tls
            .clone()
            .unwrap_or_else(|| (state.cert(), state.key()));
        // A domain relay signs its mail, as chatmail-configure sets it up;
        // an IP-only relay signs nothing (receivers skip DKIM for it).
        let opendkim = (!config.mail_domain.is_ip())
            .then(|| OpenDkimLayout::in_dir(&state.root.join("opendkim")));
        let layout = Layout {
            postfix_dir: state.root.join("postfix"),
            dovecot_dir: state.root.join("dovecot"),
            tls_cert,
            tls_key,
            sockets: DictSockets::in_dir(&state.run()),
            bin_dir: bin_dir.clone(),
            listen: Some(address),
            ports: options.ports.public,
            vmail,
            dkim_milter: None,
            opendkim,
            acme: chatmail_configure::acme::AcmeLayout::in_dir(&state.root.join("acme")),
            web: WebLayout::in_dir(&state.root, state.run().join("fcgiwrap.socket")),
            private: Some(private.clone()),
            iroh_relay_config: state.root.join("iroh-relay.toml"),
            journald_override: None,
        };
        let context = Context::new(&config, &layout);
        write_files(&render_all(&context, &layout)?)?;
        copy_www_files(&context, &layout)?;
        if let Some(opendkim) = &layout.opendkim {
            ensure_dkim_key(opendkim, &config.dkim_selector)?;
            check_opendkim(&opendkim.conf)?;
        }
        check_postfix(&layout.postfix_dir)?;
        check_dovecot(&layout.dovecot_dir.join("dovecot.conf"))?;
        check_nginx(
            &private.nginx_dir().join("nginx.conf"),
            &state.log().join("nginx-error.log"),
        )?;
        Ok(Self {
            address,
            domain: config.mail_domain.address_domain(),
            ports: options.ports,
            metrics: MetricsDaemon::ALL
                .iter()
                .filter_map(|daemon| {
                    let addr = config.metrics_listen(*daemon)?;
                    Some((daemon.config_key(), addr))
                })
                .collect(),
            state,
            layout,
            bin_dir,
            vmail,
            iroh_relay: config.runs_iroh_relay().then(|| config.iroh_relay.clone()),
        })
    }

    /// The iroh relay (webxdc realtime channels), as vmail, when this relay
    /// runs its own; nginx proxies to it.
    pub fn start_iroh_relay(&self, processes: &mut Vec<Process>) -> Result<()> {
        if self.iroh_relay.is_none() {
            return Ok(());
        }
        let config = &self.layout.iroh_relay_config;
        processes.push(self.start_as_vmail(
            "iroh-relay",
            &[OsStr::new("--config-path"), config.as_os_str()],
        )?);
        wait_for_port(
            self.address,
            self.ports.iroh_relay,
            "iroh-relay",
            START_LIMIT,
        )
        .with_context(|| log_tail(&self.state.log(), "iroh-relay"))
    }

    /// The dict daemons and the filters, as vmail; each is pushed to
    /// `processes` as soon as it runs, so a later failure stops it too.
    pub fn start_daemons(&self, processes: &mut Vec<Process>) -> Result<()> {
        let sockets = &self.layout.sockets;
        let ini = self.state.ini();
        for (name, socket) in [
            ("doveauth", &sockets.doveauth),
            ("lastlogin", &sockets.lastlogin),
            ("chatmail-metadata", &sockets.metadata),
        ] {
            let args = [
                socket.as_os_str(),
                ini.as_os_str(),
                OsStr::new("--socket-mode"),
                OsStr::new("660"),
            ];
            processes.push(self.start_as_vmail(name, &args)?);
            wait_for_socket(socket, name, START_LIMIT)
                .with_context(|| log_tail(&self.state.log(), name))?;
        }
        // TURN credentials for chatmail-metadata's `turn` key.
        let turn_socket = self.state.run().join("turn.socket");
        processes.push(self.start_as_vmail("chatmail-turn", &[ini.as_os_str()])?);
        wait_for_socket(&turn_socket, "chatmail-turn", START_LIMIT)
            .with_context(|| log_tail(&self.state.log(), "chatmail-turn"))?;
        for (name, port) in [
            ("filtermail-outgoing", self.ports.filter_outgoing),
            ("filtermail-incoming", self.ports.filter_incoming),
            ("filtermail-transport", self.ports.transport_lmtp),
        ] {
            processes.push(self.start_as_vmail(name, &[ini.as_os_str()])?);
            wait_for_port(self.address, port, name, START_LIMIT)
                .with_context(|| log_tail(&self.state.log(), name))?;
        }
        Ok(())
    }

    /// OpenDKIM in the foreground, for a domain relay.
    pub fn start_opendkim(&self, processes: &mut Vec<Process>) -> Result<()> {
        let Some(opendkim) = &self.layout.opendkim else {
            return Ok(());
        };
        // A socket left by a killed relay would make OpenDKIM fail.
        let _ = std::fs::remove_file(&opendkim.socket);
        processes.push(Process::start(
            "opendkim",
            Path::new("opendkim"),
            &[
                OsStr::new("-f"),
                OsStr::new("-x"),
                opendkim.conf.as_os_str(),
            ],
            None,
            &self.state.log(),
        )?);
        wait_for_socket(&opendkim.socket, "opendkim", START_LIMIT)
            .with_context(|| log_tail(&self.state.log(), "opendkim"))
    }

    fn start_as_vmail(&self, name: &str, args: &[&OsStr]) -> Result<Process> {
        self.start_as_vmail_program(name, &self.bin_dir.join(name), args)
    }

    fn postfix(&self, action: &str) -> Result<()> {
        run(
            Command::new("postfix")
                .arg("-c")
                .arg(&self.layout.postfix_dir)
                .arg(action),
            &format!("postfix {action}"),
        )
    }

    /// Postfix daemonizes itself; `postfix stop` ends it.
    pub fn start_postfix(&self) -> Result<()> {
        // A Postfix left running by a killed relay would hold the ports.
        let _ = self.postfix("stop");
        self.postfix("start")
            .with_context(|| format!("see {}", self.state.log().join("postfix.log").display()))?;
        for port in [
            self.ports.public.smtp,
            self.ports.public.submission,
            self.ports.public.smtps,
            self.ports.reinject,
            self.ports.reinject_incoming,
        ] {
            wait_for_port(self.address, port, "postfix", START_LIMIT)?;
        }
        Ok(())
    }

    /// The web front door: fcgiwrap (as vmail, running chatmail-newemail
    /// for /new) and nginx in the foreground, as child processes.
    pub fn start_web(&self, processes: &mut Vec<Process>) -> Result<()> {
        let socket = &self.layout.web.fcgiwrap_socket;
        // A socket left by a killed relay would make fcgiwrap fail.
        let _ = std::fs::remove_file(socket);
        let socket_url = format!("unix:{}", socket.display());
        processes.push(self.start_as_vmail_program(
            "fcgiwrap",
            Path::new("/usr/sbin/fcgiwrap"),
            &[OsStr::new("-s"), OsStr::new(&socket_url)],
        )?);
        wait_for_socket(socket, "fcgiwrap", START_LIMIT)
            .with_context(|| log_tail(&self.state.log(), "fcgiwrap"))?;
        let private = self
            .layout
            .private
            .as_ref()
            .context("a local relay is a private instance")?;
        let config = private.nginx_dir().join("nginx.conf");
        let error_log = self.state.log().join("nginx-error.log");
        processes.push(Process::start(
            "nginx",
            Path::new("nginx"),
            &[
                OsStr::new("-c"),
                config.as_os_str(),
                OsStr::new("-e"),
                error_log.as_os_str(),
            ],
            None,
            &self.state.log(),
        )?);
        wait_for_port(self.address, self.ports.public.https, "nginx", START_LIMIT)
            .with_context(|| log_tail(&self.state.log(), "nginx-error"))?;
        Ok(())
    }

    fn start_as_vmail_program(
        &self,
        name: &str,
        program: &Path,
        args: &[&OsStr],
    ) -> Result<Process> {
        Process::start(name, program, args, Some(self.vmail), &self.state.log())
    }

    /// Dovecot in the foreground, as a child process.
    pub fn start_dovecot(&self) -> Result<Process> {
        let config = self.layout.dovecot_dir.join("dovecot.conf");
        let process = Process::start(
            "dovecot",
            Path::new("dovecot"),
            &[OsStr::new("-F"), OsStr::new("-c"), config.as_os_str()],
            None,
            &self.state.log(),
        )?;
        wait_for_port(
            self.address,
            self.ports.public.imaps,
            "dovecot",
            START_LIMIT,
        )
        .with_context(|| log_tail(&self.state.log(), "dovecot"))?;
        wait_for_socket(
            &self.layout.postfix_private().join("dovecot-lmtp"),
            "dovecot",
            START_LIMIT,
        )?;
        Ok(process)
    }
}
