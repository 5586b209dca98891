//! filtermail-transport against remote hosts that misbehave on purpose:
//! endless replies and headers, web servers that are no relay, gateways
//! and SMTP servers that may have taken the message (hanging up halfway
//! through the answers), servers that close with 421, and a host
//! reachable under two certificate policies.

mod transport_support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use relay_tests::{
    Postfix, PostfixOptions, PushServer, TestCa, free_port, proc_status_kib, raise_fd_limit,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use transport_support::*;

/// Serves every connection on `ip:port` with `serve`, forever.
async fn serve_each<F, Fut>(ip: Ipv4Addr, port: u16, serve: F) -> Result<()>
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind((ip, port)).await?;
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    Ok(())
}

/// A scripted server's plain-text start as `name`: greeting, EHLO
/// offering STARTTLS, and the TLS handshake; `None` if the client went
/// away.
async fn starttls(
    mut tcp: TcpStream,
    acceptor: &TlsAcceptor,
    name: &str,
) -> Option<BufReader<tokio_rustls::server::TlsStream<TcpStream>>> {
    let _ = tcp.write_all(format!("220 {name}\r\n").as_bytes()).await;
    let mut plain = BufReader::new(tcp);
    let mut line = String::new();
    while plain.read_line(&mut line).await.is_ok_and(|read| read > 0) {
        if line.starts_with("STARTTLS") {
            plain.get_mut().write_all(b"220 go\r\n").await.ok()?;
            let tls = acceptor.accept(plain.into_inner()).await.ok()?;
            return Some(BufReader::new(tls));
        }
        let offer = format!("250-{name}\r\n250 STARTTLS\r\n");
        plain.get_mut().write_all(offer.as_bytes()).await.ok()?;
        line.clear();
    }
    None
}

/// Writes `chunk` until the peer goes away.
async fn stream_forever<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S, chunk: &[u8]) {
    while stream.write_all(chunk).await.is_ok() {}
}

/// Reads an HTTP/1.1 request head and its body (Content-Length).
async fn read_request<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        request.extend_from_slice(buffer.get(..read)?);
        let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0);
            if request.len() >= head_end + 4 + length {
                return Some(request);
            }
        }
    }
}

