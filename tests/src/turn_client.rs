//! A TURN client (webrtc-rs) on its own loopback UDP socket, listening,
//! for the TURN tests, turn-probe and turn-load.

use std::sync::Arc;

use anyhow::Result;
use tokio::net::UdpSocket;
use turn::client::{Client, ClientConfig};

/// A client of the TURN server at `server` (`host:port`) with these
/// credentials; `rto_ms` is its first retransmission timeout.
pub async fn turn_client(
    server: &str,
    username: &str,
    password: &str,
    realm: &str,
    rto_ms: u16,
) -> Result<Client> {
    let client = Client::new(ClientConfig {
        stun_serv_addr: server.to_owned(),
        turn_serv_addr: server.to_owned(),
        username: username.to_owned(),
        password: password.to_owned(),
        realm: realm.to_owned(),
        software: String::new(),
        rto_in_ms: rto_ms,
        conn: Arc::new(UdpSocket::bind("127.0.0.1:0").await?),
        vnet: None,
    })
    .await?;
    client.listen().await?;
    Ok(client)
}
