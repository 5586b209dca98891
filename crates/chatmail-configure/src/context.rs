//! The values the templates see, computed from chatmail.ini and a
//! [`Layout`]. Templates fail on any name missing here.

use std::net::IpAddr;
use std::path::Path;

use chatmail_config::{Config, LogStorage, MetricsDaemon};
use serde::Serialize;

use crate::layout::{Layout, PublicPorts};

#[derive(Debug, Clone, Serialize)]
pub struct Context {
    /// The domain part of addresses: `example.org` or `[1.2.3.4]`.
    pub mail_domain: String,
    pub hostname: String,
    pub inet_protocols: &'static str,
    pub listen: Listen,
    /// master.cf service names of the public SMTP services.
    pub services: Services,
    pub ports: Ports,
    pub filter: Filter,
    pub limits: Limits,
    pub paths: Paths,
    pub vmail: Vmail,
    pub private: Option<Private>,
    pub dkim_milter: Option<String>,
    /// OpenDKIM's configuration, when chatmail-configure sets it up.
    pub dkim: Option<Dkim>,
    pub imap: Imap,
    /// privacy_mail of chatmail.ini, for Dovecot's mail_server_admin.
    pub privacy_mail: Option<String>,
    pub web: Web,
    /// delete_mails_after of chatmail.ini, in days, for the index page.
    pub delete_mails_after: u32,
    pub delete_inactive_users_after: u32,
    /// What the privacy policy names (privacy_* of chatmail.ini).
    pub site: Site,
    /// journald's storage of logs, for the package's drop-in and the
    /// privacy policy.
    pub logs: Logs,
    /// Where Dovecot's stats service serves OpenMetrics
    /// (metrics_listen_dovecot); none when the key is empty.
    pub dovecot_metrics: Option<MetricsListener>,
    /// The relay's own iroh relay, when `iroh_relay` names this relay.
    pub iroh: Option<Iroh>,
    /// The operator's own pages (www_folder of chatmail.ini).
    #[serde(skip)]
    pub www_folder: Option<std::path::PathBuf>,
}

/// iroh-relay (0.35, the version Delta Chat's client speaks to): plain
/// HTTP on loopback behind nginx, no STUN (clients use the relay itself).
#[derive(Debug, Clone, Serialize)]
pub struct Iroh {
    /// `ip:port` it listens on, and nginx proxies to.
    pub listen: String,
    /// Where it serves Prometheus metrics (metrics_listen_iroh_relay).
    pub metrics: Option<String>,
    /// Whether nginx serves it on plain HTTP too: an IP-only relay's
    /// certificate is self-signed, which clients do not accept for it.
    pub over_http: bool,
}

/// The privacy policy's parties.
#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub privacy_postal: Option<String>,
    pub privacy_supervisor: Option<String>,
    pub privacy_pdo: Option<String>,
}

/// journald's settings without a word in chatmail.ini: those of the
/// package's drop-in.
const DEFAULT_LOG_MAX_AGE_SECONDS: u64 = 3 * 86_400;

#[derive(Debug, Clone, Serialize)]
pub struct Logs {
    /// journald's `Storage=`: `volatile` (in memory only) or `persistent`.
    pub storage: &'static str,
    /// MaxRetentionSec, in seconds and in whole days (at least 1).
    pub max_age_seconds: u64,
    pub max_age_days: u64,
}

impl Logs {
    /// Whether these are the package's own settings, which need no file
    /// of chatmail-configure's.
    #[must_use]
    pub fn is_default(&self) -> bool {
        self.storage == LogStorage::Volatile.as_str()
            && self.max_age_seconds == DEFAULT_LOG_MAX_AGE_SECONDS
    }
}

