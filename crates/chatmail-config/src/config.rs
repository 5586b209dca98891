use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::domain::MailDomain;
use crate::error::ConfigError;
use crate::mailbox::Mailboxes;
use crate::value;

/// Where the relay's daemons look for chatmail.ini unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/usr/local/lib/chatmaild/chatmail.ini";

/// A first retry after 10 ms hammers the push service; after an hour, a
/// notification is worthless.
const HTTPS_TIMEOUT_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(600);
const RETRY_BASE_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_millis(10)..=std::time::Duration::from_secs(3600);
/// Notifications are kept on disk until this deadline: days at most.
const RETRY_DEADLINE_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(7 * 86_400);

const SECTION: &str = "params";

/// Keys used by the deployment tooling rather than by a daemon. They are
/// accepted so that one chatmail.ini serves both, and otherwise ignored.
const DEPLOYMENT_KEYS: &[&str] = &["mtail_address", "tls_external_cert_and_key"];
const DEPLOYMENT_PREFIXES: &[&str] = &["privacy_"];

/// The relay's web pages.
#[derive(Debug, Clone, Default)]
pub struct SiteConfig {
    /// A directory of the operator's own pages: a file there replaces the
    /// shipped page of its name (`*.html` are templates, as the shipped
    /// ones), other files are served as they are.
    pub www_folder: Option<PathBuf>,
    /// For the privacy policy: who runs the relay (postal address), the
    /// supervisory authority, the data protection officer.
    pub privacy_postal: Option<String>,
    pub privacy_supervisor: Option<String>,
    pub privacy_pdo: Option<String>,
}

/// journald's storage of the machine's logs (connection logs name
/// addresses; a relay that keeps almost no state keeps them briefly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    pub storage: LogStorage,
    /// journald's MaxRetentionSec.
    pub max_age: std::time::Duration,
}

/// journald's `Storage=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStorage {
    /// In memory only (/run/log/journal): gone at reboot.
    Volatile,
    /// On disk (/var/log/journal).
    Persistent,
}

impl LogStorage {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "volatile" => Ok(Self::Volatile),
            "persistent" => Ok(Self::Persistent),
            _ => Err("expected volatile or persistent".into()),
        }
    }

    /// The value of journald's `Storage=`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Volatile => "volatile",
            Self::Persistent => "persistent",
        }
    }
}

