//! A few slow peers must not starve a door. Six peers announce messages
//! of the largest size and then send a byte and wait, at every door of
//! the incoming filter (Postfix's port 25, the filter's own SMTP and HTTP
//! ports) and at submission (one account stalling); meanwhile another
//! peer's ordinary encrypted 10 MB message goes through the same door at
//! once. Through Postfix the slow clients never reach the filter (Postfix
//! receives a whole message first); at the filter's own ports they hold
//! only the bytes they sent, and are cut off with a 4xx when their body
//! stays below the minimum rate: nothing is lost.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use relay_tests::{
    DkimKey, DnsServer, HttpVersion, Relay, RelayOptions, SmtpClient, post_mxdeliv, wait_for_files,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const SLOW_PEERS: usize = 6;
/// Just within the default max_message_size (30 MiB).
const DECLARED: usize = 30 * 1024 * 1024 - 4096;
/// An ordinary large message (a photo or a short video).
const ORDINARY: usize = 10 << 20;
/// How soon the ordinary message must be answered.
const PROMPTLY: Duration = Duration::from_secs(20);
const USER: &str = "fairuser1@[127.0.0.1]";
const OTHER_USER: &str = "fairuser2@[127.0.0.1]";
const PASSWORD: &str = "right-password-1";
const REMOTE: &str = "one@example.org";

fn port(relay: &Relay, key: &str) -> u16 {
    relay
        .ini_value(key)
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("{key}"))
}

/// Starts a transaction of `DECLARED` bytes and sends one byte of it.
async fn stall<S>(client: &mut SmtpClient<S>, from: &str, to: &str) -> Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mail = client
        .command(&format!("MAIL FROM:<{from}> SIZE={DECLARED}"))
        .await?;
    anyhow::ensure!(mail.code == 250, "MAIL: {mail:?}");
    let rcpt = client.command(&format!("RCPT TO:<{to}>")).await?;
    anyhow::ensure!(rcpt.code == 250, "RCPT: {rcpt:?}");
    let data = client.command("DATA").await?;
    anyhow::ensure!(data.code == 354, "DATA: {data:?}");
    client.write_raw(b"X").await
}

/// A POST /mxdeliv announcing `DECLARED` bytes, of which one is sent.
async fn stall_http(port: u16) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let head = format!(
        "POST /mxdeliv HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Mail-From: {REMOTE}\r\n\
         X-Mail-To: {USER}\r\nContent-Length: {DECLARED}\r\n\r\nX"
    );
    stream.write_all(head.as_bytes()).await?;
    Ok(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_peers_do_not_starve_the_incoming_doors() -> Result<()> {
    let dns = DnsServer::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    let key = DkimKey::ed25519("example.org", "relay")?;
    dns.add_txt(&key.record_name(), &[&key.record()]);
    let relay = Relay::start(&RelayOptions {
        ini: vec![
            ("dns_resolver".into(), dns.addr().to_string()),
            ("dns_dnssec_validation".into(), "no".into()),
        ],
        incoming_filter: true,
        ..RelayOptions::default()
    })?;
    assert!(relay.login(USER, PASSWORD).await?);
    let smtp_port = port(&relay, "filtermail_smtp_port_incoming");
    let http_port = port(&relay, "filtermail_http_port_incoming");

    let mut through_postfix = Vec::new();
    let mut at_filter_smtp = Vec::new();
    let mut at_filter_http = Vec::new();
    for _ in 0..SLOW_PEERS {
        let mut client = relay.connect_mx().await?;
        stall(&mut client, REMOTE, USER).await?;
        through_postfix.push(client);
        let mut client = SmtpClient::connect(smtp_port).await?;
        client.ehlo().await?;
        stall(&mut client, REMOTE, USER).await?;
        at_filter_smtp.push(client);
        at_filter_http.push(stall_http(http_port).await?);
    }
    let stalled_at = Instant::now();

    let message = key.sign(&relay_tests::encrypted_message(REMOTE, USER, ORDINARY)?)?;
    let text = String::from_utf8(message.clone())?;
    let mut delivered = 0;
    for door in ["port 25", "filter SMTP", "filter HTTP"] {
        let started = Instant::now();
        let code = match door {
            "port 25" => {
                let mut client = relay.connect_mx().await?;
                client.send(REMOTE, &[USER], &text).await?.code
            }
            "filter SMTP" => {
                let mut client = SmtpClient::connect(smtp_port).await?;
                client.ehlo().await?;
                client.send(REMOTE, &[USER], &text).await?.code
            }
            _ => {
                let answer = post_mxdeliv(
                    http_port,
                    HttpVersion::Http1,
                    Some(REMOTE),
                    &[USER],
                    &message,
                )
                .await?;
                answer
                    .text
                    .get(..3)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0)
            }
        };
        assert_eq!(code, 250, "{door}");
        assert!(
            started.elapsed() < PROMPTLY,
            "{door}: {:?}",
            started.elapsed()
        );
        delivered += 1;
        wait_for_files(&relay.mail().join(USER).join("new"), delivered, PROMPTLY)?;
    }

    // The stalled messages at the filter's own ports are answered 4xx
    // once their body falls below the minimum rate (after 30 s).
    for mut client in at_filter_smtp {
        let reply = client.read_reply().await?;
        assert_eq!(reply.code, 451, "{reply:?}");
        assert!(reply.text.contains("too slowly"), "{reply:?}");
    }
    for mut stream in at_filter_http {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut answer))
            .await
            .context("no answer to a stalled POST")??;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("451 4.4.2"), "{answer}");
    }
    let waited = stalled_at.elapsed();
    assert!(waited < Duration::from_secs(90), "cut off after {waited:?}");
    // Postfix still holds its slow clients; they held nothing of ours.
    drop(through_postfix);
    let log = relay.incoming_filter_log();
    assert!(!log.contains("message budget spent"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stalling_account_does_not_starve_submission() -> Result<()> {
    let relay = Relay::start(&RelayOptions {
        outgoing_filter: true,
        ..RelayOptions::default()
    })?;
    assert!(relay.login(USER, PASSWORD).await?);
    assert!(relay.login(OTHER_USER, PASSWORD).await?);
    let mut stalled = Vec::new();
    for _ in 0..SLOW_PEERS {
        let mut client =
            SmtpClient::connect_tls(relay.submission_port, relay.postfix.cert()).await?;
        client.ehlo().await?;
        let auth = client.auth_plain(USER, PASSWORD).await?;
        assert_eq!(auth.code, 235, "{auth:?}");
        stall(&mut client, USER, OTHER_USER).await?;
        stalled.push(client);
    }
    let message = relay_tests::encrypted_message(OTHER_USER, USER, ORDINARY)?;
    let started = Instant::now();
    let mut client = SmtpClient::connect_tls(relay.submission_port, relay.postfix.cert()).await?;
    client.ehlo().await?;
    let auth = client.auth_plain(OTHER_USER, PASSWORD).await?;
    assert_eq!(auth.code, 235, "{auth:?}");
    let reply = client
        .send(OTHER_USER, &[USER], &String::from_utf8(message)?)
        .await?;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
    wait_for_files(&relay.mail().join(USER).join("new"), 1, PROMPTLY)?;
    drop(stalled);
    let log = relay.outgoing_filter_log();
    assert!(!log.contains("message budget spent"), "{log}");
    Ok(())
}
