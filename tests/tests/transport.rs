//! filtermail-transport over LMTP, delivering to remote relays found
//! through a DNS server on loopback: an HTTPS /mxdeliv server and a real
//! Postfix with certificates from a test CA, and misbehaving servers.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use relay_tests::{
    Daemon, DnsMode, DnsServer, Postfix, PostfixOptions, PushServer, Ready, SmtpClient, SmtpReply,
    TestCa, free_port,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const SENDER: &str = "sender@[127.0.0.1]";
const MESSAGE: &str = "From: <sender@[127.0.0.1]>\r\nTo: <a@remote.test>\r\nSubject: hi\r\n\r\n\
    -----BEGIN PGP MESSAGE-----\r\n\r\nwcBMA\r\n-----END PGP MESSAGE-----\r\n";

struct World {
    dir: tempfile::TempDir,
    dns: DnsServer,
    ca: TestCa,
}

/// A DNS server and a test CA whose server certificate names the given
/// hosts, in a directory the vmail user can read.
async fn world(names: &[&str]) -> Result<World> {
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let ca = TestCa::generate_for(dir.path(), names)?;
    for path in [&ca.ca_path, &ca.cert_path, &ca.key_path] {
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
    }
    let dns = DnsServer::start(LOOPBACK).await?;
    Ok(World { dir, dns, ca })
}

struct Transport {
    _daemon: Daemon,
    lmtp_port: u16,
}

