//! Where a relay's configuration, sockets and programs live, and on which
//! addresses and ports it listens: a system install (/etc, /run, the
//! standard ports) or a private instance under one directory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::error::ConfigureError;

/// The ports clients and other relays connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicPorts {
    pub smtp: u16,
    pub submission: u16,
    pub smtps: u16,
    pub imap: u16,
    pub imaps: u16,
    /// nginx: HTTPS for /new and /mxdeliv, HTTP for redirects (and ACME).
    pub https: u16,
    pub http: u16,
    /// Where nginx's stream block on `https` passes connections on, by
    /// ALPN: internal listeners on loopback that take a PROXY protocol
    /// header first.
    pub behind_https: BehindHttps,
}

/// The internal listeners behind port 443.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BehindHttps {
    /// nginx's HTTPS site.
    pub web: u16,
    /// Dovecot, implicit TLS (ALPN `imap`).
    pub imaps: u16,
    /// Postfix's submission, implicit TLS (ALPN `smtp`).
    pub smtps: u16,
}

impl PublicPorts {
    pub const STANDARD: Self = Self {
        smtp: 25,
        submission: 587,
        smtps: 465,
        imap: 143,
        imaps: 993,
        https: 443,
        http: 80,
        behind_https: BehindHttps {
            web: 8443,
            imaps: 8993,
            smtps: 8465,
        },
    };

    /// The standard ports moved up by `base` (25 -> base + 25, ...), for
    /// relays that run without privileges to bind low ports.
    pub fn offset(base: u16) -> Result<Self, ConfigureError> {
        let shift = |port: u16| {
            base.checked_add(port)
                .ok_or(ConfigureError::PortOverflow { base, port })
        };
        Ok(Self {
            smtp: shift(25)?,
            submission: shift(587)?,
            smtps: shift(465)?,
            imap: shift(143)?,
            imaps: shift(993)?,
            https: shift(443)?,
            http: shift(80)?,
            // base + 1443 ... rather than base + 8443: below Linux's
            // ephemeral ports for the usual bases.
            behind_https: BehindHttps {
                web: shift(1443)?,
                imaps: shift(1993)?,
                smtps: shift(1465)?,
            },
        })
    }
}

/// The unix sockets of the dict daemons Dovecot talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DictSockets {
    pub doveauth: PathBuf,
    pub lastlogin: PathBuf,
    pub metadata: PathBuf,
}

impl DictSockets {
    /// Where the systemd units put them (RuntimeDirectory).
    #[must_use]
    pub fn system() -> Self {
        Self {
            doveauth: "/run/doveauth/doveauth.socket".into(),
            lastlogin: "/run/chatmail-lastlogin/lastlogin.socket".into(),
            metadata: "/run/chatmail-metadata/metadata.socket".into(),
        }
    }

    /// All three in `dir`.
    #[must_use]
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            doveauth: dir.join("doveauth.socket"),
            lastlogin: dir.join("lastlogin.socket"),
            metadata: dir.join("metadata.socket"),
        }
    }
}

/// A Postfix and Dovecot instance of its own, beside any system one: all
/// state under `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateInstance {
    pub root: PathBuf,
    /// Dovecot's instance_name, which `doveadm -i` finds it by.
    pub instance_name: String,
}

impl PrivateInstance {
    #[must_use]
    pub fn postfix_queue(&self) -> PathBuf {
        self.root.join("postfix-queue")
    }

    #[must_use]
    pub fn postfix_data(&self) -> PathBuf {
        self.root.join("postfix-data")
    }

    #[must_use]
    pub fn dovecot_base(&self) -> PathBuf {
        self.root.join("dovecot-run")
    }

    #[must_use]
    pub fn dovecot_state(&self) -> PathBuf {
        self.root.join("dovecot-state")
    }

    #[must_use]
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }

    /// nginx's configuration, pid file and temporary files.
    #[must_use]
    pub fn nginx_dir(&self) -> PathBuf {
        self.root.join("nginx")
    }
}

/// The owner of all mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vmail {
    pub uid: u32,
    pub gid: u32,
}

impl Vmail {
    /// The `vmail` user of this machine.
    pub fn lookup() -> Result<Self, ConfigureError> {
        let user = nix::unistd::User::from_name("vmail")
            .map_err(ConfigureError::UserLookup)?
            .ok_or(ConfigureError::NoVmailUser)?;
        Ok(Self {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }
}

/// Everything about a relay's configuration that chatmail.ini does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub postfix_dir: PathBuf,
    pub dovecot_dir: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub sockets: DictSockets,
    /// Where chatmail-quota-expire is installed.
    pub bin_dir: PathBuf,
    /// One address to listen on, or every address when `None`.
    pub listen: Option<IpAddr>,
    pub ports: PublicPorts,
    pub vmail: Vmail,
    pub private: Option<PrivateInstance>,
    /// The milter that DKIM-signs outgoing mail at reinjection, as
    /// Postfix writes it (`unix:opendkim/opendkim.sock`,
    /// `inet:127.0.0.1:8891`).
    pub dkim_milter: Option<String>,
    /// OpenDKIM as this relay's signer, configured by chatmail-configure
    /// (domain relays without a `dkim_milter` of their own).
    pub opendkim: Option<OpenDkimLayout>,
    pub web: WebLayout,
    /// certbot's directories, for a certificate from an ACME CA.
    pub acme: crate::acme::AcmeLayout,
    /// The iroh relay's configuration, written while the relay runs its
    /// own iroh relay and removed otherwise (its unit starts only while
    /// the file exists).
    pub iroh_relay_config: PathBuf,
    /// journald's drop-in that overrides the package's log settings
    /// (Storage=volatile, MaxRetentionSec=3d) when chatmail.ini asks for
    /// others; none for private instances, which log into their own files.
    pub journald_override: Option<PathBuf>,
}

/// Where OpenDKIM's configuration, key and socket are (Debian's opendkim
/// package: its unit reads /etc/opendkim.conf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenDkimLayout {
    pub conf: PathBuf,
    /// KeyTable and SigningTable.
    pub tables_dir: PathBuf,
    /// The private keys, readable by OpenDKIM only.
    pub key_dir: PathBuf,
    /// The milter socket Postfix connects to (group opendkim, which the
    /// package puts the postfix user in).
    pub socket: PathBuf,
    pub pid_file: PathBuf,
    /// The user OpenDKIM switches to and that owns the key; `None` keeps
    /// the user that starts it (private instances).
    pub user: Option<String>,
    /// OpenDKIM's umask, which sets the socket's mode: group only on a
    /// system; anyone for a private instance, whose directory guards it
    /// and whose OpenDKIM runs as another user than Postfix.
    pub umask: &'static str,
    /// Whether OpenDKIM refuses a key below a directory others may
    /// write to (/tmp, where private instances of the tests live).
    pub require_safe_keys: bool,
}