fn http1_only(ca: &TestCa) -> Result<TlsAcceptor> {
    let mut config = ca.server_config()?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_replies_and_headers_cost_bounded_memory() -> Result<()> {
    raise_fd_limit()?;
    let world = world(&["mx-web.evil.test"]).await?;
    let (smtp_port, https_port) = (free_port()?, free_port()?);
    // One host answers HTTPS with endless header lines, the other has no
    // HTTPS; on SMTP both send endless continuation lines or one endless
    // line, by turns.
    let web = Ipv4Addr::LOCALHOST;
    let smtp = Ipv4Addr::new(127, 0, 0, 3);
    let acceptor = http1_only(&world.ca)?;
    serve_each(web, https_port, move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            if read_request(&mut tls).await.is_some() {
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\n").await;
                stream_forever(
                    &mut tls,
                    &b"X-Pad: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n".repeat(64),
                )
                .await;
            }
        }
    })
    .await?;
    // Both hosts stream on SMTP: the web host's too, as deliveries there
    // go to SMTP once its HTTPS failed.
    let turn = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for ip in [web, smtp] {
        let turn = Arc::clone(&turn);
        serve_each(ip, smtp_port, move |mut tcp| {
            let odd = turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2 == 1;
            async move {
                if odd {
                    let _ = tcp.write_all(b"220 ").await;
                    stream_forever(&mut tcp, &[b'x'; 8192]).await;
                } else {
                    stream_forever(&mut tcp, &b"220-endless.test\r\n".repeat(512)).await;
                }
            }
        })
        .await?;
    }
    const DELIVERIES: usize = 1000;
    world.dns.add_ip("mx-web.evil.test.", IpAddr::V4(web));
    world.dns.add_ip("mx-smtp.evil.test.", IpAddr::V4(smtp));
    for n in 0..DELIVERIES {
        let host = if n % 2 == 0 { "mx-web" } else { "mx-smtp" };
        world.dns.add_mx(
            &format!("d{n}.evil.test."),
            10,
            &format!("{host}.evil.test."),
        );
    }
    // All of them at once: no bound per host short of the global one.
    let transport = start_transport(
        &world,
        smtp_port,
        https_port,
        "filtermail_transport_host_limit = 1000\n",
    )?;
    let pid = transport.daemon.pid();
    let before = proc_status_kib(pid, "VmRSS");
    let lmtp_port = transport.lmtp_port;
    let mut clients = Vec::new();
    for n in 0..DELIVERIES {
        clients.push(tokio::spawn(async move {
            let mut client = relay_tests::SmtpClient::connect(lmtp_port).await?;
            client.lhlo().await?;
            let rcpt = format!("a@d{n}.evil.test");
            client.send_lmtp(SENDER, &[&rcpt], MESSAGE).await
        }));
    }
    for client in clients {
        let replies = tokio::time::timeout(Duration::from_secs(120), client).await???;
        // A host that overruns is a failed host: a 4xx, Postfix retries.
        assert_eq!(codes(&replies), [451], "{replies:?}");
        let text = &replies[0].text;
        assert!(
            text.contains("too long")
                || text.contains("too large")
                || text.contains("No clear answer"),
            "the host was reached and overran: {text}"
        );
    }
    let peak = proc_status_kib(pid, "VmHWM");
    println!("transport RSS before {before} KiB, peak {peak} KiB for {DELIVERIES} deliveries");
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB");
    drop(transport);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_smtp_reply_counts_as_https_delivery() -> Result<()> {
    let hosts = ["mx1.remote.test", "mx2.remote.test", "mx3.remote.test"];
    let world = world(&hosts).await?;
    let https = PushServer::start(&world.ca).await?;
    let postfix = postfix_with_cert(&world.ca, "remote.test, two.test, three.test")?;
    let transport = start_transport(&world, postfix.smtp_port(), https.port(), "")?;

    // A web server that says 200 to every POST is no relay: SMTP
    // delivers the message.
    mx(&world, "remote.test", &[(10, hosts[0], LOOPBACK)]);
    https.script_answers(&[(200, "<html>Welcome to nginx!</html>")]);
    let replies = lmtp(&transport, &["good@remote.test"]).await?;
    assert_eq!(codes(&replies), [250], "{replies:?}");
    wait_until("delivery over SMTP", || {
        postfix_delivered(&postfix, "good@remote.test")
    })
    .await?;

    // A gateway error after the message was sent: the relay behind it may
    // have it, so a 4xx and no SMTP at once; the next attempt (Postfix
    // retries later) goes over SMTP.
    mx(&world, "two.test", &[(10, hosts[1], LOOPBACK)]);
    https.script_answers(&[(502, "<html>502 Bad Gateway</html>")]);
    let replies = lmtp(&transport, &["good@two.test"]).await?;
    assert_eq!(codes(&replies), [451], "{replies:?}");
    assert!(replies[0].text.contains("No clear answer"), "{replies:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!postfix_delivered(&postfix, "good@two.test"));
    let requests = https.requests().len();
    let replies = lmtp(&transport, &["good@two.test"]).await?;
    assert_eq!(codes(&replies), [250], "{replies:?}");
    assert_eq!(https.requests().len(), requests, "the retry skipped HTTPS");
    wait_until("the retry over SMTP", || {
        postfix_delivered(&postfix, "good@two.test")
    })
    .await?;
    drop(transport);

    // A host that takes the whole request and hangs up without an answer.
    let hangup = Ipv4Addr::new(127, 0, 0, 3);
    let https_port = free_port()?;
    let acceptor = http1_only(&world.ca)?;
    serve_each(hangup, https_port, move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = read_request(&mut tls).await;
            }
        }
    })
    .await?;
    mx(&world, "three.test", &[(10, hosts[2], IpAddr::V4(hangup))]);
    let transport = start_transport(&world, postfix.smtp_port(), https_port, "")?;
    let replies = lmtp(&transport, &["good@three.test"]).await?;
    assert_eq!(codes(&replies), [451], "{replies:?}");
    assert!(replies[0].text.contains("No clear answer"), "{replies:?}");
    drop(transport);
    Ok(())
}

