//! Opening a TCP connection to a host: all its addresses are tried at
//! once (IPv6 and IPv4 alike, "happy eyeballs"), the first to connect
//! wins and the others are dropped.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use tokio::net::TcpStream;

/// A host that does not complete a TCP handshake within this time is
/// treated as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Later addresses start this long after earlier ones, preferring the
/// resolver's order without waiting on a dead address.
const STAGGER: Duration = Duration::from_millis(250);

pub async fn connect(addresses: &[IpAddr], port: u16) -> Result<TcpStream, String> {
    let mut attempts: FuturesUnordered<_> = addresses
        .iter()
        .enumerate()
        .map(|(index, ip)| {
            let addr = SocketAddr::new(*ip, port);
            let delay = STAGGER.saturating_mul(u32::try_from(index).unwrap_or(u32::MAX));
            async move {
                tokio::time::sleep(delay).await;
                TcpStream::connect(addr)
                    .await
                    .map_err(|error| format!("{addr}: {error}"))
            }
        })
        .collect();
    let all = async {
        let mut last_error = String::from("no addresses");
        while let Some(result) = attempts.next().await {
            match result {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, all)
        .await
        .unwrap_or_else(|_| Err(format!("no connection within {CONNECT_TIMEOUT:?}")))
}