/// Starts filtermail-transport talking SMTP to `smtp_port` and HTTPS to
/// `https_port` on every remote host.
fn start_transport(
    world: &World,
    smtp_port: u16,
    https_port: u16,
    extra: &str,
) -> Result<Transport> {
    let lmtp_port = free_port()?;
    let dir = world.dir.path().join(format!("transport-{lmtp_port}"));
    fs::create_dir(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    let ini = dir.join("chatmail.ini");
    fs::write(
        &ini,
        format!(
            "[params]\nmail_domain = 127.0.0.1\nmailboxes_dir = {mail}\n\
             filtermail_lmtp_port_transport = {lmtp_port}\n\
             filtermail_transport_smtp_port = {smtp_port}\n\
             filtermail_transport_https_port = {https_port}\n\
             filtermail_transport_ca_file = {ca}\n\
             dns_resolver = {dns}\ndns_dnssec_validation = no\n{extra}",
            mail = dir.join("mail").display(),
            ca = world.ca.ca_path.display(),
            dns = world.dns.addr(),
        ),
    )?;
    let daemon = Daemon::start(
        "filtermail-transport",
        &[ini.as_os_str()],
        Ready::Port(lmtp_port),
        &dir,
    )?;
    Ok(Transport {
        _daemon: daemon,
        lmtp_port,
    })
}

async fn lmtp(transport: &Transport, to: &[&str]) -> Result<Vec<SmtpReply>> {
    let mut client = SmtpClient::connect(transport.lmtp_port).await?;
    client.lhlo().await?;
    let replies = client.send_lmtp(SENDER, to, MESSAGE).await?;
    client.quit().await;
    Ok(replies)
}

fn codes(replies: &[SmtpReply]) -> Vec<u16> {
    replies.iter().map(|reply| reply.code).collect()
}

/// A real Postfix as the remote relay for `remote.test`, with the test
/// CA's certificate; `bad@remote.test` is refused with 550.
fn remote_postfix(world: &World, starttls: bool) -> Result<Postfix> {
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

fn postfix_delivered(postfix: &Postfix, rcpt: &str) -> bool {
    fs::read_to_string(postfix.log_path()).is_ok_and(|log| {
        log.lines()
            .any(|line| line.contains(&format!("to=<{rcpt}>")) && line.contains("status=sent"))
    })
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        if Instant::now() > deadline {
            bail!("{what} did not happen");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn mx(world: &World, domain: &str, hosts: &[(u16, &str, IpAddr)]) {
    for (preference, host, ip) in hosts {
        world
            .dns
            .add_mx(&format!("{domain}."), *preference, &format!("{host}."));
        world.dns.add_ip(&format!("{host}."), *ip);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_delivery_carries_the_envelope_and_message() -> Result<()> {
    let world = world(&["mx.remote.test"]).await?;
    let https = PushServer::start(&world.ca).await?;
    mx(&world, "remote.test", &[(10, "mx.remote.test", LOOPBACK)]);
    let transport = start_transport(&world, free_port()?, https.port(), "")?;
    let replies = lmtp(&transport, &["a@remote.test", "b@remote.test"]).await?;
    assert_eq!(codes(&replies), [250, 250], "{replies:?}");
    let requests = https.requests();
    assert_eq!(requests.len(), 1, "one request for both recipients");
    let request = &requests[0];
    assert_eq!(request.path, "/mxdeliv");
    assert_eq!(request.mail_from.as_deref(), Some(SENDER));
    assert_eq!(request.mail_to, ["a@remote.test", "b@remote.test"]);
    assert!(String::from_utf8_lossy(&request.body).contains("BEGIN PGP MESSAGE"));

    // The relay's own refusal is passed back as it is.
    https.script_answers(&[(400, "523 Encryption Needed: Invalid Unencrypted Mail")]);
    let replies = lmtp(&transport, &["a@remote.test"]).await?;
    assert_eq!(codes(&replies), [523], "{replies:?}");
    assert!(replies[0].text.contains("Encryption Needed"), "{replies:?}");
    drop(transport);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mxdeliv_smtp_with_starttls_is_used_with_per_recipient_replies() -> Result<()> {
    let world = world(&["mx.remote.test"]).await?;
    let https = PushServer::start(&world.ca).await?;
    https.set_default_status(404);
    let postfix = remote_postfix(&world, true)?;
    mx(&world, "remote.test", &[(10, "mx.remote.test", LOOPBACK)]);
    let transport = start_transport(&world, postfix.smtp_port(), https.port(), "")?;
    let replies = lmtp(&transport, &["good@remote.test", "bad@remote.test"]).await?;
    assert_eq!(codes(&replies), [250, 554], "{replies:?}");
    wait_until("delivery to good@", || {
        postfix_delivered(&postfix, "good@remote.test")
    })
    .await?;
    let log = fs::read_to_string(postfix.log_path())?;
    assert!(
        log.contains("TLS connection established from"),
        "STARTTLS was used: {log}"
    );

    // HTTPS failed there and SMTP worked: HTTPS is skipped for a while.
    let before = https.requests().len();
    let replies = lmtp(&transport, &["good@remote.test"]).await?;
    assert_eq!(codes(&replies), [250], "{replies:?}");
    assert_eq!(https.requests().len(), before);
    drop(transport);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_failover_happens_on_connection_failure_only() -> Result<()> {
    let world = world(&["mx.remote.test"]).await?;
    let https = PushServer::start(&world.ca).await?;
    // Preference 5 is a dead address, 10 the relay.
    let dead = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
    mx(
        &world,
        "remote.test",
        &[
            (10, "mx.remote.test", LOOPBACK),
            (5, "dead.remote.test", dead),
        ],
    );
    let transport = start_transport(&world, free_port()?, https.port(), "")?;
    let replies = lmtp(&transport, &["a@remote.test"]).await?;
    assert_eq!(codes(&replies), [250], "{replies:?}");
    assert_eq!(https.requests().len(), 1);

    // A refusal by the first host is final: the second is not asked.
    mx(
        &world,
        "other.test",
        &[
            (5, "mx.remote.test", LOOPBACK),
            (10, "mx.remote.test", LOOPBACK),
        ],
    );
    https.script_answers(&[(400, "550 5.1.1 No such user")]);
    let replies = lmtp(&transport, &["nobody@other.test"]).await?;
    assert_eq!(codes(&replies), [550], "{replies:?}");
    assert_eq!(https.requests().len(), 2);
    drop(transport);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_decide_permanent_and_temporary_failures() -> Result<()> {
    let world = world(&[]).await?;
    world.dns.add_mx("nullmx.test.", 0, ".");
    let transport = start_transport(&world, free_port()?, free_port()?, "")?;
    let replies = lmtp(&transport, &["a@nullmx.test", "b@unknown.test"]).await?;
    assert_eq!(codes(&replies), [556, 550], "{replies:?}");

    world.dns.set_mode(DnsMode::Silent);
    let replies = lmtp(&transport, &["a@silent.test"]).await?;
    assert_eq!(codes(&replies), [451], "{replies:?}");
    drop(transport);
    Ok(())
}

/// An SMTP server that offers no STARTTLS.
async fn plain_smtp_server() -> Result<(u16, tokio::task::JoinHandle<()>)> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_without_starttls_or_with_a_wrong_certificate_get_nothing() -> Result<()> {
    let world = world(&["mx.remote.test"]).await?;
    let (plain_port, _plain) = plain_smtp_server().await?;
    mx(&world, "plain.test", &[(10, "mx.plain.test", LOOPBACK)]);
    let transport = start_transport(&world, plain_port, free_port()?, "")?;
    let replies = lmtp(&transport, &["a@plain.test"]).await?;
    assert_eq!(codes(&replies), [451], "{replies:?}");
    assert!(replies[0].text.contains("STARTTLS"), "{replies:?}");
    drop(transport);

    // The certificate names mx.remote.test, not mx.wrong.test.
    let postfix = remote_postfix(&world, true)?;
    mx(&world, "wrong.test", &[(10, "mx.wrong.test", LOOPBACK)]);
    let transport = start_transport(&world, postfix.smtp_port(), free_port()?, "")?;
    let replies = lmtp(&transport, &["a@wrong.test"]).await?;
    assert_eq!(codes(&replies), [451], "{replies:?}");
    assert!(replies[0].text.contains("TLS"), "{replies:?}");
    drop(transport);
    Ok(())
}

/// Accepts connections and never says anything.
async fn silent_server() -> Result<(u16, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    Ok((port, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_queued_and_dead_destinations_get_a_fast_4xx() -> Result<()> {
    let world = world(&[]).await?;
    let (silent_port, _silent) = silent_server().await?;
    mx(&world, "slow.test", &[(10, "mx.slow.test", LOOPBACK)]);
    mx(
        &world,
        "dead.test",
        &[(10, "mx.dead.test", IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)))],
    );
    let transport = start_transport(
        &world,
        silent_port,
        silent_port,
        "filtermail_transport_destination_limit = 1\n",
    )?;
    // One message for slow.test hangs on the silent server...
    let port = transport.lmtp_port;
    let hanging = tokio::spawn(async move {
        let mut client = SmtpClient::connect(port).await?;
        client.lhlo().await?;
        client.send_lmtp(SENDER, &["a@slow.test"], MESSAGE).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ...so the next one is refused at RCPT at once.
    let mut client = SmtpClient::connect(transport.lmtp_port).await?;
    client.lhlo().await?;
    client.command(&format!("MAIL FROM:<{SENDER}>")).await?;
    let started = Instant::now();
    let reply = client.command("RCPT TO:<b@slow.test>").await?;
    let took = started.elapsed();
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(took < Duration::from_millis(50), "took {took:?}");

    // A destination whose connections fail is paused: 4xx at RCPT.
    client.command("RSET").await?;
    let replies = client.send_lmtp(SENDER, &["a@dead.test"], MESSAGE).await?;
    assert_eq!(codes(&replies), [451], "{replies:?}");
    client.command(&format!("MAIL FROM:<{SENDER}>")).await?;
    let started = Instant::now();
    let reply = client.command("RCPT TO:<b@dead.test>").await?;
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(reply.text.contains("not reachable"), "{reply:?}");
    assert!(started.elapsed() < Duration::from_millis(50));
    hanging.abort();
    drop(transport);
    Ok(())
}

/// Accepts connections, counts them, and never says anything.
async fn counting_silent_server() -> Result<(u16, std::sync::Arc<std::sync::atomic::AtomicUsize>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&count);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    Ok((port, count))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_in_flight_never_exceed_the_global_bound() -> Result<()> {
    let world = world(&[]).await?;
    let (port, connections) = counting_silent_server().await?;
    let destinations: Vec<String> = (0..6).map(|n| format!("d{n}.test")).collect();
    for domain in &destinations {
        mx(&world, domain, &[(10, &format!("mx.{domain}"), LOOPBACK)]);
    }
    let transport = start_transport(
        &world,
        port,
        port,
        "filtermail_transport_max_deliveries = 2\n",
    )?;
    let mut clients = Vec::new();
    for domain in &destinations {
        let lmtp_port = transport.lmtp_port;
        let rcpt = format!("a@{domain}");
        clients.push(tokio::spawn(async move {
            let mut client = SmtpClient::connect(lmtp_port).await?;
            client.lhlo().await?;
            client.send_lmtp(SENDER, &[&rcpt], MESSAGE).await
        }));
    }
    // Six messages to six healthy-looking destinations, two slots: only
    // two deliveries ever reach the (silent) servers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    for client in clients {
        client.abort();
    }
    drop(transport);
    Ok(())
}
