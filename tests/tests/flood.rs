//! filtermail-incoming under a flood of large messages through both
//! doors at once: its memory stays within the message budget plus a
//! small constant, and every message is delivered or refused for now
//! (4xx), never lost.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use relay_tests::{
    HttpVersion, Relay, RelayOptions, SmtpClient, http_request, proc_status_kib, raise_fd_limit,
};

const SENDER: &str = "someone@[127.0.0.2]";
/// An account from before enforceE2EEincoming: cleartext is delivered,
/// so the messages need no (slow to build) encryption.
const RECIPIENT: &str = "bigmail12@[127.0.0.1]";
const PASSWORD: &str = "right-password-1";
const MESSAGE_BYTES: usize = 29 << 20;
const EACH_DOOR: usize = 40;
const BUDGET: u64 = 128 << 20;

fn big_message() -> String {
    let line = format!("{}\r\n", "x".repeat(76));
    let mut message = format!("From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: big\r\n\r\n");
    while message.len() + line.len() < MESSAGE_BYTES {
        message.push_str(&line);
    }
    message
}

/// Samples the filter's resident memory until `stop`.
fn sample_rss(
    pid: u32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(proc_status_kib(pid, "VmRSS"));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_messages_stays_within_the_budget() -> Result<()> {
    raise_fd_limit()?;
    let relay = Relay::start(&RelayOptions {
        ini: vec![("filtermail_message_memory".into(), BUDGET.to_string())],
        incoming_filter: true,
        ..RelayOptions::default()
    })?;
    assert!(relay.login(RECIPIENT, PASSWORD).await?);
    fs::remove_file(relay.mail().join(RECIPIENT).join("enforceE2EEincoming"))?;
    let pid = relay.incoming_filter_pid().expect("filter runs");
    let idle = proc_status_kib(pid, "VmRSS");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_rss(pid, std::sync::Arc::clone(&stop));

    let message = Bytes::from(big_message());
    let http_port: u16 = relay
        .ini_value("filtermail_http_port_incoming")
        .and_then(|port| port.parse().ok())
        .expect("HTTP port");
    // The filter's own SMTP port: Postfix's port 25 only streams to it,
    // and TLS there would make the test encrypt 1.2 GB in a debug build.
    let smtp_port: u16 = relay
        .ini_value("filtermail_smtp_port_incoming")
        .and_then(|port| port.parse().ok())
        .expect("SMTP port");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..EACH_DOOR {
        let body = message.clone();
        tasks.push(tokio::spawn(async move {
            let request = Request::post(format!("http://127.0.0.1:{http_port}/mxdeliv"))
                .header("X-Mail-From", SENDER)
                .header("X-Mail-To", RECIPIENT)
                .body(Full::new(body))?;
            let answer = http_request(http_port, HttpVersion::Http1, request).await?;
            anyhow::Ok((format!("HTTP {}", answer.status), answer.text))
        }));
        let text = String::from_utf8(message.to_vec())?;
        tasks.push(tokio::spawn(async move {
            let mut client = SmtpClient::connect(smtp_port).await?;
            client.ehlo().await?;
            let reply = client.send(SENDER, &[RECIPIENT], &text).await?;
            client.quit().await;
            anyhow::Ok(("SMTP".to_owned(), reply.text))
        }));
    }
    let (mut delivered, mut deferred) = (0, 0);
    for task in tasks {
        let (door, text) = task.await??;
        match text.get(..1) {
            Some("2") => delivered += 1,
            Some("4") => deferred += 1,
            _ => panic!("{door}: neither delivered nor deferred: {text}"),
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");
    let hwm = proc_status_kib(pid, "VmHWM");
    println!(
        "{delivered} delivered, {deferred} deferred in {elapsed:?}; filter RSS idle {idle} KiB, \
         peak sampled {peak} KiB, high-water mark {hwm} KiB"
    );
    assert_eq!(delivered + deferred, 2 * EACH_DOOR);
    assert!(delivered > 0, "the budget lets messages through");
    // What was accepted arrived, each once.
    let inbox = relay.mail().join(RECIPIENT).join("new");
    relay_tests::wait_for_files(&inbox, delivered, Duration::from_secs(60))?;
    assert_eq!(fs::read_dir(&inbox)?.count(), delivered);
    let budget_kib = BUDGET / 1024;
    assert!(
        hwm < budget_kib + 64 * 1024,
        "high-water mark {hwm} KiB over the budget {budget_kib} KiB plus 64 MiB"
    );
    Ok(())
}
