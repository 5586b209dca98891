//! Allocates on a TURN server with the credentials a client was handed,
//! relays one datagram to a loopback echo peer and back, and says how
//! that went: for tests that check what Delta Chat's `ice_servers()`
//! lists (loopback only; the server must allow loopback peers).
//!
//!   turn-probe HOST:PORT USERNAME PASSWORD REALM

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use relay_tests::turn_client;
use tokio::net::UdpSocket;
use webrtc_util::Conn as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, username, password, realm] = args.as_slice() else {
        bail!("usage: turn-probe HOST:PORT USERNAME PASSWORD REALM");
    };
    let client = turn_client(server, username, password, realm, 200).await?;
    let relayed = client.allocate().await.context("allocating")?;
    let echo = UdpSocket::bind("127.0.0.1:0").await?;
    let peer = echo.local_addr()?;
    relayed
        .send_to(b"probe", peer)
        .await
        .context("sending to the peer")?;
    let mut buf = [0u8; 64];
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), echo.recv_from(&mut buf))
        .await
        .context("nothing reached the peer")??;
    echo.send_to(buf.get(..len).unwrap_or_default(), from)
        .await?;
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), relayed.recv_from(&mut buf))
        .await
        .context("no answer through the relay")??;
    anyhow::ensure!(
        buf.get(..len) == Some(b"probe".as_slice()),
        "a garbled echo"
    );
    println!("relayed through {}", relayed.local_addr()?);
    client.close().await?;
    Ok(())
}