/// A host that takes the message over HTTPS and never answers (a tarpit)
/// is a failed host: the delivery gets a 4xx after the answer timeout,
/// and the next messages for that destination a 4xx at once, without a
/// connection, until the breaker's probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_answer_that_never_comes_pauses_the_destination() -> Result<()> {
    let hosts = ["mx1.tarpit.test"];
    let world = world(&hosts).await?;
    let postfix = postfix_with_cert(&world.ca, "tarpit.test")?;
    let tarpit = Ipv4Addr::new(127, 0, 0, 3);
    let https_port = free_port()?;
    let acceptor = http1_only(&world.ca)?;
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    serve_each(tarpit, https_port, move |tcp| {
        let acceptor = acceptor.clone();
        let counted = Arc::clone(&counted);
        async move {
            if let Ok(mut tls) = acceptor.accept(tcp).await
                && read_request(&mut tls).await.is_some()
            {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(120)).await;
            }
        }
    })
    .await?;
    mx(&world, "tarpit.test", &[(10, hosts[0], IpAddr::V4(tarpit))]);
    let transport = start_transport(
        &world,
        postfix.smtp_port(),
        https_port,
        "filtermail_transport_https_timeout = 2s\n",
    )?;
    let started = std::time::Instant::now();
    let replies = lmtp(&transport, &["one@tarpit.test"]).await?;
    assert_eq!(codes(&replies), [451], "{replies:?}");
    assert!(replies[0].text.contains("No answer from"), "{replies:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // The next message is not sent to the tarpit at all.
    let started = std::time::Instant::now();
    let replies = lmtp(&transport, &["two@tarpit.test"]).await?;
    assert_eq!(codes(&replies), [451], "{replies:?}");
    assert!(
        replies[0].text.contains("not reachable just now"),
        "{replies:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(!postfix_delivered(&postfix, "one@tarpit.test"));
    drop(transport);
    Ok(())
}

/// A thousand domains may name one host: deliveries in flight are
/// bounded per host address too (filtermail_transport_host_limit), so
/// that a tarpit behind many domains (that accepts connections and never
/// answers) holds a bounded share of the transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_behind_many_domains_gets_a_bounded_share() -> Result<()> {
    let world = world(&["mx.tarpit.test"]).await?;
    let tarpit = Ipv4Addr::new(127, 0, 0, 6);
    let smtp_port = free_port()?;
    // Accepts and never greets.
    serve_each(tarpit, smtp_port, |tcp| async move {
        tokio::time::sleep(Duration::from_secs(300)).await;
        drop(tcp);
    })
    .await?;
    for n in 0..3 {
        mx(
            &world,
            &format!("d{n}.tarpit.test"),
            &[(10, "mx.tarpit.test", IpAddr::V4(tarpit))],
        );
    }
    let https_port = free_port()?;
    let transport = start_transport(
        &world,
        smtp_port,
        https_port,
        "filtermail_transport_host_limit = 2\n",
    )?;
    let stuck: Vec<_> = (0..2)
        .map(|n| {
            let lmtp_port = transport.lmtp_port;
            tokio::spawn(async move {
                let mut client = relay_tests::SmtpClient::connect(lmtp_port).await?;
                client.lhlo().await?;
                client
                    .send_lmtp(SENDER, &[&format!("a@d{n}.tarpit.test")], MESSAGE)
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A third domain of the same host: refused at once, not queued behind.
    let started = std::time::Instant::now();
    let replies = tokio::time::timeout(
        Duration::from_secs(20),
        lmtp(&transport, &["a@d2.tarpit.test"]),
    )
    .await??;
    assert_eq!(codes(&replies), [451], "{replies:?}");
    assert!(replies[0].text.contains("in flight"), "{replies:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for task in &stuck {
        assert!(!task.is_finished(), "the tarpit holds the first two");
    }
    drop(transport);
    for task in stuck {
        task.abort();
    }
    Ok(())
}

/// A remote Postfix for `domains` whose certificate comes from `ca`.
fn postfix_with_cert(ca: &TestCa, domains: &str) -> Result<Postfix> {
    Postfix::start(&PostfixOptions {
        mydestination: domains.into(),
        local_transport: "discard:".into(),
        main_cf: format!(
            "smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n\
             smtpd_tls_security_level = may\n",
            cert = ca.cert_path.display(),
            key = ca.key_path.display(),
        ),
        ..PostfixOptions::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_connections_never_serve_peers_that_need_verification() -> Result<()> {
    let world = world(&[]).await?;
    // A host whose certificate the transport cannot verify: good enough
    // for a test relay (`_lab.test`), never for `strict.test`.
    let stranger_dir = tempfile::tempdir()?;
    let stranger = TestCa::generate_for(stranger_dir.path(), &["mx.shared.test"])?;
    for domain in ["_lab.test", "strict.test", "_lab2.test", "strict2.test"] {
        mx(&world, domain, &[(10, "mx.shared.test", LOOPBACK)]);
    }

    // SMTP: the pooled connection of the test relay is not reused.
    let postfix = postfix_with_cert(&stranger, "_lab.test, strict.test")?;
    let transport = start_transport(&world, postfix.smtp_port(), free_port()?, "")?;
    let replies = lmtp(&transport, &["a@_lab.test"]).await?;
    assert_eq!(codes(&replies), [250], "{replies:?}");
    let replies = lmtp(&transport, &["b@strict.test"]).await?;
    assert_eq!(codes(&replies), [451], "{replies:?}");
    assert!(!postfix_delivered(&postfix, "b@strict.test"));
    drop(transport);

    // HTTPS: neither is the multiplexed HTTP/2 connection.
    let https = PushServer::start(&stranger).await?;
    let transport = start_transport(&world, free_port()?, https.port(), "")?;
    let replies = lmtp(&transport, &["a@_lab2.test"]).await?;
    assert_eq!(codes(&replies), [250], "{replies:?}");
    let replies = lmtp(&transport, &["b@strict2.test"]).await?;
    assert_eq!(codes(&replies), [451], "{replies:?}");
    assert_eq!(https.requests().len(), 1, "only the test relay's message");
    drop(transport);
    Ok(())
}

/// The envelope goes out as one pipelined group ending in DATA. A server
/// that refuses every recipient and still opens DATA gets no message: the
/// transport answers the server's refusal and drops that connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_opened_for_no_recipient_gets_no_message() -> Result<()> {
    let world = world(&["mx.nobody.test"]).await?;
    let (smtp_port, https_port) = (free_port()?, free_port()?);
    let acceptor = TlsAcceptor::from(Arc::new(world.ca.server_config()?));
    // Every line the server read after its 354, across all sessions.
    let after_354 = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&after_354);
    serve_each(Ipv4Addr::LOCALHOST, smtp_port, move |tcp| {
        let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
        async move {
            let Some(mut tls) = starttls(tcp, &acceptor, "nobody.test").await else {
                return;
            };
            let mut line = String::new();
            let mut opened = false;
            while tls.read_line(&mut line).await.is_ok_and(|read| read > 0) {
                if opened {
                    seen.lock().unwrap().push(line.clone());
                }
                let reply: &[u8] = match line.get(..4).unwrap_or_default() {
                    "EHLO" => b"250-nobody.test\r\n250 PIPELINING\r\n",
                    "RCPT" => b"550 5.1.1 No such user\r\n",
                    "DATA" => {
                        opened = true;
                        b"354 send it anyway\r\n"
                    }
                    _ => b"250 2.0.0 Ok\r\n",
                };
                let _ = tls.get_mut().write_all(reply).await;
                line.clear();
            }
        }
    })
    .await?;
    mx(&world, "nobody.test", &[(10, "mx.nobody.test", LOOPBACK)]);
    let transport = start_transport(&world, smtp_port, https_port, "")?;
    for _ in 0..2 {
        let replies = lmtp(&transport, &["a@nobody.test"]).await?;
        assert_eq!(codes(&replies), [550], "{replies:?}");
        assert!(replies[0].text.contains("No such user"), "{replies:?}");
    }
    let after_354 = after_354.lock().unwrap().clone();
    assert!(after_354.is_empty(), "the server got {after_354:?}");
    Ok(())
}

/// A server offering CHUNKING that answers MAIL and RCPT of a pipelined
/// chunk and then hangs up may have taken the message: the recipient gets
/// a 4xx (Postfix keeps the message), and the next MX host gets nothing,
/// which could deliver it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_answered_halfway_is_not_sent_to_the_next_host() -> Result<()> {
    let world = world(&["mx1.halfway.test", "mx2.halfway.test"]).await?;
    let (smtp_port, https_port) = (free_port()?, free_port()?);
    let acceptor = TlsAcceptor::from(Arc::new(world.ca.server_config()?));
    let chunks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&chunks);
    serve_each(Ipv4Addr::LOCALHOST, smtp_port, move |tcp| {
        let (acceptor, counted) = (acceptor.clone(), Arc::clone(&counted));
        async move {
            let Some(mut tls) = starttls(tcp, &acceptor, "mx1.halfway.test").await else {
                return;
            };
            let mut line = String::new();
            while tls.read_line(&mut line).await.is_ok_and(|read| read > 0) {
                let reply: &[u8] = match line.get(..4).unwrap_or_default() {
                    "EHLO" => b"250-mx1.halfway.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n",
                    "BDAT" => {
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // The whole chunk is read, so that hanging up
                        // closes cleanly instead of resetting.
                        let size = line.split(' ').nth(1).and_then(|size| size.parse().ok());
                        let mut chunk = vec![0; size.unwrap_or(0)];
                        let _ = tls.read_exact(&mut chunk).await;
                        // MAIL's and RCPT's answers, then nothing.
                        let _ = tls
                            .get_mut()
                            .write_all(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n")
                            .await;
                        return;
                    }
                    // MAIL and RCPT: answered with the chunk's.
                    "MAIL" | "RCPT" => b"",
                    _ => b"250 2.0.0 Ok\r\n",
                };
                let _ = tls.get_mut().write_all(reply).await;
                line.clear();
            }
        }
    })
    .await?;
    // The second host would take anything.
    let second = Ipv4Addr::new(127, 0, 0, 2);
    let postfix_like = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reached = Arc::clone(&postfix_like);
    serve_each(second, smtp_port, move |_tcp| {
        reached.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async {}
    })
    .await?;
    mx(
        &world,
        "halfway.test",
        &[
            (10, "mx1.halfway.test", LOOPBACK),
            (20, "mx2.halfway.test", IpAddr::V4(second)),
        ],
    );
    let transport = start_transport(&world, smtp_port, https_port, "")?;
    let replies = lmtp(&transport, &["a@halfway.test"]).await?;
    assert_eq!(codes(&replies), [451], "{replies:?}");
    assert!(replies[0].text.contains("Connection lost"), "{replies:?}");
    assert_eq!(chunks.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(postfix_like.load(std::sync::atomic::Ordering::SeqCst), 0);
    Ok(())
}

/// A server that answers a message with 421 is closing: its connection is
/// not kept for the next message, even if it stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_answered_421_is_not_reused() -> Result<()> {
    let world = world(&["mx.closing.test"]).await?;
    let (smtp_port, https_port) = (free_port()?, free_port()?);
    let acceptor = TlsAcceptor::from(Arc::new(world.ca.server_config()?));
    let transactions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&transactions);
    serve_each(Ipv4Addr::LOCALHOST, smtp_port, move |tcp| {
        let (acceptor, counted) = (acceptor.clone(), Arc::clone(&counted));
        async move {
            let Some(mut tls) = starttls(tcp, &acceptor, "mx.closing.test").await else {
                return;
            };
            let mut line = String::new();
            let mut in_data = false;
            while tls.read_line(&mut line).await.is_ok_and(|read| read > 0) {
                let reply: &[u8] = if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        b"421 4.3.0 Shutting down\r\n"
                    } else {
                        b""
                    }
                } else {
                    match line.get(..4).unwrap_or_default() {
                        "EHLO" => b"250-mx.closing.test\r\n250 PIPELINING\r\n",
                        "DATA" => {
                            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            in_data = true;
                            b"354 go ahead\r\n"
                        }
                        _ => b"250 2.0.0 Ok\r\n",
                    }
                };
                let _ = tls.get_mut().write_all(reply).await;
                line.clear();
            }
        }
    })
    .await?;
    mx(&world, "closing.test", &[(10, "mx.closing.test", LOOPBACK)]);
    let transport = start_transport(&world, smtp_port, https_port, "")?;
    for _ in 0..2 {
        let replies = lmtp(&transport, &["a@closing.test"]).await?;
        assert_eq!(codes(&replies), [421], "{replies:?}");
    }
    // One transaction per message: none went to the closing connection
    // first.
    assert_eq!(transactions.load(std::sync::atomic::Ordering::SeqCst), 2);
    Ok(())
}
