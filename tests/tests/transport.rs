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
    TestCa, free_port, proc_status_kib, repo_root,
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
    daemon: Daemon,
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
    Ok(Transport { daemon, lmtp_port })
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

/// The median time of five RCPTs for `rcpt` (other tests share the two
/// cores, so one measurement alone could catch a stall), and the reply.
async fn median_rcpt(
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
    let (reply, took) = median_rcpt(&mut client, "b@slow.test").await?;
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(took < Duration::from_millis(50), "took {took:?}");

    // A destination whose connections fail is paused: 4xx at RCPT.
    client.command("RSET").await?;
    let replies = client.send_lmtp(SENDER, &["a@dead.test"], MESSAGE).await?;
    assert_eq!(codes(&replies), [451], "{replies:?}");
    client.command(&format!("MAIL FROM:<{SENDER}>")).await?;
    let (reply, took) = median_rcpt(&mut client, "b@dead.test").await?;
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(reply.text.contains("not reachable"), "{reply:?}");
    assert!(took < Duration::from_millis(50), "took {took:?}");
    hanging.abort();
    drop(transport);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_in_flight_never_exceed_the_global_bound() -> Result<()> {
    let world = world(&[]).await?;
    let port = free_port()?;
    let connections = black_hole(Ipv4Addr::LOCALHOST, &[port]).await?;
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

/// Listens on `ip` at each of `ports`, accepting connections and never
/// answering; returns the number of connections accepted so far.
async fn black_hole(
    ip: Ipv4Addr,
    ports: &[u16],
) -> Result<std::sync::Arc<std::sync::atomic::AtomicUsize>> {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for port in ports {
        let listener = TcpListener::bind((ip, *port)).await?;
        let counter = std::sync::Arc::clone(&count);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(stream);
            }
        });
    }
    Ok(count)
}