/// Every setting of chatmail.ini, typed, with the defaults of the relay we
/// replace. Sizes are bytes, ages are days.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from, for messages.
    pub path: PathBuf,
    pub mail_domain: MailDomain,
    pub max_user_send_per_minute: u32,
    pub max_user_send_burst_size: u32,
    /// Recipients one account may address per minute, over all its
    /// messages (0: no limit); as many at once.
    pub max_user_recipients_per_minute: u32,
    /// Push notifications one account's devices get per minute (0: no
    /// limit), in bursts of up to a sixth of that; the rest are folded
    /// into one push when the allowance returns.
    pub max_user_notifications_per_minute: u32,
    pub max_mailbox_size: u64,
    pub max_message_size: u64,
    pub delete_mails_after: u32,
    pub delete_large_after: u32,
    pub delete_inactive_users_after: u32,
    pub username_min_length: usize,
    pub username_max_length: usize,
    pub password_min_length: usize,
    pub filtermail_smtp_port: u16,
    pub filtermail_smtp_port_incoming: u16,
    pub filtermail_http_port_incoming: u16,
    pub filtermail_lmtp_port_transport: u16,
    pub postfix_reinject_port: u16,
    pub postfix_reinject_port_incoming: u16,
    pub filtermail_host: String,
    pub postfix_host: String,
    pub mailboxes_dir: PathBuf,
    pub passdb_path: PathBuf,
    pub turn_socket_path: PathBuf,
    /// chatmail-turn: the addresses it listens on (empty: every address of
    /// the host but loopback), its port, its secret, and its bounds.
    pub turn: TurnConfig,
    pub iroh_relay: String,
    /// Where the relay's own iroh relay listens (plain HTTP, behind
    /// nginx), when `iroh_relay` names this relay.
    pub iroh_relay_listen: std::net::SocketAddr,
    pub max_load_1m: f64,
    pub min_available_memory: u64,
    pub min_free_disk_space: u64,
    pub max_imap_connections: u32,
    pub max_smtp_connections: u32,
    pub disable_ipv6: bool,
    pub imap_rawlog: bool,
    pub imap_compress: bool,
    /// While this file exists, no new accounts are created.
    pub nocreate_file: PathBuf,
    /// Whether the relay's TLS certificate is self-signed, so that clients
    /// must be told to accept it. Defaults to true for IP-only relays.
    pub tls_self_signed: bool,
    /// The DNS server asked for DKIM keys and MX records, as `ip` or
    /// `ip:port`; `None` uses the servers in /etc/resolv.conf.
    pub dns_resolver: Option<std::net::SocketAddr>,
    /// Whether DNS answers are DNSSEC-validated: answers from signed zones
    /// that fail validation are refused, unsigned zones still resolve.
    pub dns_dnssec_validation: bool,
    /// A file of DNSKEY records trusted instead of the root's keys (for
    /// tests with a signed zone on loopback).
    pub dns_trust_anchor: Option<PathBuf>,
    /// Where users reach the operator about privacy (privacy_mail); IMAP
    /// names it as the server's admin.
    pub privacy_mail: Option<String>,
    /// What the relay's web pages say and where operators' own pages are.
    pub site: SiteConfig,
    /// How long journald keeps logs, and where.
    pub logs: LogConfig,
    /// The address the relay's ACME account is registered with (expiry
    /// warnings of the certificate authority); `None` registers without.
    pub acme_email: Option<String>,
    /// The DKIM selector of the relay's signing key: its public key is
    /// published at `<selector>._domainkey.<mail_domain>`.
    pub dkim_selector: String,
    /// Where filtermail-incoming keeps the messages it refuses, for
    /// debugging; `None` (the default) keeps no private data at rest.
    pub filtermail_refused_mail_dir: Option<PathBuf>,
    /// Where chatmail-metadata sends push notifications.
    pub notification_url: String,
    /// A PEM file of extra CAs trusted for `notification_url` (tests, or
    /// a private notification proxy); the system's CAs are trusted too.
    pub notification_ca_file: Option<PathBuf>,
    /// The first retry delay of a failed notification; each further one
    /// is 8 times longer.
    pub notification_retry_base: std::time::Duration,
    /// How long after its first attempt a notification is given up.
    pub notification_retry_deadline: std::time::Duration,
    /// The JSON file served as the `appversions` server metadata.
    pub appversions_file: PathBuf,
    /// The port filtermail-transport connects to for SMTP (25; tests only
    /// change it).
    pub filtermail_transport_smtp_port: u16,
    /// The port of other relays' HTTPS `/mxdeliv` (443; tests only).
    pub filtermail_transport_https_port: u16,
    /// How long an HTTPS /mxdeliv request may wait for its answer; one
    /// that never comes counts as a failure of the destination.
    pub filtermail_transport_https_timeout: std::time::Duration,
    /// A PEM file of extra CAs trusted for other relays (tests only).
    pub filtermail_transport_ca_file: Option<PathBuf>,
    /// Outbound deliveries in flight at once, over all destinations.
    pub filtermail_transport_max_deliveries: usize,
    /// Messages queued or in flight per destination before 4xx.
    pub filtermail_transport_destination_limit: usize,
    /// Deliveries in flight per host address, over all the domains that
    /// name the host, before 4xx.
    pub filtermail_transport_host_limit: usize,
    /// Bytes of messages each filtermail daemon holds at once; beyond it
    /// new messages wait briefly and then get a 4xx.
    pub filtermail_message_memory: u64,
    /// The percentage of `filtermail_message_memory` one client (remote
    /// address, or account) may hold at once; at least one message of
    /// the largest size always fits.
    pub filtermail_client_share: u8,
    /// Whether filtermail-transport may deliver to loopback, private,
    /// link-local and other internal addresses (local test relays only).
    pub filtermail_transport_allow_private: bool,
    /// Where each daemon serves its metrics (`metrics_listen_<daemon>`);
    /// `None` where the key is empty. See [`Config::metrics_listen`].
    pub metrics_listen: [Option<std::net::SocketAddr>; MetricsDaemon::ALL.len()],
    /// Keys present in the file that no part of the relay knows, sorted.
    pub unknown_keys: Vec<String>,
}

