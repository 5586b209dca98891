//! The head-of-line scenario with a real Postfix: a flushed queue full of
//! mail for dead destinations must not hold up healthy mail. In its own
//! test binary so that its load (1000 Postfix LMTP clients) does not
//! distort the timing assertions of the other transport tests.

mod transport_support;

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::Result;
use chatmail_configure::{Context, Layout, Vmail, render_template};
use relay_tests::{Postfix, PostfixOptions, PushServer, black_hole, free_port, proc_status_kib};
use transport_support::{LOOPBACK, mx, packet_dropper, smtp_source, start_transport, world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_queue_for_a_dead_destination_does_not_hold_up_healthy_mail() -> Result<()> {
    const DEAD: usize = 5000;
    const HEALTHY: usize = 500;
    // Spread so that no healthy destination ever has more than the
    // transport's per-destination bound (30) queued or in flight: above it
    // the transport answers 4xx by design, and when deliveries slow down
    // on a loaded machine, 50 messages for one domain did exceed it.
    const HEALTHY_DOMAINS: usize = 50;
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
    for n in 0..HEALTHY_DOMAINS {
        mx(
            &world,
            &format!("h{n}.test"),
            &[(10, "mx.healthy.test", LOOPBACK)],
        );
    }
    let transport = start_transport(&world, smtp_port, https.port(), "")?;

    // Postfix with the shipped transport settings, holding mail for
    // lmtp-filtermail until the flush.
    let config = chatmail_config::Config::from_ini_str(
        &format!(
            "[params]\nmail_domain = 127.0.0.1\nfiltermail_lmtp_port_transport = {}\n",
            transport.lmtp_port
        ),
        std::path::Path::new("chatmail.ini"),
    )?;
    let layout = Layout::system(Vmail { uid: 0, gid: 0 });
    let context = Context::new(&config, &layout);
    let main_cf = render_template("postfix/main-chatmail.cf", &context)?;
    let master_cf = render_template("postfix/master-chatmail.cf", &context)?;
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
    for n in 0..HEALTHY_DOMAINS {
        let rcpt = format!("u@h{n}.test");
        smtp_source(postfix.smtp_port(), &rcpt, HEALTHY / HEALTHY_DOMAINS).await?;
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
        if flushed.elapsed() > Duration::from_secs(90) {
            let log = fs::read_to_string(postfix.log_path())?;
            anyhow::bail!(
                "healthy mail held up: {} of {HEALTHY} delivered after {:?}\n\
                 Postfix on healthy mail that was not sent:\n{}\n\
                 filtermail-transport's log on other destinations ends:\n{}",
                https.count(),
                flushed.elapsed(),
                unsent_healthy(&log).join("\n"),
                last_lines(&healthy_lines(&transport.daemon.log()), 40),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let healthy_time = flushed.elapsed();
    let connections = dead_connections.load(std::sync::atomic::Ordering::SeqCst);
    // The queue listing can miss messages that qmgr is moving between
    // queues at that instant: every dead-destination message must show up
    // in it within a few seconds.
    let listed_by = Instant::now() + Duration::from_secs(10);
    let mut queued = postfix.queued()?;
    while queued < DEAD && Instant::now() < listed_by {
        tokio::time::sleep(Duration::from_millis(200)).await;
        queued = postfix.queued()?;
    }
    let rss = proc_status_kib(transport.daemon.pid(), "VmHWM");
    eprintln!(
        "flush: {HEALTHY} healthy delivered in {healthy_time:?}; {connections} connections \
         reached the dead host; {queued} still queued; transport peak RSS {rss} KiB"
    );
    // The dead destinations' messages stay queued (deferred with 4xx):
    // none bounced, none delivered.
    let log = fs::read_to_string(postfix.log_path())?;
    assert!(!log.contains("status=bounced"), "a message bounced");
    let dead_sent = log
        .lines()
        .filter(|line| line.contains("status=sent"))
        .filter(|line| line.contains("@dead.test>") || line.contains("@drop.test>"))
        .count();
    assert_eq!(dead_sent, 0);
    assert!(queued >= DEAD, "{queued}");
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

/// Postfix's log lines, after the flush, about healthy messages that were
/// never sent.
fn unsent_healthy(log: &str) -> Vec<&str> {
    let healthy = |line: &&str| line.contains("to=<u@h");
    let sent: std::collections::HashSet<&str> = log
        .lines()
        .filter(healthy)
        .filter(|line| line.contains("status=sent"))
        .map(queue_id)
        .collect();
    log.lines()
        .filter(healthy)
        .filter(|line| !line.contains("(deferred transport)"))
        .filter(|line| !sent.contains(queue_id(line)))
        .take(20)
        .collect()
}

/// The queue ID in a Postfix log line ("... lmtp[123]: 9699FADC3B8: to=<...").
fn queue_id(line: &str) -> &str {
    line.split(": ").nth(1).unwrap_or_default()
}

/// The transport's log without the lines about the dead destinations.
fn healthy_lines(log: &str) -> String {
    log.lines()
        .filter(|line| !line.contains("dead.test") && !line.contains("drop.test"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn last_lines(text: &str, count: usize) -> String {
    let skip = text.lines().count().saturating_sub(count);
    text.lines().skip(skip).collect::<Vec<_>>().join("\n")
}
