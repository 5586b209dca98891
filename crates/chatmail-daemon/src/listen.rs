//! Binding the TCP ports the filters listen on.

use std::io;

use tokio::net::{TcpListener, TcpSocket};

/// Postfix opens one proxy connection per client session; a deep backlog
/// queues a burst instead of refusing it.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (`host:port`) with SO_REUSEADDR, so a restarted daemon
/// does not wait for old connections in TIME_WAIT.
pub async fn bind_tcp(addr: &str) -> io::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::ErrorKind::AddrNotAvailable.into()))
}