/// The programs that serve Prometheus metrics, in the order of their
/// default ports (127.0.0.1:9151 to :9156): our daemons, then Dovecot's
/// stats service as chatmail-configure renders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsDaemon {
    Doveauth,
    ChatmailMetadata,
    FiltermailOutgoing,
    FiltermailIncoming,
    FiltermailTransport,
    Dovecot,
    IrohRelay,
    ChatmailTurn,
}

impl MetricsDaemon {
    pub const ALL: [Self; 8] = [
        Self::Doveauth,
        Self::ChatmailMetadata,
        Self::FiltermailOutgoing,
        Self::FiltermailIncoming,
        Self::FiltermailTransport,
        Self::Dovecot,
        Self::IrohRelay,
        Self::ChatmailTurn,
    ];

    /// The chatmail.ini key of the daemon's metrics address.
    #[must_use]
    pub fn config_key(self) -> &'static str {
        match self {
            Self::Doveauth => "metrics_listen_doveauth",
            Self::ChatmailMetadata => "metrics_listen_chatmail_metadata",
            Self::FiltermailOutgoing => "metrics_listen_filtermail_outgoing",
            Self::FiltermailIncoming => "metrics_listen_filtermail_incoming",
            Self::FiltermailTransport => "metrics_listen_filtermail_transport",
            Self::Dovecot => "metrics_listen_dovecot",
            Self::IrohRelay => "metrics_listen_iroh_relay",
            Self::ChatmailTurn => "metrics_listen_chatmail_turn",
        }
    }

    #[must_use]
    pub fn default_port(self) -> u16 {
        match self {
            Self::Doveauth => 9151,
            Self::ChatmailMetadata => 9152,
            Self::FiltermailOutgoing => 9153,
            Self::FiltermailIncoming => 9154,
            Self::FiltermailTransport => 9155,
            Self::Dovecot => 9156,
            Self::IrohRelay => 9157,
            Self::ChatmailTurn => 9158,
        }
    }
}

impl Config {
    /// The length of the passwords the relay makes for new accounts
    /// (chatmail-newemail, an IP-only relay's login-link page): a little
    /// longer than doveauth's minimum.
    #[must_use]
    pub fn new_account_password_length(&self) -> usize {
        self.password_min_length + 3
    }

