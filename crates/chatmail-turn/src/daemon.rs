//! Wiring: the secret, one listener per address (each behind its gate,
//! each making relayed sockets on its own address), the TURN server, and
//! the credentials socket.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result};
use chatmail_config::Config;
use tokio::net::UdpSocket;
use turn::server::Server;
use turn::server::config::{ConnConfig, ServerConfig};

use crate::auth::Auth;
use crate::gate::{Gate, Policy, Quota};
use crate::metrics::TurnMetrics;
use crate::peers::PeerFilter;
use crate::relay::{AllocationLimits, RelayGenerator};

/// Runs until `shutdown` completes.
pub async fn run(
    config: &Config,
    metrics: TurnMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let turn = &config.turn;
    let secret = crate::secret::load_or_create(&turn.secret_path).context("turn_secret_path")?;
    let host = host_addresses().context("listing the host's addresses")?;
    let listen = if turn.listen.is_empty() {
        host.iter()
            .copied()
            .filter(|ip| is_public_listen_address(*ip))
            .collect()
    } else {
        turn.listen.clone()
    };
    anyhow::ensure!(
        !listen.is_empty(),
        "turn_listen: the host has no address but loopback ones; name one"
    );
    let filter = Arc::new(PeerFilter::new(turn.allow_private, host));
    let auth = Arc::new(Auth::new(&secret, metrics.clone()));
    let quota = Arc::new(Mutex::new(Quota::default()));
    let open = Arc::new(AtomicU32::new(0));
    let realm = config.mail_domain.to_string();
    let limits = AllocationLimits {
        max_allocations: turn.max_allocations,
        max_lifetime: turn.max_lifetime,
        max_bandwidth: turn.max_bandwidth,
    };
    let policy = Policy {
        auth: Arc::clone(&auth),
        realm: realm.clone(),
        filter: Arc::clone(&filter),
        max_per_user: turn.max_allocations_per_user,
        quota: Arc::clone(&quota),
        metrics: metrics.clone(),
    };
    let mut conn_configs = Vec::new();
    for ip in &listen {
        let addr = SocketAddr::new(*ip, turn.port);
        let socket = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding {addr} (turn_listen, turn_port)"))?;
        let gate = Gate::new(socket, policy.clone())?;
        conn_configs.push(ConnConfig {
            conn: Arc::new(gate),
            relay_addr_generator: Box::new(RelayGenerator {
                address: *ip,
                filter: Arc::clone(&filter),
                limits,
                open: Arc::clone(&open),
                metrics: metrics.clone(),
            }),
        });
        tracing::info!(%addr, "TURN listening (UDP)");
    }
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::channel(1024);
    let server = Server::new(ServerConfig {
        conn_configs,
        realm,
        auth_handler: auth,
        channel_bind_timeout: Duration::from_secs(600),
        alloc_close_notify: Some(closed_tx),
    })
    .await
    .map_err(|err| anyhow::anyhow!("starting the TURN server: {err}"))?;
    let released = Arc::clone(&quota);
    tokio::spawn(async move {
        while let Some(info) = closed_rx.recv().await {
            let five_tuple = (info.five_tuple.dst_addr, info.five_tuple.src_addr);
            released
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .released(five_tuple);
        }
    });
    let listener = dovecot_dict::bind(
        &config.turn_socket_path,
        dovecot_dict::SocketOptions::default(),
    )
    .with_context(|| {
        format!(
            "binding {} (turn_socket_path)",
            config.turn_socket_path.display()
        )
    })?;
    let credentials = tokio::spawn(crate::credentials::serve(listener, Arc::from(secret)));
    shutdown.await;
    credentials.abort();
    let _ = server.close().await;
    Ok(())
}

/// Every address of the host's interfaces.
fn host_addresses() -> Result<Vec<IpAddr>> {
    let mut addresses = Vec::new();
    for interface in nix::ifaddrs::getifaddrs()? {
        let Some(address) = interface.address else {
            continue;
        };
        let ip = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = address.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    Ok(addresses)
}

/// Addresses TURN listens on by default: not loopback, not link-local
/// (which needs an interface to be named).
fn is_public_listen_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}
