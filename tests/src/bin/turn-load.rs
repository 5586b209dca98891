//! Load for a TURN server, as calls make it: CLIENTS allocations, each
//! sending PACKET_SIZE-byte datagrams at RATE a second (an audio stream:
//! 50 of 160 bytes) through its relay to one UDP peer on loopback, which
//! sends each back the same way. Credentials follow the TURN REST scheme
//! (username = expiry, password = base64 HMAC-SHA1 under SECRET), which
//! chatmail-turn and coturn's `use-auth-secret` share. Prints the
//! datagrams the peer received and the clients got back, and how long
//! the sending took.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Parser;
use relay_tests::turn_client;
use tokio::net::UdpSocket;
use webrtc_util::Conn as _;

#[derive(Parser)]
struct Args {
    /// The TURN server, HOST:PORT.
    server: String,
    #[arg(long)]
    secret: String,
    #[arg(long)]
    realm: String,
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Datagrams per second per client.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    #[arg(long, default_value_t = 160)]
    packet_size: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let peer = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let peer_addr = peer.local_addr()?;
    let at_peer = Arc::new(AtomicU64::new(0));
    // The peer answers every datagram, as the other end of a call would.
    let echo = {
        let (peer, at_peer) = (Arc::clone(&peer), Arc::clone(&at_peer));
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((len, from)) = peer.recv_from(&mut buf).await {
                at_peer.fetch_add(1, Ordering::Relaxed);
                let _ = peer.send_to(buf.get(..len).unwrap_or_default(), from).await;
            }
        })
    };
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let (username, password) = chatmail_turn::credentials::expiring_at(&args.secret, expiry);
    let mut relays = Vec::new();
    for _ in 0..args.clients {
        let client = turn_client(&args.server, &username, &password, &args.realm, 200).await?;
        // coturn picks relay ports at random and fails an allocation now
        // and then when the port it picked is taken: try again.
        let mut attempt = 0;
        let relayed = loop {
            attempt += 1;
            match client.allocate().await {
                Ok(relayed) => break relayed,
                Err(error) if attempt >= 3 => return Err(error).context("allocating"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        // The first datagram makes the permission and the channel.
        relayed.send_to(b"hello", peer_addr).await?;
        relays.push((client, Arc::new(relayed)));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warm = at_peer.load(Ordering::Relaxed);
    let returned = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for (_, relayed) in &relays {
        let relayed = Arc::clone(relayed);
        let returned = Arc::clone(&returned);
        let size = args.packet_size;
        let period = Duration::from_secs(1) / args.rate.max(1);
        tasks.push(tokio::spawn(async move {
            let payload = vec![0x55u8; size];
            let mut tick = tokio::time::interval(period);
            let reader = {
                let relayed = Arc::clone(&relayed);
                let returned = Arc::clone(&returned);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    while relayed.recv_from(&mut buf).await.is_ok() {
                        returned.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            while Instant::now() < deadline {
                tick.tick().await;
                let _ = relayed.send_to(&payload, peer_addr).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            reader.abort();
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let at_peer = at_peer.load(Ordering::Relaxed) - warm;
    let returned = returned.load(Ordering::Relaxed);
    println!(
        "clients={} sent_per_s={} at_peer={at_peer} returned={returned} seconds={elapsed:.1}",
        args.clients,
        u64::from(args.rate) * args.clients as u64,
    );
    echo.abort();
    // A Refresh with lifetime 0 frees each allocation for the next run.
    for (client, relayed) in relays {
        let _ = relayed.close().await;
        let _ = client.close().await;
    }
    Ok(())
}