    /// Reads and parses `path`, warning once about unknown keys.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::from_ini_str(&text, path)?;
        if !config.unknown_keys.is_empty() {
            tracing::warn!(
                file = %path.display(),
                keys = %config.unknown_keys.join(", "),
                "ignoring unknown keys in config file"
            );
        }
        Ok(config)
    }

    /// Parses the text of a chatmail.ini; `path` is only used in errors.
    pub fn from_ini_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut params = Params::parse(text, path)?;
        let mail_domain = params.required("mail_domain", MailDomain::parse)?;
        let mut metrics_listen = [None; MetricsDaemon::ALL.len()];
        for (slot, daemon) in metrics_listen.iter_mut().zip(MetricsDaemon::ALL) {
            *slot = params.metrics_listen(daemon)?;
        }
        let config = Self {
            max_user_send_per_minute: params.number("max_user_send_per_minute", 60)?,
            max_user_send_burst_size: params.number("max_user_send_burst_size", 10)?,
            max_user_recipients_per_minute: params
                .number("max_user_recipients_per_minute", 1000)?,
            max_user_notifications_per_minute: params
                .number("max_user_notifications_per_minute", 60)?,
            max_mailbox_size: params.get("max_mailbox_size", value::size_bare_mib, 500 << 20)?,
            max_message_size: params.get("max_message_size", value::size, 31_457_280)?,
            delete_mails_after: params.number("delete_mails_after", 20)?,
            delete_large_after: params.number("delete_large_after", 7)?,
            delete_inactive_users_after: params.number("delete_inactive_users_after", 90)?,
            username_min_length: params.number("username_min_length", 9)?,
            username_max_length: params.number("username_max_length", 9)?,
            password_min_length: params.number("password_min_length", 9)?,
            filtermail_smtp_port: params.get("filtermail_smtp_port", value::port, 10080)?,
            filtermail_smtp_port_incoming: params.get(
                "filtermail_smtp_port_incoming",
                value::port,
                10081,
            )?,
            filtermail_http_port_incoming: params.get(
                "filtermail_http_port_incoming",
                value::port,
                10082,
            )?,
            filtermail_lmtp_port_transport: params.get(
                "filtermail_lmtp_port_transport",
                value::port,
                10083,
            )?,
            postfix_reinject_port: params.get("postfix_reinject_port", value::port, 10025)?,
            postfix_reinject_port_incoming: params.get(
                "postfix_reinject_port_incoming",
                value::port,
                10026,
            )?,
            filtermail_host: params.get("filtermail_host", value::host, "127.0.0.1".into())?,
            postfix_host: params.get("postfix_host", value::host, "127.0.0.1".into())?,
            mailboxes_dir: params.get(
                "mailboxes_dir",
                value::path,
                PathBuf::from(format!("/home/vmail/mail/{mail_domain}")),
            )?,
            passdb_path: params.get(
                "passdb_path",
                value::path,
                "/home/vmail/passdb.sqlite".into(),
            )?,
            turn_socket_path: params.get(
                "turn_socket_path",
                value::path,
                "/run/chatmail-turn/turn.socket".into(),
            )?,
            iroh_relay: params.get(
                "iroh_relay",
                |text| Ok(text.trim().to_owned()),
                default_iroh_relay(&mail_domain),
            )?,
            turn: TurnConfig {
                listen: params.get("turn_listen", value::ip_list, Vec::new())?,
                port: params.get("turn_port", value::port, 3478)?,
                secret_path: params.get(
                    "turn_secret_path",
                    value::path,
                    "/var/lib/chatmail-turn/secret".into(),
                )?,
                allow_private: params.get("turn_allow_private", value::boolean, false)?,
                max_allocations: params.number("turn_max_allocations", 2000)?,
                max_allocations_per_user: params.number("turn_max_allocations_per_user", 10)?,
                max_lifetime: params.get(
                    "turn_max_allocation_lifetime",
                    value::duration,
                    std::time::Duration::from_secs(12 * 3600),
                )?,
                max_bandwidth: params.get("turn_max_bandwidth", value::size, 1 << 20)?,
            },
            iroh_relay_listen: params.get(
                "iroh_relay_listen",
                value::socket_addr(3340),
                std::net::SocketAddr::from(([127, 0, 0, 1], 3340)),
            )?,
            max_load_1m: params.get("max_load_1m", value::float, 5.0)?,
            min_available_memory: params.get(
                "min_available_memory",
                value::size_bare_mib,
                200 << 20,
            )?,
            min_free_disk_space: params.get(
                "min_free_disk_space",
                value::size_bare_mib,
                1 << 30,
            )?,
            max_imap_connections: params.number("max_imap_connections", 10_000)?,
            max_smtp_connections: params.number("max_smtp_connections", 1_000)?,
            disable_ipv6: params.get("disable_ipv6", value::boolean, false)?,
            imap_rawlog: params.get("imap_rawlog", value::boolean, false)?,
            imap_compress: params.get("imap_compress", value::boolean, false)?,
            nocreate_file: params.get(
                "nocreate_file",
                value::path,
                "/etc/chatmail-nocreate".into(),
            )?,
            // IP-only relays and test relays (`_` domains) have no
            // certificate from a public CA, as the relay we replace assumes.
            tls_self_signed: params.get(
                "tls_self_signed",
                value::boolean,
                mail_domain.is_ip() || mail_domain.address_domain().starts_with('_'),
            )?,
            dns_resolver: params.optional("dns_resolver", value::socket_addr(53))?,
            dns_dnssec_validation: params.get("dns_dnssec_validation", value::boolean, true)?,
            dns_trust_anchor: params.optional("dns_trust_anchor", value::path)?,
            privacy_mail: params.optional("privacy_mail", value::contact_address)?,
            site: SiteConfig {
                www_folder: params.optional("www_folder", value::path)?,
                privacy_postal: params.optional("privacy_postal", value::page_text)?,
                privacy_supervisor: params.optional("privacy_supervisor", value::page_text)?,
                privacy_pdo: params.optional("privacy_pdo", value::page_text)?,
            },
            logs: LogConfig {
                storage: params.get("log_storage", LogStorage::parse, LogStorage::Volatile)?,
                max_age: params.get(
                    "log_max_age",
                    value::duration,
                    std::time::Duration::from_secs(3 * 86_400),
                )?,
            },
            acme_email: params.optional("acme_email", value::contact_address)?,
            dkim_selector: params.get("dkim_selector", value::dns_label, "opendkim".into())?,
            filtermail_refused_mail_dir: params
                .optional("filtermail_refused_mail_dir", value::path)?,
            notification_url: params.get(
                "notification_url",
                value::url,
                "https://notifications.delta.chat/notify".into(),
            )?,
            notification_ca_file: params.optional("notification_ca_file", value::path)?,
            notification_retry_base: params.get(
                "notification_retry_base",
                |text| value::duration_within(text, RETRY_BASE_RANGE),
                std::time::Duration::from_secs(8),
            )?,
            notification_retry_deadline: params.get(
                "notification_retry_deadline",
                |text| value::duration_within(text, RETRY_DEADLINE_RANGE),
                std::time::Duration::from_secs(5 * 3600),
            )?,
            appversions_file: params.get(
                "appversions_file",
                value::path,
                "/usr/share/chatmail-relay/appversions.json".into(),
            )?,
            filtermail_transport_smtp_port: params.get(
                "filtermail_transport_smtp_port",
                value::port,
                25,
            )?,
            filtermail_transport_https_port: params.get(
                "filtermail_transport_https_port",
                value::port,
                443,
            )?,
            filtermail_transport_https_timeout: params.get(
                "filtermail_transport_https_timeout",
                |text| value::duration_within(text, HTTPS_TIMEOUT_RANGE),
                std::time::Duration::from_secs(120),
            )?,
            filtermail_transport_ca_file: params
                .optional("filtermail_transport_ca_file", value::path)?,
            filtermail_transport_max_deliveries: params
                .number("filtermail_transport_max_deliveries", 1000)?,
            filtermail_transport_destination_limit: params
                .number("filtermail_transport_destination_limit", 30)?,
            filtermail_transport_host_limit: params
                .number("filtermail_transport_host_limit", 120)?,
            filtermail_message_memory: params
                .optional("filtermail_message_memory", value::size)?
                .unwrap_or(0),
            filtermail_client_share: params.get(
                "filtermail_client_share",
                |text| {
                    let percent = value::unsigned(text)?;
                    match u8::try_from(percent) {
                        Ok(percent @ 1..=100) => Ok(percent),
                        _ => Err("must be a percentage from 1 to 100".to_owned()),
                    }
                },
                25,
            )?,
            filtermail_transport_allow_private: params.get(
                "filtermail_transport_allow_private",
                value::boolean,
                false,
            )?,
            metrics_listen,
            unknown_keys: Vec::new(),
            path: path.to_owned(),
            mail_domain,
        };
        // Unset: room for four messages of the largest size, at least
        // 128 MiB. Set: at least one message of the largest size must fit.
        let smallest_budget = config.max_message_size;
        let config = match config.filtermail_message_memory {
            0 => Config {
                filtermail_message_memory: (128 << 20).max(smallest_budget.saturating_mul(4)),
                ..config
            },
            budget if budget < smallest_budget => {
                return Err(ConfigError::BadValue {
                    path: path.to_owned(),
                    key: "filtermail_message_memory".into(),
                    value: budget.to_string(),
                    reason: format!(
                        "is smaller than max_message_size ({smallest_budget}): such a message could never be taken"
                    ),
                });
            }
            _ => config,
        };
        if config.username_min_length > config.username_max_length {
            return Err(ConfigError::BadValue {
                path: path.to_owned(),
                key: "username_min_length".into(),
                value: config.username_min_length.to_string(),
                reason: format!(
                    "is larger than username_max_length ({})",
                    config.username_max_length
                ),
            });
        }
        Ok(Self {
            unknown_keys: params.into_unknown_keys(),
            ..config
        })
    }

    /// `max_message_size` as a buffer length.
    #[must_use]
    pub fn max_message_bytes(&self) -> usize {
        usize::try_from(self.max_message_size).unwrap_or(usize::MAX)
    }

    /// `filtermail_message_memory` as a byte count.
    #[must_use]
    pub fn message_memory_bytes(&self) -> usize {
        usize::try_from(self.filtermail_message_memory).unwrap_or(usize::MAX)
    }

    /// The bytes of message memory one client may hold:
    /// `filtermail_client_share` percent of it, but never less than one
    /// message of the largest size.
    #[must_use]
    pub fn client_share_bytes(&self) -> usize {
        let total = self.message_memory_bytes();
        let share = u128::from(self.filtermail_message_memory)
            * u128::from(self.filtermail_client_share)
            / 100;
        let share = usize::try_from(share).unwrap_or(usize::MAX);
        share.max(self.max_message_bytes()).min(total)
    }

    /// Connections a before-queue filter accepts at once: Postfix holds
    /// one per smtpd process (at most `max_smtp_connections`), with
    /// headroom for sessions that are closing.
    #[must_use]
    pub fn filter_connection_limit(&self) -> usize {
        usize::try_from(self.max_smtp_connections)
            .unwrap_or(usize::MAX)
            .saturating_mul(2)
            .max(64)
    }

    /// Where `daemon` serves its metrics; `None` serves none.
    #[must_use]
    pub fn metrics_listen(&self, daemon: MetricsDaemon) -> Option<std::net::SocketAddr> {
        let index = MetricsDaemon::ALL.iter().position(|each| *each == daemon);
        index.and_then(|index| self.metrics_listen.get(index).copied().flatten())
    }

    /// Whether `iroh_relay` names this relay (its mail domain, or the
    /// address its iroh relay listens on, as a local relay serves it), so
    /// that it runs its own iroh relay; an empty value or another host:
    /// it does not.
    #[must_use]
    pub fn runs_iroh_relay(&self) -> bool {
        iroh_relay_host(&self.iroh_relay).is_some_and(|host| {
            host.eq_ignore_ascii_case(&self.mail_domain.to_string())
                || host.parse::<std::net::IpAddr>().ok() == Some(self.iroh_relay_listen.ip())
        })
    }

    /// The mailbox directory layout under `mailboxes_dir`.
    #[must_use]
    pub fn mailboxes(&self) -> Mailboxes {
        Mailboxes::new(&self.mailboxes_dir)
    }
}