/// smtp-source: `count` messages to `rcpt` through `port`, 20 sessions.
async fn smtp_source(port: u16, rcpt: &str, count: usize) -> Result<()> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_queue_for_a_dead_destination_does_not_hold_up_healthy_mail() -> Result<()> {
    const DEAD: usize = 5000;
    const HEALTHY: usize = 500;
    let world = world(&["mx.healthy.test"]).await?;
    let https = PushServer::start(&world.ca).await?;
    https.count_only();
    let smtp_port = free_port()?;
    let dead_ip = Ipv4Addr::new(127, 0, 0, 3);
    let dead_connections = black_hole(dead_ip, &[https.port(), smtp_port]).await?;
    mx(
        &world,
        "dead.test",
        &[(10, "mx.dead.test", IpAddr::V4(dead_ip))],
    );
    // A second dead destination drops packets instead of answering.
    let drop_ip = Ipv4Addr::new(127, 0, 0, 4);
    let _droppers = (
        packet_dropper(drop_ip, https.port())?,
        packet_dropper(drop_ip, smtp_port)?,
    );
    mx(
        &world,
        "drop.test",
        &[(10, "mx.drop.test", IpAddr::V4(drop_ip))],
    );
    for n in 0..10 {
        mx(
            &world,
            &format!("h{n}.test"),
            &[(10, "mx.healthy.test", LOOPBACK)],
        );
    }
    let transport = start_transport(&world, smtp_port, https.port(), "")?;

    // Postfix with the shipped transport settings, holding mail for
    // lmtp-filtermail until the flush.
    let main_cf = fs::read_to_string(repo_root().join("postfix/main.cf"))?
        .replace("10083", &transport.lmtp_port.to_string());
    let master_cf = fs::read_to_string(repo_root().join("postfix/master.cf"))?;
    let service = master_cf
        .find("lmtp-filtermail unix")
        .and_then(|start| master_cf.get(start..))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(service.contains("1000"), "{service}");
    let postfix = Postfix::start(&PostfixOptions {
        main_cf: format!("{main_cf}\ndefer_transports = lmtp-filtermail\n"),
        master_cf: service,
        ..PostfixOptions::default()
    })?;
    smtp_source(postfix.smtp_port(), "a@dead.test", DEAD / 2).await?;
    smtp_source(postfix.smtp_port(), "a@drop.test", DEAD / 2).await?;
    for n in 0..10 {
        smtp_source(postfix.smtp_port(), &format!("u@h{n}.test"), HEALTHY / 10).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while postfix.queued()? < DEAD + HEALTHY {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} queued",
            postfix.queued()?
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    postfix.reconfigure(&["defer_transports ="])?;
    postfix.flush()?;
    let flushed = Instant::now();
    while https.count() < HEALTHY as u64 {
        anyhow::ensure!(
            flushed.elapsed() < Duration::from_secs(90),
            "healthy mail held up: {} of {HEALTHY} delivered after {:?}",
            https.count(),
            flushed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let healthy_time = flushed.elapsed();
    let connections = dead_connections.load(std::sync::atomic::Ordering::SeqCst);
    let queued = postfix.queued()?;
    let rss = proc_status_kib(transport.daemon.pid(), "VmHWM");
    eprintln!(
        "flush: {HEALTHY} healthy delivered in {healthy_time:?}; {connections} connections \
         reached the dead host; {queued} still queued; transport peak RSS {rss} KiB"
    );
    // The dead destination's messages stay queued (deferred with 4xx).
    assert!(queued >= DEAD, "{queued}");
    let log = fs::read_to_string(postfix.log_path())?;
    assert!(
        log.contains("status=deferred") && log.contains("451"),
        "no 4xx deferrals"
    );
    // At most 30 deliveries (two connections each) reached the dead host,
    // plus a probe or two after the pause.
    assert!(connections <= 2 * 30 + 8, "{connections}");
    assert!(rss < 300 * 1024, "{rss} KiB");
    drop(postfix);
    drop(transport);
    Ok(())
}

/// A host that drops connection attempts, as a firewall does: a listener
/// whose accept queue is full and never drained, so new SYNs go
/// unanswered. Returns the listener and the connections filling it.
fn packet_dropper(ip: Ipv4Addr, port: u16) -> Result<(socket2::Socket, Vec<std::net::TcpStream>)> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_addresses_of_a_host_are_tried_at_once() -> Result<()> {
    let world = world(&["mx.remote.test"]).await?;
    let https = PushServer::start(&world.ca).await?;
    // mx.remote.test has an IPv6 address where nothing listens, one that
    // drops packets, and the working one, in that order.
    let (_dropper, _fill) = packet_dropper(Ipv4Addr::new(127, 0, 0, 4), https.port())?;
    world.dns.add_mx("remote.test.", 10, "mx.remote.test.");
    world.dns.add_ip("mx.remote.test.", "::1".parse()?);
    world
        .dns
        .add_ip("mx.remote.test.", IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
    world.dns.add_ip("mx.remote.test.", LOOPBACK);
    let transport = start_transport(&world, free_port()?, https.port(), "")?;
    let started = Instant::now();
    let replies = lmtp(&transport, &["a@remote.test"]).await?;
    assert_eq!(codes(&replies), [250], "{replies:?}");
    // Far less than the 15 s connect timeout of the dropping address.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(transport);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_certificates_only_for_ip_literals_and_test_domains() -> Result<()> {
    let world = world(&[]).await?;
    // A relay whose certificate comes from a CA the transport does not
    // trust: as good as self-signed.
    let stranger_dir = tempfile::tempdir()?;
    let stranger = TestCa::generate_for(
        stranger_dir.path(),
        &["mx.remote.test", "mx._test.relay", "implicit.test"],
    )?;
    let https = PushServer::start(&stranger).await?;
    mx(&world, "remote.test", &[(10, "mx.remote.test", LOOPBACK)]);
    mx(&world, "_test.relay", &[(10, "mx._test.relay", LOOPBACK)]);
    // A domain without MX records is its own mail host (implicit MX).
    world.dns.add_ip("implicit.test.", LOOPBACK);
    let transport = start_transport(&world, free_port()?, https.port(), "")?;
    let replies = lmtp(&transport, &["a@[127.0.0.1]", "b@_test.relay"]).await?;
    assert_eq!(codes(&replies), [250, 250], "{replies:?}");
    let requests = https.requests();
    assert_eq!(requests.len(), 2, "one request per destination");
    let replies = lmtp(&transport, &["c@remote.test", "d@implicit.test"]).await?;
    assert_eq!(
        codes(&replies),
        [451, 451],
        "untrusted certificates: {replies:?}"
    );
    assert!(
        replies[0].text.contains("TLS") || replies[0].text.contains("certificate"),
        "{replies:?}"
    );
    assert_eq!(https.requests().len(), 2);
    drop(transport);

    // With the CA trusted, the implicit MX host takes the message.
    let trusted = World {
        dir: tempfile::tempdir()?,
        dns: DnsServer::start(LOOPBACK).await?,
        ca: stranger.clone(),
    };
    fs::set_permissions(trusted.dir.path(), fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(stranger_dir.path(), fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(&stranger.ca_path, fs::Permissions::from_mode(0o644))?;
    trusted.dns.add_ip("implicit.test.", LOOPBACK);
    let transport = start_transport(&trusted, free_port()?, https.port(), "")?;
    let replies = lmtp(&transport, &["d@implicit.test"]).await?;
    assert_eq!(codes(&replies), [250], "{replies:?}");
    drop(transport);
    Ok(())
}
