//! filtermail-transport over LMTP, delivering to remote relays found
//! through a DNS server on loopback: an HTTPS /mxdeliv server and a real
//! Postfix with certificates from a test CA, and misbehaving servers.

mod transport_support;

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use anyhow::Result;
use relay_tests::{
    DnsMode, DnsServer, Postfix, PushServer, Scrape, SmtpClient, TestCa, TransportDaemon,
    black_hole, free_port,
};
use transport_support::*;

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

    // Each recipient's answer is counted under HTTPS.
    let scrape = Scrape::fetch(transport.metrics_port).await?;
    assert_eq!(scrape.value(&deliveries("https", "delivered"))?, 2.0);
    assert_eq!(scrape.value(&deliveries("https", "bounced"))?, 1.0);
    assert_eq!(scrape.sum("filtermail_transport_deliveries_total"), 3.0);
    assert_eq!(
        scrape.value(r#"filtermail_transport_delivery_seconds_count{protocol="https"}"#)?,
        2.0,
        "two deliveries to one destination"
    );
    assert_eq!(
        scrape.value("filtermail_transport_delivery_slots_in_use")?,
        0.0
    );
    drop(transport);
    Ok(())
}

/// `remote.test` reachable by SMTP only: a real Postfix, and an /mxdeliv
/// that answers 404.
struct SmtpOnly {
    _world: World,
    https: PushServer,
    postfix: Postfix,
    transport: TransportDaemon,
}