/// chatmail-turn's settings (see the README's "Calls and realtime").
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// Empty: every address of the host but loopback ones.
    pub listen: Vec<std::net::IpAddr>,
    pub port: u16,
    /// The shared secret credentials are signed with; created (0600) at
    /// the first start.
    pub secret_path: PathBuf,
    /// Relaying to loopback, private and other internal addresses (local
    /// test relays only).
    pub allow_private: bool,
    /// Allocations at once, in total and per account (0: no limit).
    pub max_allocations: u32,
    pub max_allocations_per_user: u32,
    /// The longest an allocation relays, however often it is refreshed.
    pub max_lifetime: std::time::Duration,
    /// Bytes per second one allocation may relay each way.
    pub max_bandwidth: u64,
}

/// Delta Chat reaches an iroh relay over HTTPS only with a certificate of
/// the public web PKI: an IP-only relay, whose certificate is self-signed,
/// serves its iroh relay over plain HTTP (iroh's own encryption still
/// protects what it carries).
fn default_iroh_relay(mail_domain: &MailDomain) -> String {
    if mail_domain.is_ip() {
        format!("http://{mail_domain}")
    } else {
        format!("https://{mail_domain}")
    }
}

/// The host of an `http://` or `https://` URL, without port or brackets.
fn iroh_relay_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next()?,
        None => authority.split(':').next()?,
    };
    (!host.is_empty()).then_some(host)
}

