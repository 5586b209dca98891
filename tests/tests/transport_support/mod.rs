//! Helpers shared by the filtermail-transport tests: a DNS server and
//! test CA, the transport daemon, remote relays and misbehaving hosts.
#![allow(dead_code)]

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use relay_tests::{
    DnsServer, Postfix, PostfixOptions, SmtpClient, SmtpReply, TestCa, TransportDaemon,
    TransportSetup,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const SENDER: &str = "sender@[127.0.0.1]";
pub const MESSAGE: &str = "From: <sender@[127.0.0.1]>\r\nTo: <a@remote.test>\r\nSubject: hi\r\n\r\n\
    -----BEGIN PGP MESSAGE-----\r\n\r\nwcBMA\r\n-----END PGP MESSAGE-----\r\n";

pub struct World {
    pub dir: tempfile::TempDir,
    pub dns: DnsServer,
    pub ca: TestCa,
}

/// A DNS server and a test CA whose server certificate names the given
/// hosts, in a directory the vmail user can read.
pub async fn world(names: &[&str]) -> Result<World> {
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let ca = TestCa::generate_for(dir.path(), names)?;
    for path in [&ca.ca_path, &ca.cert_path, &ca.key_path] {
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
    }
    let dns = DnsServer::start(LOOPBACK).await?;
    Ok(World { dir, dns, ca })
}

/// Starts filtermail-transport talking SMTP to `smtp_port` and HTTPS to
/// `https_port` on every remote host.
pub fn start_transport(
    world: &World,
    smtp_port: u16,
    https_port: u16,
    extra: &str,
) -> Result<TransportDaemon> {
    TransportDaemon::start(&TransportSetup {
        dir: world.dir.path(),
        dns: world.dns.addr(),
        ca_file: &world.ca.ca_path,
        smtp_port,
        https_port,
        allow_private: true,
        extra_ini: extra,
        env: &[],
    })
}

pub async fn lmtp(transport: &TransportDaemon, to: &[&str]) -> Result<Vec<SmtpReply>> {
    let mut client = SmtpClient::connect(transport.lmtp_port).await?;
    client.lhlo().await?;
    let replies = client.send_lmtp(SENDER, to, MESSAGE).await?;
    client.quit().await;
    Ok(replies)
}

pub fn codes(replies: &[SmtpReply]) -> Vec<u16> {
    replies.iter().map(|reply| reply.code).collect()
}

/// A real Postfix as the remote relay for `remote.test`, with the test
/// CA's certificate; `bad@remote.test` is refused with 550.
pub fn remote_postfix(world: &World, starttls: bool) -> Result<Postfix> {
    let level = if starttls { "may" } else { "none" };
    Postfix::start(&PostfixOptions {
        mydestination: "remote.test".into(),
        local_transport: "discard:".into(),
        main_cf: format!(
            "smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n\
             smtpd_tls_security_level = {level}\nsmtpd_tls_loglevel = 1\n\
             smtpd_recipient_restrictions = check_recipient_access inline:{{bad@remote.test=REJECT}}, \
             permit_mynetworks, reject_unauth_destination\n",
            cert = world.ca.cert_path.display(),
            key = world.ca.key_path.display(),
        ),
        ..PostfixOptions::default()
    })
}

pub fn postfix_delivered(postfix: &Postfix, rcpt: &str) -> bool {
    fs::read_to_string(postfix.log_path()).is_ok_and(|log| {
        log.lines()
            .any(|line| line.contains(&format!("to=<{rcpt}>")) && line.contains("status=sent"))
    })
}

pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        if Instant::now() > deadline {
            bail!("{what} did not happen");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

pub fn mx(world: &World, domain: &str, hosts: &[(u16, &str, IpAddr)]) {
    for (preference, host, ip) in hosts {
        world
            .dns
            .add_mx(&format!("{domain}."), *preference, &format!("{host}."));
        world.dns.add_ip(&format!("{host}."), *ip);
    }
}

/// An SMTP server that offers no STARTTLS.
pub async fn plain_smtp_server() -> Result<(u16, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let _ = stream
                    .get_mut()
                    .write_all(b"220 plain.test ESMTP\r\n")
                    .await;
                let mut line = String::new();
                while stream.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                    let answer: &[u8] = if line.starts_with("EHLO") {
                        b"250-plain.test\r\n250 PIPELINING\r\n"
                    } else {
                        b"250 OK\r\n"
                    };
                    let _ = stream.get_mut().write_all(answer).await;
                    line.clear();
                }
            });
        }
    });
    Ok((port, task))
}

/// The median time of five RCPTs for `rcpt` (other tests share the two
/// cores, so one measurement alone could catch a stall), and the reply.
pub async fn median_rcpt(
    client: &mut SmtpClient<tokio::net::TcpStream>,
    rcpt: &str,
) -> Result<(SmtpReply, Duration)> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let started = Instant::now();
        let reply = client.command(&format!("RCPT TO:<{rcpt}>")).await?;
        times.push(started.elapsed());
        last = Some(reply);
    }
    times.sort_unstable();
    let reply = last.ok_or_else(|| anyhow::anyhow!("no reply"))?;
    Ok((reply, times.get(2).copied().unwrap_or_default()))
}

/// smtp-source: `count` messages to `rcpt` through `port`, 20 sessions.
pub async fn smtp_source(port: u16, rcpt: &str, count: usize) -> Result<()> {
    let args = [
        "-m".to_owned(),
        count.to_string(),
        "-s".to_owned(),
        "20".to_owned(),
        "-f".to_owned(),
        SENDER.to_owned(),
        "-t".to_owned(),
        rcpt.to_owned(),
        format!("127.0.0.1:{port}"),
    ];
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("smtp-source")
            .args(&args)
            .status()
    })
    .await??;
    anyhow::ensure!(status.success(), "smtp-source failed: {status}");
    Ok(())
}

/// A host that drops connection attempts, as a firewall does: a listener
/// whose accept queue is full and never drained, so new SYNs go
/// unanswered. Returns the listener and the connections filling it.
pub fn packet_dropper(
    ip: Ipv4Addr,
    port: u16,
) -> Result<(socket2::Socket, Vec<std::net::TcpStream>)> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&std::net::SocketAddr::from((ip, port)).into())?;
    socket.listen(0)?;
    let mut fill = Vec::new();
    for _ in 0..4 {
        let addr = std::net::SocketAddr::from((ip, port));
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(stream) => fill.push(stream),
            Err(_) => break,
        }
    }
    Ok((socket, fill))
}