async fn smtp_only() -> Result<SmtpOnly> {
    let world = world(&["mx.remote.test"]).await?;
    let https = PushServer::start(&world.ca).await?;
    https.set_default_status(404);
    let postfix = remote_postfix(&world, true)?;
    mx(&world, "remote.test", &[(10, "mx.remote.test", LOOPBACK)]);
    let transport = start_transport(&world, postfix.smtp_port(), https.port(), "")?;
    Ok(SmtpOnly {
        _world: world,
        https,
        postfix,
        transport,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mxdeliv_smtp_with_starttls_is_used_with_per_recipient_replies() -> Result<()> {
    let SmtpOnly {
        https,
        postfix,
        transport,
        _world,
    } = smtp_only().await?;
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

    // The answers came over SMTP, and are counted so.
    let scrape = Scrape::fetch(transport.metrics_port).await?;
    assert_eq!(scrape.value(&deliveries("smtp", "delivered"))?, 2.0);
    assert_eq!(scrape.value(&deliveries("smtp", "bounced"))?, 1.0);
    assert_eq!(scrape.sum("filtermail_transport_deliveries_total"), 3.0);
    drop(transport);
    Ok(())
}

/// Towards a Postfix, which offers CHUNKING, a small message goes with its
/// envelope as one BDAT chunk, a large one by DATA after the envelope's
/// answers. A chunk for no accepted recipient is refused and the
/// connection carries the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sends_small_messages_as_one_chunk_and_large_ones_by_data() -> Result<()> {
    // Every part lives to the end of the test (`..` would drop the rest).
    let SmtpOnly {
        _world,
        https: _https,
        postfix,
        transport,
    } = smtp_only().await?;
    let replies = lmtp(&transport, &["bad@remote.test"]).await?;
    assert_eq!(codes(&replies), [554], "{replies:?}");
    let replies = lmtp(&transport, &["good@remote.test", "bad@remote.test"]).await?;
    assert_eq!(codes(&replies), [250, 554], "{replies:?}");
    let large = format!(
        "{MESSAGE}{}",
        "wcBMA padding of a large message\r\n".repeat(4_000)
    );
    let mut client = SmtpClient::connect(transport.lmtp_port).await?;
    client.lhlo().await?;
    let replies = client
        .send_lmtp(SENDER, &["large@remote.test"], &large)
        .await?;
    client.quit().await;
    assert_eq!(codes(&replies), [250], "{replies:?}");
    wait_until("delivery of the large message", || {
        postfix_delivered(&postfix, "large@remote.test")
    })
    .await?;
    assert!(postfix_delivered(&postfix, "good@remote.test"));
    drop(transport);

    // Postfix counts a session's commands when it ends: all three
    // messages on one connection, two as BDAT (the one for nobody
    // refused), the large one by DATA.
    let session = postfix.first_session_counters().await?;
    assert!(
        session.contains(" mail=3 ")
            && session.contains(" bdat=1/2 ")
            && session.contains(" data=1 "),
        "{session}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_dns_answers_are_kept_as_long_as_the_zone_says() -> Result<()> {
    let world = world(&["mx.remote.test"]).await?;
    let https = PushServer::start(&world.ca).await?;
    // mx.remote.test has no IPv6 address; unknown.test does not exist.
    mx(&world, "remote.test", &[(10, "mx.remote.test", LOOPBACK)]);
    let transport = start_transport(&world, free_port()?, https.port(), "")?;
    let recipients = ["a@remote.test", "b@unknown.test"];
    let replies = lmtp(&transport, &recipients).await?;
    assert_eq!(codes(&replies), [250, 550], "{replies:?}");
    let queries = world.dns.queries();
    let replies = lmtp(&transport, &recipients).await?;
    assert_eq!(codes(&replies), [250, 550], "{replies:?}");
    assert_eq!(world.dns.queries(), queries, "asked again within the TTL");
    drop(transport);

    // A zone that allows one second is asked again after it.
    world.dns.set_negative_ttl(1);
    let transport = start_transport(&world, free_port()?, https.port(), "")?;
    lmtp(&transport, &recipients).await?;
    let queries = world.dns.queries();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let replies = lmtp(&transport, &recipients).await?;
    assert_eq!(codes(&replies), [250, 550], "{replies:?}");
    assert_eq!(
        world.dns.queries(),
        queries + 2,
        "the AAAA of mx.remote.test and the MX of unknown.test"
    );
    drop(transport);
    Ok(())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_queued_and_dead_destinations_get_a_fast_4xx() -> Result<()> {
    let world = world(&[]).await?;
    let silent_port = free_port()?;
    let silent_connections = black_hole(Ipv4Addr::LOCALHOST, &[silent_port]).await?;
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
    wait_until("the first delivery to reach the silent server", || {
        silent_connections.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await?;
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

    // Five RCPTs each, answered at once; the one delivery attempt to the
    // dead destination found no server, and paused it.
    let scrape = Scrape::fetch(transport.metrics_port).await?;
    assert_eq!(
        scrape.value(r#"filtermail_transport_fast_tempfails_total{reason="destination_full"}"#)?,
        5.0
    );
    assert_eq!(
        scrape
            .value(r#"filtermail_transport_fast_tempfails_total{reason="destination_paused"}"#)?,
        5.0
    );
    assert_eq!(scrape.value(&deliveries("none", "deferred"))?, 1.0);
    assert_eq!(
        scrape.value("filtermail_transport_destinations_paused")?,
        1.0
    );
    assert_eq!(
        scrape.value("filtermail_transport_delivery_slots_in_use")?,
        1.0,
        "the hanging delivery"
    );
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
    let connected = || connections.load(std::sync::atomic::Ordering::SeqCst);
    wait_until("two deliveries to start", || connected() >= 2).await?;
    // The other four would have connected by now if the bound let them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(connected(), 2);
    let scrape = Scrape::fetch(transport.metrics_port).await?;
    assert_eq!(
        scrape.value("filtermail_transport_delivery_slots_in_use")?,
        2.0
    );
    for client in clients {
        client.abort();
    }
    drop(transport);
    Ok(())
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

/// The series of recipients answered over `protocol` with `outcome`.
fn deliveries(protocol: &str, outcome: &str) -> String {
    format!(r#"filtermail_transport_deliveries_total{{protocol="{protocol}",outcome="{outcome}"}}"#)
}