/// The `[params]` section as raw strings; typed getters consume keys so
/// that whatever is left over is unknown.
struct Params<'a> {
    path: &'a Path,
    values: BTreeMap<String, String>,
}

impl<'a> Params<'a> {
    fn parse(text: &str, path: &'a Path) -> Result<Self, ConfigError> {
        let options = ini::ParseOption {
            enabled_quote: false,
            enabled_escape: false,
            ..ini::ParseOption::default()
        };
        let ini =
            ini::Ini::load_from_str_opt(text, options).map_err(|err| ConfigError::Syntax {
                path: path.to_owned(),
                message: err.to_string(),
            })?;
        let section = ini
            .section(Some(SECTION))
            .ok_or_else(|| ConfigError::MissingSection {
                path: path.to_owned(),
            })?;
        let mut values = BTreeMap::new();
        for (key, value) in section {
            let key = key.trim().to_ascii_lowercase();
            if values.insert(key.clone(), value.to_owned()).is_some() {
                return Err(ConfigError::BadValue {
                    path: path.to_owned(),
                    key,
                    value: value.to_owned(),
                    reason: "the key appears more than once".into(),
                });
            }
        }
        Ok(Self { path, values })
    }

    fn take<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(raw) = self.values.remove(key) else {
            return Ok(None);
        };
        parse(&raw)
            .map(Some)
            .map_err(|reason| ConfigError::BadValue {
                path: self.path.to_owned(),
                key: key.to_owned(),
                value: raw,
                reason,
            })
    }

    fn get<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        default: T,
    ) -> Result<T, ConfigError> {
        Ok(self.take(key, parse)?.unwrap_or(default))
    }

    /// A key whose empty value means the same as its absence.
    fn optional<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        if self
            .values
            .get(key)
            .is_some_and(|raw| raw.trim().is_empty())
        {
            self.values.remove(key);
            return Ok(None);
        }
        self.take(key, parse)
    }

    fn required<T>(
        &mut self,
        key: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.take(key, parse)?
            .ok_or_else(|| ConfigError::MissingKey {
                path: self.path.to_owned(),
                key,
            })
    }

    fn number<T: TryFrom<u64>>(&mut self, key: &str, default: T) -> Result<T, ConfigError> {
        self.get(
            key,
            |text| {
                let number = value::unsigned(text)?;
                T::try_from(number).map_err(|_| "the number is too large".to_owned())
            },
            default,
        )
    }

    /// A daemon's metrics address: loopback on its own port when absent,
    /// none when empty, `ip` (the daemon's port) or `ip:port` otherwise.
    fn metrics_listen(
        &mut self,
        daemon: MetricsDaemon,
    ) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let key = daemon.config_key();
        let port = daemon.default_port();
        if !self.values.contains_key(key) {
            return Ok(Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))));
        }
        self.optional(key, value::socket_addr(port))
    }

    fn into_unknown_keys(self) -> Vec<String> {
        self.values
            .into_keys()
            .filter(|key| {
                !DEPLOYMENT_KEYS.contains(&key.as_str())
                    && !DEPLOYMENT_PREFIXES
                        .iter()
                        .any(|prefix| key.starts_with(prefix))
            })
            .collect()
    }
}