impl OpenDkimLayout {
    #[must_use]
    pub fn system() -> Self {
        Self {
            conf: "/etc/opendkim.conf".into(),
            tables_dir: "/etc/opendkim".into(),
            key_dir: "/etc/dkimkeys".into(),
            socket: "/run/opendkim/opendkim.sock".into(),
            pid_file: "/run/opendkim/opendkim.pid".into(),
            user: Some("opendkim".into()),
            umask: "007",
            require_safe_keys: true,
        }
    }

    /// All under `dir`, run as the user that starts it.
    #[must_use]
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            conf: dir.join("opendkim.conf"),
            tables_dir: dir.to_owned(),
            key_dir: dir.join("keys"),
            socket: dir.join("opendkim.sock"),
            pid_file: dir.join("opendkim.pid"),
            user: None,
            umask: "000",
            require_safe_keys: false,
        }
    }

    /// The private key of `selector`.
    #[must_use]
    pub fn key_file(&self, selector: &str) -> PathBuf {
        self.key_dir.join(format!("{selector}.private"))
    }
}

/// Where the web front door's files are (nginx site, index page) and how
/// nginx reaches chatmail-newemail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebLayout {
    /// The rendered nginx site.
    pub site: PathBuf,
    /// nginx's main configuration, which includes the site and holds the
    /// stream block of port 443 (a private instance has its own).
    pub nginx_conf: PathBuf,
    /// The index page's directory (nginx's root).
    pub www_dir: PathBuf,
    /// fcgiwrap's socket, which runs chatmail-newemail as CGI.
    pub fcgiwrap_socket: PathBuf,
}

impl WebLayout {
    /// Debian's nginx and fcgiwrap packages.
    #[must_use]
    pub fn system() -> Self {
        Self {
            site: "/etc/nginx/sites-available/chatmail".into(),
            nginx_conf: "/etc/nginx/nginx.conf".into(),
            www_dir: "/var/www/chatmail".into(),
            fcgiwrap_socket: "/run/fcgiwrap.socket".into(),
        }
    }

    /// All under `dir` (`--output`, private instances).
    #[must_use]
    pub fn in_dir(dir: &Path, fcgiwrap_socket: PathBuf) -> Self {
        Self {
            site: dir.join("nginx").join("chatmail-site.conf"),
            nginx_conf: dir.join("nginx").join("nginx.conf"),
            www_dir: dir.join("www"),
            fcgiwrap_socket,
        }
    }
}

impl Layout {
    /// A relay installed from the Debian package: /etc/postfix,
    /// /etc/dovecot, sockets under /run, the standard ports on every
    /// address, and Debian's self-signed certificate (ssl-cert) until the
    /// operator names another.
    #[must_use]
    pub fn system(vmail: Vmail) -> Self {
        Self {
            postfix_dir: "/etc/postfix".into(),
            dovecot_dir: "/etc/dovecot".into(),
            tls_cert: "/etc/ssl/certs/ssl-cert-snakeoil.pem".into(),
            tls_key: "/etc/ssl/private/ssl-cert-snakeoil.key".into(),
            sockets: DictSockets::system(),
            bin_dir: "/usr/bin".into(),
            listen: None,
            ports: PublicPorts::STANDARD,
            vmail,
            private: None,
            dkim_milter: None,
            opendkim: Some(OpenDkimLayout::system()),
            web: WebLayout::system(),
            acme: crate::acme::AcmeLayout::system(),
            // Where the relay we replace keeps it.
            iroh_relay_config: "/etc/iroh-relay.toml".into(),
            // Same name as the package's drop-in in /usr/lib, which a file
            // in /etc replaces.
            journald_override: Some("/etc/systemd/journald.conf.d/chatmail.conf".into()),
        }
    }

    /// The Postfix queue's `private/` directory, where Dovecot puts the
    /// LMTP and SASL sockets for Postfix.
    #[must_use]
    pub fn postfix_private(&self) -> PathBuf {
        match &self.private {
            Some(instance) => instance.postfix_queue().join("private"),
            None => "/var/spool/postfix/private".into(),
        }
    }
}