/// How a new user gets an account, for the index page.
#[derive(Debug, Clone, Serialize)]
pub struct Account {
    /// `DCACCOUNT:https://<domain>/new` on relays with a certificate from
    /// a public CA, where Delta Chat asks /new for an account.
    pub link: Option<String>,
    /// That link as an inline SVG QR code.
    pub qr_svg: Option<String>,
    /// Where browsers that open /new are sent (`dcaccount:...`, or the
    /// index page where an IP-only relay's page makes a login link).
    pub new_redirect: String,
    /// For the login links an IP-only relay's page makes: the host and
    /// implicit-TLS ports, and the lengths chatmail.ini allows.
    pub host: String,
    pub imaps_port: u16,
    pub smtps_port: u16,
    pub name_length: usize,
    pub password_length: usize,
    pub password_min_length: usize,
}

/// One server of the autoconfig file.
#[derive(Debug, Clone, Serialize)]
pub struct AutoconfigServer {
    /// `incoming` or `outgoing`.
    pub kind: &'static str,
    pub protocol: &'static str,
    pub port: u16,
    /// `SSL` or `STARTTLS`.
    pub socket: &'static str,
}

/// An address and port for a metrics endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsListener {
    pub address: String,
    pub port: u16,
}

/// The nginx site: the web front door.
#[derive(Debug, Clone, Serialize)]
pub struct Web {
    /// nginx `listen` values for plain HTTP.
    pub http_listen: Vec<String>,
    /// nginx's server_name: the domain, or the address of an IP-only relay.
    pub server_name: String,
    /// How the relay's HTTPS address is written in a URL
    /// (`chat.example.org`, `1.2.3.4`, `[::1]:20443`).
    pub url_authority: String,
    /// filtermail-incoming's HTTP port, which /mxdeliv is proxied to.
    pub incoming_http: u16,
    /// nginx's client_max_body_size for /mxdeliv, in bytes.
    pub max_body: u64,
    pub newemail: String,
    /// chatmail.ini, which chatmail-newemail reads.
    pub config_path: String,
    pub fcgiwrap_socket: String,
    pub www_dir: String,
    pub site: String,
    /// The MTA-STS policy a domain relay serves (none for IP-only relays).
    pub mta_sts_policy: Option<String>,
    /// Port 443 and what is behind it.
    pub front: Front,
    /// nginx's worker_connections.
    pub worker_connections: u32,
    /// Whether the site answers for `autoconfig.<domain>` too (a domain
    /// relay; an IP-only one has no such name).
    pub autoconfig: bool,
    /// The servers autoconfig names: IMAP 993, 143, 443; SMTP 465, 587, 443.
    pub autoconfig_servers: Vec<AutoconfigServer>,
    pub account: Account,
}

/// nginx's stream block on port 443, which passes each connection on by
/// its ALPN, and the internal listeners it passes them to.
#[derive(Debug, Clone, Serialize)]
pub struct Front {
    /// nginx `listen` values for 443.
    pub listen: Vec<String>,
    /// `address:port` of the HTTPS site, Dovecot's and Postfix's
    /// listeners behind 443.
    pub web: String,
    pub imaps: String,
    pub smtps: String,
    /// The loopback address they listen on, and their ports.
    pub address: String,
    pub imaps_port: u16,
    pub smtps_port: u16,
}

/// OpenDKIM: what it signs with, and where it listens.
#[derive(Debug, Clone, Serialize)]
pub struct Dkim {
    pub domain: String,
    pub selector: String,
    pub key_file: String,
    pub tables_dir: String,
    pub socket: String,
    pub pid_file: String,
    pub user: Option<String>,
    pub umask: &'static str,
    pub require_safe_keys: bool,
    pub sign_headers: String,
    pub oversign_headers: String,
}

/// Signed: RFC 6376's recommended set and the outer headers a chat
/// client reads (Autocrypt for the key, Chat-* for what a message is).
const SIGN_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "In-Reply-To",
    "References",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Autocrypt",
    "Autocrypt-Setup-Message",
    "Chat-Version",
    "Chat-Disposition-Notification-To",
];

