//! chatmail-turn as a TURN client meets it, loopback only: credentials
//! from its socket allocate and relay UDP to an echo peer (with
//! `turn_allow_private`, which this alone needs); a wrong password and an
//! expired username get 401; by default a permission for a loopback peer
//! is refused with 403 and nothing reaches the peer; allocations are
//! bounded per account and in total. (Other internal address classes are
//! covered by the unit tests of the filter: no packet is sent to them.)

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use relay_tests::{Daemon, Ready, Scrape, free_port, turn_client};
use tokio::io::AsyncReadExt as _;
use tokio::net::{UdpSocket, UnixStream};
use turn::client::Client;
use webrtc_util::Conn as _;

const REALM: &str = "127.0.0.1";

struct Turn {
    daemon: Daemon,
    dir: tempfile::TempDir,
    port: u16,
    metrics_port: u16,
}

impl Turn {
    fn start(extra: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        // The daemon runs as vmail.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))?;
        let port = free_port()?;
        let metrics_port = free_port()?;
        let ini = dir.path().join("chatmail.ini");
        fs::write(
            &ini,
            format!(
                "[params]\nmail_domain = 127.0.0.1\nturn_listen = 127.0.0.1\nturn_port = {port}\n\
                 turn_secret_path = {dir}/secret/turn\nturn_socket_path = {dir}/turn.socket\n\
                 metrics_listen_chatmail_turn = 127.0.0.1:{metrics_port}\n{extra}",
                dir = dir.path().display()
            ),
        )?;
        fs::set_permissions(&ini, fs::Permissions::from_mode(0o644))?;
        let socket = dir.path().join("turn.socket");
        let daemon = Daemon::start(
            "chatmail-turn",
            &[ini.as_os_str()],
            Ready::Socket(&socket),
            dir.path(),
        )?;
        Ok(Self {
            daemon,
            dir,
            port,
            metrics_port,
        })
    }

    /// One `username:password` line from the credentials socket, as
    /// chatmail-metadata reads it.
    async fn credentials(&self) -> Result<(String, String)> {
        let mut stream = UnixStream::connect(self.dir.path().join("turn.socket")).await?;
        let mut line = String::new();
        stream.read_to_string(&mut line).await?;
        let (username, password) = line
            .trim_end()
            .split_once(':')
            .with_context(|| format!("not username:password: {line:?}"))?;
        Ok((username.to_owned(), password.to_owned()))
    }

    fn secret(&self) -> Result<String> {
        Ok(fs::read_to_string(self.dir.path().join("secret/turn"))?
            .trim()
            .to_owned())
    }

    async fn client(&self, username: &str, password: &str) -> Result<Client> {
        let server = format!("127.0.0.1:{}", self.port);
        turn_client(&server, username, password, REALM, 100).await
    }

    async fn scrape(&self) -> Result<Scrape> {
        Scrape::fetch(self.metrics_port).await
    }
}

