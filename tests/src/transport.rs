//! What filtermail-transport's tests and benchmark share: the daemon
//! pointed at loopback remotes, and a "black hole" remote host.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use tokio::net::TcpListener;

use crate::daemon::{Daemon, Ready};
use crate::process::free_port;

/// Where the transport finds its remotes.
pub struct TransportSetup<'a> {
    /// A directory the vmail user can read; the daemon's files go below.
    pub dir: &'a Path,
    pub dns: SocketAddr,
    /// Extra CA trusted for remote relays.
    pub ca_file: &'a Path,
    /// The ports every remote host is reached on.
    pub smtp_port: u16,
    pub https_port: u16,
    /// Whether the transport may deliver to loopback remotes (every test
    /// remote is one); off shows that it refuses them.
    pub allow_private: bool,
    /// More chatmail.ini lines.
    pub extra_ini: &'a str,
    pub env: &'a [(&'a str, &'a str)],
}

pub struct TransportDaemon {
    pub daemon: Daemon,
    pub lmtp_port: u16,
    pub metrics_port: u16,
}

impl TransportDaemon {
    pub fn start(setup: &TransportSetup<'_>) -> Result<Self> {
        let lmtp_port = free_port()?;
        let metrics_port = free_port()?;
        let dir = setup.dir.join(format!("transport-{lmtp_port}"));
        fs::create_dir(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        let ini = dir.join("chatmail.ini");
        fs::write(
            &ini,
            format!(
                "[params]\nmail_domain = 127.0.0.1\nmailboxes_dir = {mail}\n\
                 filtermail_lmtp_port_transport = {lmtp_port}\n\
                 metrics_listen_filtermail_transport = 127.0.0.1:{metrics_port}\n\
                 filtermail_transport_smtp_port = {smtp}\n\
                 filtermail_transport_https_port = {https}\n\
                 filtermail_transport_ca_file = {ca}\n\
                 filtermail_transport_allow_private = {allow_private}\n\
                 dns_resolver = {dns}\ndns_dnssec_validation = no\n{extra}",
                mail = dir.join("mail").display(),
                smtp = setup.smtp_port,
                https = setup.https_port,
                ca = setup.ca_file.display(),
                dns = setup.dns,
                allow_private = setup.allow_private,
                extra = setup.extra_ini,
            ),
        )?;
        let daemon = Daemon::start_with_env(
            "filtermail-transport",
            &[ini.as_os_str()],
            setup.env,
            Ready::Port(lmtp_port),
            &dir,
        )?;
        Ok(Self {
            daemon,
            lmtp_port,
            metrics_port,
        })
    }
}

/// Listens on `ip` at each of `ports`, accepting connections and never
/// answering; returns the number of connections accepted so far.
pub async fn black_hole(ip: Ipv4Addr, ports: &[u16]) -> Result<Arc<AtomicUsize>> {
    let count = Arc::new(AtomicUsize::new(0));
    for port in ports {
        let listener = TcpListener::bind((ip, *port)).await?;
        let counter = Arc::clone(&count);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
    }
    Ok(count)
}