/// Signed once more than present: nobody on the way may add one.
const OVERSIGN_HEADERS: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Autocrypt",
    "Autocrypt-Setup-Message",
    "Chat-Version",
    "Chat-Disposition-Notification-To",
];

/// Optional IMAP features (chatmail.ini imap_compress, imap_rawlog).
#[derive(Debug, Clone, Serialize)]
pub struct Imap {
    pub compress: bool,
    pub rawlog: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listen {
    /// Postfix's inet_interfaces.
    pub postfix: String,
    /// Dovecot's listen.
    pub dovecot: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Services {
    pub smtp: String,
    pub submission: String,
    pub smtps: String,
    /// Implicit-TLS submission behind port 443 (PROXY protocol first).
    pub smtps_behind_https: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ports {
    pub imap: u16,
    pub imaps: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct Filter {
    /// Where the filters and the transport listen (filtermail_host).
    pub host: String,
    /// Where the reinjection services listen (postfix_host).
    pub postfix_host: String,
    pub outgoing: u16,
    pub incoming: u16,
    pub transport_lmtp: u16,
    pub reinject: u16,
    pub reinject_incoming: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub max_smtp_connections: u32,
    /// A fifth of max_smtp_connections for one client address on the
    /// submission services, at least 1.
    pub max_smtp_connections_per_client: u32,
    pub max_imap_connections: u32,
    pub max_message_size: u64,
    pub quota_mb: u64,
    /// What chatmail-quota-expire trims a full mailbox to: 70%.
    pub quota_target_mb: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Paths {
    pub postfix_dir: String,
    pub dovecot_dir: String,
    pub postfix_private: String,
    pub tls_cert: String,
    pub tls_key: String,
    pub doveauth_socket: String,
    pub lastlogin_socket: String,
    pub metadata_socket: String,
    pub quota_expire: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Vmail {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Private {
    pub root: String,
    pub queue_dir: String,
    pub data_dir: String,
    pub postfix_log: String,
    pub dovecot_base_dir: String,
    pub dovecot_state_dir: String,
    pub dovecot_log: String,
    pub instance_name: String,
    pub nginx_dir: String,
    pub log_dir: String,
    /// The user nginx's workers run as (they connect to fcgiwrap's
    /// socket, which runs as the same user).
    pub nginx_user: String,
}

/// nginx `listen` values for `port`: the one address, or every IPv4 (and
/// IPv6, unless disabled) address.
fn listen_values(listen: Option<IpAddr>, ipv6: bool, port: u16) -> Vec<String> {
    match listen {
        Some(IpAddr::V4(address)) => vec![format!("{address}:{port}")],
        Some(IpAddr::V6(address)) => vec![format!("[{address}]:{port}")],
        None if ipv6 => vec![port.to_string(), format!("[::]:{port}")],
        None => vec![port.to_string()],
    }
}

/// The address the listeners behind port 443 use: the relay's own
/// (private instances on their loopback address), else IPv4 loopback.
fn backend_address(listen: Option<IpAddr>) -> IpAddr {
    listen.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// `address:port`, with brackets around an IPv6 address (as nginx and
/// Postfix's master.cf write it).
fn socket_address(address: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(address, port).to_string()
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

/// A master.cf service name for `port`: the conventional name when the
/// relay listens everywhere on the standard port (so logs read
/// "postfix/submission"), else an explicit `address:port`.
fn service(listen: Option<IpAddr>, port: u16, standard: u16, name: &str) -> String {
    match listen {
        None if port == standard => name.to_owned(),
        None => port.to_string(),
        Some(address) => format!("{address}:{port}"),
    }
}

impl Context {
    #[must_use]
    pub fn new(config: &Config, layout: &Layout) -> Self {
        let standard = PublicPorts::STANDARD;
        let ports = layout.ports;
        let quota_mb = config.max_mailbox_size.div_ceil(1024 * 1024);
        let listen = match layout.listen {
            Some(address) => Listen {
                postfix: address.to_string(),
                dovecot: address.to_string(),
            },
            None => Listen {
                postfix: "all".into(),
                dovecot: if config.disable_ipv6 { "*" } else { "*, ::" }.into(),
            },
        };
        let inet_protocols = match layout.listen {
            Some(IpAddr::V4(_)) => "ipv4",
            Some(IpAddr::V6(_)) => "ipv6",
            None if config.disable_ipv6 => "ipv4",
            None => "all",
        };
        let dkim = opendkim(config, layout);
        Self {
            mail_domain: config.mail_domain.address_domain(),
            hostname: config.mail_domain.hostname(),
            inet_protocols,
            listen,
            services: Services {
                smtp: service(layout.listen, ports.smtp, standard.smtp, "smtp"),
                submission: service(
                    layout.listen,
                    ports.submission,
                    standard.submission,
                    "submission",
                ),
                smtps: service(layout.listen, ports.smtps, standard.smtps, "smtps"),
                smtps_behind_https: socket_address(
                    backend_address(layout.listen),
                    ports.behind_https.smtps,
                ),
            },
            ports: Ports {
                imap: ports.imap,
                imaps: ports.imaps,
            },
            filter: Filter {
                host: config.filtermail_host.clone(),
                postfix_host: config.postfix_host.clone(),
                outgoing: config.filtermail_smtp_port,
                incoming: config.filtermail_smtp_port_incoming,
                transport_lmtp: config.filtermail_lmtp_port_transport,
                reinject: config.postfix_reinject_port,
                reinject_incoming: config.postfix_reinject_port_incoming,
            },
            limits: Limits {
                max_smtp_connections: config.max_smtp_connections,
                max_smtp_connections_per_client: (config.max_smtp_connections / 5).max(1),
                max_imap_connections: config.max_imap_connections,
                max_message_size: config.max_message_size,
                quota_mb,
                quota_target_mb: quota_mb * 7 / 10,
            },
            paths: Paths {
                postfix_dir: text(&layout.postfix_dir),
                dovecot_dir: text(&layout.dovecot_dir),
                postfix_private: text(&layout.postfix_private()),
                tls_cert: text(&layout.tls_cert),
                tls_key: text(&layout.tls_key),
                doveauth_socket: text(&layout.sockets.doveauth),
                lastlogin_socket: text(&layout.sockets.lastlogin),
                metadata_socket: text(&layout.sockets.metadata),
                quota_expire: text(&layout.bin_dir.join("chatmail-quota-expire")),
            },
            vmail: Vmail {
                uid: layout.vmail.uid,
                gid: layout.vmail.gid,
            },
            dkim_milter: layout
                .dkim_milter
                .clone()
                .or_else(|| dkim.as_ref().map(|dkim| format!("unix:{}", dkim.socket))),
            dkim,
            imap: Imap {
                compress: config.imap_compress,
                rawlog: config.imap_rawlog,
            },
            privacy_mail: config.privacy_mail.clone(),
            web: web(config, layout),
            delete_mails_after: config.delete_mails_after,
            delete_inactive_users_after: config.delete_inactive_users_after,
            site: Site {
                privacy_postal: config.site.privacy_postal.clone(),
                privacy_supervisor: config.site.privacy_supervisor.clone(),
                privacy_pdo: config.site.privacy_pdo.clone(),
            },
            logs: Logs {
                storage: config.logs.storage.as_str(),
                max_age_seconds: config.logs.max_age.as_secs(),
                max_age_days: config.logs.max_age.as_secs().div_ceil(86_400).max(1),
            },
            iroh: config.runs_iroh_relay().then(|| Iroh {
                listen: config.iroh_relay_listen.to_string(),
                metrics: config
                    .metrics_listen(MetricsDaemon::IrohRelay)
                    .map(|addr| addr.to_string()),
                over_http: config.iroh_relay.starts_with("http://"),
            }),
            dovecot_metrics: config.metrics_listen(MetricsDaemon::Dovecot).map(|addr| {
                MetricsListener {
                    address: addr.ip().to_string(),
                    port: addr.port(),
                }
            }),
            www_folder: config.site.www_folder.clone(),
            private: layout.private.as_ref().map(|instance| Private {
                root: text(&instance.root),
                queue_dir: text(&instance.postfix_queue()),
                data_dir: text(&instance.postfix_data()),
                postfix_log: text(&instance.log_dir().join("postfix.log")),
                dovecot_base_dir: text(&instance.dovecot_base()),
                dovecot_state_dir: text(&instance.dovecot_state()),
                dovecot_log: text(&instance.log_dir().join("dovecot.log")),
                instance_name: instance.instance_name.clone(),
                nginx_dir: text(&instance.nginx_dir()),
                log_dir: text(&instance.log_dir()),
                nginx_user: "vmail".into(),
            }),
        }
    }
}

/// OpenDKIM's part of the configuration: for a domain relay whose layout
/// has it and that names no signer of its own.
fn opendkim(config: &Config, layout: &Layout) -> Option<Dkim> {
    let opendkim = layout.opendkim.as_ref()?;
    if config.mail_domain.is_ip() || layout.dkim_milter.is_some() {
        return None;
    }
    Some(Dkim {
        domain: config.mail_domain.address_domain(),
        selector: config.dkim_selector.clone(),
        key_file: text(&opendkim.key_file(&config.dkim_selector)),
        tables_dir: text(&opendkim.tables_dir),
        socket: text(&opendkim.socket),
        pid_file: text(&opendkim.pid_file),
        user: opendkim.user.clone(),
        umask: opendkim.umask,
        require_safe_keys: opendkim.require_safe_keys,
        sign_headers: SIGN_HEADERS.join(","),
        oversign_headers: OVERSIGN_HEADERS.join(","),
    })
}

fn web(config: &Config, layout: &Layout) -> Web {
    // The name clients use: the domain, or an IP-only relay's address
    // (its reverse-pointer host name is for SMTP greetings only).
    let server_name = config.mail_domain.to_string();
    let host = match layout.listen {
        Some(IpAddr::V6(address)) => format!("[{address}]"),
        Some(address) => address.to_string(),
        None => server_name.clone(),
    };
    let url_authority = match layout.ports.https {
        443 => host,
        port => format!("{host}:{port}"),
    };
    let ipv6 = !config.disable_ipv6;
    Web {
        http_listen: listen_values(layout.listen, ipv6, layout.ports.http),
        server_name,
        incoming_http: config.filtermail_http_port_incoming,
        // Headers and the line-ending slack of a message at the limit.
        max_body: config.max_message_size + 1024 * 1024,
        newemail: text(&layout.bin_dir.join("chatmail-newemail")),
        config_path: text(&config.path),
        fcgiwrap_socket: text(&layout.web.fcgiwrap_socket),
        www_dir: text(&layout.web.www_dir),
        site: text(&layout.web.site),
        mta_sts_policy: (!config.mail_domain.is_ip())
            .then(|| crate::dns::mta_sts_policy(&config.mail_domain.address_domain())),
        front: front(layout, ipv6),
        worker_connections: if layout.private.is_some() { 1024 } else { 8192 },
        autoconfig: !config.mail_domain.is_ip(),
        autoconfig_servers: autoconfig_servers(layout.ports),
        account: account(config, layout, &url_authority),
        url_authority,
    }
}

fn autoconfig_servers(ports: PublicPorts) -> Vec<AutoconfigServer> {
    let server = |kind, protocol, port, socket| AutoconfigServer {
        kind,
        protocol,
        port,
        socket,
    };
    vec![
        server("incoming", "imap", ports.imaps, "SSL"),
        server("incoming", "imap", ports.imap, "STARTTLS"),
        server("incoming", "imap", ports.https, "SSL"),
        server("outgoing", "smtp", ports.smtps, "SSL"),
        server("outgoing", "smtp", ports.submission, "STARTTLS"),
        server("outgoing", "smtp", ports.https, "SSL"),
    ]
}

fn account(config: &Config, layout: &Layout, url_authority: &str) -> Account {
    // DCACCOUNT needs a certificate Delta Chat accepts without being told.
    let link = (!config.tls_self_signed).then(|| format!("DCACCOUNT:https://{url_authority}/new"));
    let qr_svg = link
        .as_deref()
        .and_then(|link| crate::qr::svg(link, "QR code of the account link"));
    let new_redirect = match &link {
        Some(_) => format!("dcaccount:https://{url_authority}/new"),
        None => format!("https://{url_authority}/"),
    };
    let host = match (layout.listen, &config.mail_domain) {
        (Some(address), _) => address.to_string(),
        (None, chatmail_config::MailDomain::Ipv4(address)) => address.to_string(),
        (None, _) => config.mail_domain.to_string(),
    };
    Account {
        link,
        qr_svg,
        new_redirect,
        host,
        imaps_port: layout.ports.imaps,
        smtps_port: layout.ports.smtps,
        name_length: config.username_max_length,
        password_length: config.new_account_password_length(),
        password_min_length: config.password_min_length,
    }
}

fn front(layout: &Layout, ipv6: bool) -> Front {
    let address = backend_address(layout.listen);
    let behind = layout.ports.behind_https;
    Front {
        listen: listen_values(layout.listen, ipv6, layout.ports.https),
        web: socket_address(address, behind.web),
        imaps: socket_address(address, behind.imaps),
        smtps: socket_address(address, behind.smtps),
        address: address.to_string(),
        imaps_port: behind.imaps,
        smtps_port: behind.smtps,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::Path;

    use chatmail_config::Config;

    use super::Context;
    use crate::layout::{Layout, PublicPorts, Vmail};

    fn config(ini: &str) -> Config {
        Config::from_ini_str(ini, Path::new("chatmail.ini")).expect("valid test ini")
    }

    #[test]
    fn standard_ports_everywhere_keep_the_service_names() {
        let layout = Layout::system(Vmail {
            uid: 5000,
            gid: 5000,
        });
        let context = Context::new(&config("[params]\nmail_domain = example.org\n"), &layout);
        assert_eq!(context.services.smtp, "smtp");
        assert_eq!(context.services.submission, "submission");
        assert_eq!(context.services.smtps, "smtps");
        assert_eq!(context.listen.postfix, "all");
        assert_eq!(context.inet_protocols, "all");
    }

    #[test]
    fn a_listen_address_or_other_ports_name_address_and_port() {
        let mut layout = Layout::system(Vmail {
            uid: 5000,
            gid: 5000,
        });
        layout.ports = PublicPorts::offset(20000).expect("ports fit");
        let ini = "[params]\nmail_domain = 127.0.0.2\ndisable_ipv6 = true\n";
        assert_eq!(Context::new(&config(ini), &layout).services.smtp, "20025");
        assert_eq!(Context::new(&config(ini), &layout).inet_protocols, "ipv4");
        layout.listen = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        let context = Context::new(&config(ini), &layout);
        assert_eq!(context.services.submission, "127.0.0.2:20587");
        assert_eq!(context.listen.dovecot, "127.0.0.2");
        assert_eq!(context.mail_domain, "[127.0.0.2]");
    }

    #[test]
    fn quota_and_trim_target_follow_max_mailbox_size() {
        let layout = Layout::system(Vmail {
            uid: 5000,
            gid: 5000,
        });
        let ini = "[params]\nmail_domain = example.org\nmax_mailbox_size = 2G\n";
        let limits = Context::new(&config(ini), &layout).limits;
        assert_eq!(limits.quota_mb, 2048);
        assert_eq!(limits.quota_target_mb, 1433);
    }

    #[test]
    fn port_offsets_that_overflow_are_refused() {
        assert!(PublicPorts::offset(65000).is_err());
    }
}