/// A UDP peer on loopback that answers every datagram with itself.
async fn echo_peer() -> Result<(SocketAddr, tokio::task::JoinHandle<usize>)> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    let task = tokio::spawn(async move {
        let mut echoed = 0;
        let mut buf = [0u8; 1500];
        while let Ok(Ok((len, from))) =
            tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf)).await
        {
            let _ = socket
                .send_to(buf.get(..len).unwrap_or_default(), from)
                .await;
            echoed += 1;
        }
        echoed
    });
    Ok((addr, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_socket_relay_udp_to_a_peer() -> Result<()> {
    let turn = Turn::start("turn_allow_private = true\n")?;
    let (username, password) = turn.credentials().await?;
    let client = turn.client(&username, &password).await?;
    let relayed = client.allocate().await?;
    let (peer, echo) = echo_peer().await?;
    relayed.send_to(b"hello through TURN", peer).await?;
    let mut buf = [0u8; 1500];
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), relayed.recv_from(&mut buf))
        .await
        .context("no echo through the relay")??;
    assert_eq!(buf.get(..len), Some(b"hello through TURN".as_slice()));
    assert_eq!(from, peer);
    client.close().await?;
    assert_eq!(echo.await?, 1);
    let scrape = turn.scrape().await?;
    assert_eq!(scrape.value("chatmail_turn_allocations_total")?, 1.0);
    assert!(scrape.value("chatmail_turn_relayed_packets_total")? >= 2.0);
    assert!(scrape.value("chatmail_turn_relayed_bytes_total")? >= 36.0);

    // The secret is random, private, and kept across restarts: handed-out
    // credentials stay valid.
    let secret = turn.secret()?;
    assert_eq!(secret.len(), 64);
    let mode = fs::metadata(turn.dir.path().join("secret/turn"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(turn.daemon);
    let socket = turn.dir.path().join("turn.socket");
    let daemon = Daemon::start(
        "chatmail-turn",
        &[turn.dir.path().join("chatmail.ini").as_os_str()],
        Ready::Socket(&socket),
        turn.dir.path(),
    )?;
    let again = Turn { daemon, ..turn };
    assert_eq!(again.secret()?, secret);
    let client = again.client(&username, &password).await?;
    client
        .allocate()
        .await
        .context("old credentials after a restart")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_expired_credentials_get_401() -> Result<()> {
    let turn = Turn::start("turn_allow_private = true\n")?;
    let (username, password) = turn.credentials().await?;
    let wrong = turn.client(&username, &format!("{password}x")).await?;
    let refused = wrong
        .allocate()
        .await
        .err()
        .context("a wrong password allocated")?;
    assert!(refused.to_string().contains("401"), "{refused}");
    let (expired, expired_password) =
        chatmail_turn::credentials::expiring_at(&turn.secret()?, 1_700_000_000);
    let old = turn.client(&expired, &expired_password).await?;
    let refused = old
        .allocate()
        .await
        .err()
        .context("expired credentials allocated")?;
    assert!(refused.to_string().contains("401"), "{refused}");
    // The same scheme with another secret (another relay's) is no key here.
    let (foreign, foreign_password) = chatmail_turn::credentials::mint("another relay's secret")?;
    let other = turn.client(&foreign, &foreign_password).await?;
    assert!(other.allocate().await.is_err());
    assert!(
        turn.scrape()
            .await?
            .value(r#"chatmail_turn_refused_total{reason="credentials"}"#)?
            >= 3.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_loopback_peers_are_refused() -> Result<()> {
    let turn = Turn::start("")?;
    let (username, password) = turn.credentials().await?;
    let client = turn.client(&username, &password).await?;
    let relayed = client.allocate().await?;
    let (peer, echo) = echo_peer().await?;
    let refused = relayed
        .send_to(b"into the relay's own loopback", peer)
        .await
        .err()
        .context("a permission for a loopback peer was granted")?;
    assert!(refused.to_string().contains("403"), "{refused}");
    assert_eq!(echo.await?, 0, "nothing reached the loopback peer");
    let scrape = turn.scrape().await?;
    assert!(scrape.value(r#"chatmail_turn_refused_total{reason="internal_peer"}"#)? >= 1.0);
    assert_eq!(scrape.value("chatmail_turn_relayed_packets_total")?, 0.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_are_bounded_per_account_and_in_total() -> Result<()> {
    let turn = Turn::start(
        "turn_allow_private = true\nturn_max_allocations_per_user = 2\nturn_max_allocations = 3\n",
    )?;
    let (alice, alice_password) = turn.credentials().await?;
    let mut held = Vec::new();
    for _ in 0..2 {
        let client = turn.client(&alice, &alice_password).await?;
        held.push((client.allocate().await?, client));
    }
    let third = turn.client(&alice, &alice_password).await?;
    let refused = third
        .allocate()
        .await
        .err()
        .context("a third allocation for one account")?;
    assert!(refused.to_string().contains("486"), "{refused}");

    // Another account still gets one, until the server holds three.
    let (bob, bob_password) = credentials_of_another_account(&turn).await?;
    let client = turn.client(&bob, &bob_password).await?;
    held.push((client.allocate().await?, client));
    let (carol, carol_password) = credentials_of_another_account(&turn).await?;
    let fourth = turn.client(&carol, &carol_password).await?;
    if fourth.allocate().await.is_ok() {
        bail!("a fourth allocation beyond turn_max_allocations");
    }
    let scrape = turn.scrape().await?;
    assert_eq!(scrape.value("chatmail_turn_allocations_open")?, 3.0);
    assert!(scrape.value(r#"chatmail_turn_refused_total{reason="user_quota"}"#)? >= 1.0);
    assert!(scrape.value(r#"chatmail_turn_refused_total{reason="capacity"}"#)? >= 1.0);

    // Releasing one (a Refresh with lifetime 0) lets the account
    // allocate again.
    if let Some((relayed, _)) = held.first() {
        relayed.close().await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = turn.client(&alice, &alice_password).await?;
    again
        .allocate()
        .await
        .context("the account's quota after closing one")?;
    Ok(())
}

/// Credentials under another username (another expiry second).
async fn credentials_of_another_account(turn: &Turn) -> Result<(String, String)> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600
        + offset;
    Ok(chatmail_turn::credentials::expiring_at(
        &turn.secret()?,
        expiry,
    ))
}
