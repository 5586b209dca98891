//! chatmail-metadata behind real Dovecot: IMAP METADATA from a client,
//! push notifications for deliveries through the shipped Lua script, to
//! a local HTTPS notification server with a test CA.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chatmail_config::MetricsDaemon;
use relay_tests::{ImapClient, PushServer, Relay, RelayOptions, SmtpClient, TestCa, repo_root};
use tokio::io::AsyncWriteExt as _;

const USER: &str = "pushuser1@[127.0.0.1]";
const OTHER: &str = "someone12@[127.0.0.1]";
const PASSWORD: &str = "right-password-1";
const TOKEN: &str = "fcm-dE8x_token:APA91bHt";
const TURN_CREDENTIALS: &str = "1800000000:turnuser:turnsecret";

struct Setup {
    relay: Relay,
    push: PushServer,
    _files: tempfile::TempDir,
    _turn: tokio::task::JoinHandle<()>,
}

/// A directory the vmail user can read.
fn shared_dir() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// A TURN credential source: one line per connection.
fn turn_server(path: &Path) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))?;
    Ok(tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(format!("{TURN_CREDENTIALS}\n").as_bytes())
                .await;
        }
    }))
}

async fn setup(ini: &[(&str, &str)]) -> Result<Setup> {
    let files = shared_dir()?;
    let ca = TestCa::generate(files.path())?;
    fs::set_permissions(&ca.ca_path, fs::Permissions::from_mode(0o644))?;
    let push = PushServer::start(&ca).await?;
    let turn_socket = files.path().join("turn.socket");
    let turn = turn_server(&turn_socket)?;
    // A copy where vmail can read it (the checkout may be under /root).
    let appversions = files.path().join("appversions.json");
    fs::copy(
        repo_root().join("crates/chatmail-metadata/appversions.json"),
        &appversions,
    )?;
    fs::set_permissions(&appversions, fs::Permissions::from_mode(0o644))?;
    let mut values: Vec<(String, String)> = vec![
        ("notification_url".into(), push.url()),
        (
            "notification_ca_file".into(),
            ca.ca_path.display().to_string(),
        ),
        ("turn_socket_path".into(), turn_socket.display().to_string()),
        ("appversions_file".into(), appversions.display().to_string()),
        ("iroh_relay".into(), "https://iroh.example.org".into()),
    ];
    values.extend(ini.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let relay = Relay::start(&RelayOptions {
        ini: values,
        metadata: true,
        ..RelayOptions::default()
    })?;
    Ok(Setup {
        relay,
        push,
        _files: files,
        _turn: turn,
    })
}

async fn imap(relay: &Relay, user: &str) -> Result<ImapClient> {
    let mut imap = ImapClient::connect(relay.dovecot.imaps_port(), relay.dovecot.cert()).await?;
    assert!(imap.login(user, PASSWORD).await?);
    Ok(imap)
}

async fn set_token(relay: &Relay, token: &str) -> Result<String> {
    let mut imap = imap(relay, USER).await?;
    imap.command(&format!(
        "SETMETADATA INBOX (/private/devicetoken \"{token}\")"
    ))
    .await
}

fn metadata_file(relay: &Relay) -> PathBuf {
    relay.mail().join(USER).join("metadata.json")
}

fn queue_len(relay: &Relay) -> usize {
    fs::read_dir(relay.mail().join("pending_notifications")).map_or(0, Iterator::count)
}

/// Delivers a message to USER through Dovecot's LMTP socket, as Postfix's
/// lmtp client does.
async fn deliver(relay: &Relay, from: &str) -> Result<()> {
    let message = format!("From: <{from}>\r\nTo: <{USER}>\r\nSubject: hi\r\n\r\nhello\r\n");
    let mut lmtp = SmtpClient::connect_unix(&relay.lmtp_socket()).await?;
    lmtp.lhlo().await?;
    let replies = lmtp.send_lmtp(from, &[USER], &message).await?;
    if replies.iter().any(|reply| reply.code != 250) {
        bail!("LMTP delivery refused: {replies:?}");
    }
    lmtp.quit().await;
    Ok(())
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("{what} did not happen within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_tokens_and_server_keys_over_imap() -> Result<()> {
    let s = setup(&[]).await?;
    let status = set_token(&s.relay, TOKEN).await?;
    assert!(status.starts_with("OK"), "{status}");
    let stored = fs::read_to_string(metadata_file(&s.relay))?;
    assert!(stored.contains(TOKEN), "{stored}");

    let mut imap = imap(&s.relay, USER).await?;
    let (lines, status) = imap
        .command_lines("GETMETADATA INBOX /private/devicetoken")
        .await?;
    assert!(status.starts_with("OK"), "{status}");
    assert!(lines.iter().any(|line| line.contains(TOKEN)), "{lines:?}");

    let keys = [
        "irohrelay",
        "maxsmtprecipients",
        "turn",
        "appversions",
        "unknownkey",
    ];
    let wanted: Vec<String> = keys
        .iter()
        .map(|key| format!("/shared/vendor/deltachat/{key}"))
        .collect();
    let (lines, status) = imap
        .command_lines(&format!("GETMETADATA \"\" ({})", wanted.join(" ")))
        .await?;
    assert!(status.starts_with("OK"), "{status}");
    let all = lines.join("\n");
    assert!(all.contains("https://iroh.example.org"), "{all}");
    assert!(
        all.contains("/shared/vendor/deltachat/maxsmtprecipients {4}1000"),
        "{all}"
    );
    assert!(
        all.contains(&format!("127.0.0.1:3478:{TURN_CREDENTIALS}")),
        "{all}"
    );
    // The shipped file, on one line, in its own key order.
    let shipped: serde_json::Value = serde_json::from_slice(&fs::read(
        repo_root().join("crates/chatmail-metadata/appversions.json"),
    )?)?;
    assert!(all.contains(&shipped.to_string()), "{all}");
    assert!(
        all.contains("[{\"clientId\":\"deltachat\",\"sources\""),
        "{all}"
    );
    assert!(
        all.contains("/shared/vendor/deltachat/unknownkey NIL"),
        "unknown keys are not found: {all}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_notifies_within_a_second_but_not_own_copies() -> Result<()> {
    let s = setup(&[]).await?;
    assert!(set_token(&s.relay, TOKEN).await?.starts_with("OK"));
    let sent = Instant::now();
    deliver(&s.relay, OTHER).await?;
    wait_until("a notification", Duration::from_secs(5), || {
        !s.push.received().is_empty()
    })
    .await?;
    let (arrived, token) = s.push.received().remove(0);
    assert_eq!(token, TOKEN);
    let latency = arrived - sent;
    assert!(latency < Duration::from_secs(1), "took {latency:?}");
    wait_until("an empty queue", Duration::from_secs(5), || {
        queue_len(&s.relay) == 0
    })
    .await?;

    // The user's own message (a copy for their other devices): silence.
    deliver(&s.relay, USER).await?;
    deliver(&s.relay, OTHER).await?;
    wait_until("the second notification", Duration::from_secs(5), || {
        s.push.received().len() >= 2
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.push.received().len(), 2);
    let scrape = s.relay.scrape(MetricsDaemon::ChatmailMetadata).await?;
    assert_eq!(
        scrape.value("chatmail_metadata_tokens_registered_total")?,
        1.0
    );
    assert_eq!(
        scrape.value("chatmail_metadata_notifications_queued_total")?,
        2.0
    );
    assert_eq!(
        scrape.value("chatmail_metadata_notifications_sent_total")?,
        2.0
    );
    assert_eq!(scrape.value("chatmail_metadata_queue_length")?, 0.0);
    assert_eq!(scrape.value("chatmail_metadata_push_seconds_count")?, 2.0);
    Ok(())
}

/// A flood of deliveries to one account wakes its devices at most
/// max_user_notifications_per_minute times: past the burst, one push is
/// scheduled for when the allowance returns and covers every message
/// until then, so the last message still gets its push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_per_account_are_paced_and_folded() -> Result<()> {
    // 6 a minute: a burst of one, then one every 10 s.
    let s = setup(&[("max_user_notifications_per_minute", "6")]).await?;
    assert!(set_token(&s.relay, TOKEN).await?.starts_with("OK"));
    let started = Instant::now();
    for _ in 0..5 {
        deliver(&s.relay, OTHER).await?;
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the deliveries must fit in one pacing interval"
    );
    wait_until("the first push", Duration::from_secs(5), || {
        !s.push.received().is_empty()
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.push.received().len(), 1, "the rest wait");
    let scrape = s.relay.scrape(MetricsDaemon::ChatmailMetadata).await?;
    assert_eq!(
        scrape.value("chatmail_metadata_notifications_deferred_total")?,
        1.0
    );
    assert_eq!(
        scrape.value("chatmail_metadata_notifications_folded_total")?,
        3.0
    );

    wait_until("the scheduled push", Duration::from_secs(15), || {
        s.push.received().len() >= 2
    })
    .await?;
    let pushes = s.push.received();
    let gap = pushes[1].0 - pushes[0].0;
    assert!(
        gap >= Duration::from_secs(8),
        "the second push waited for the allowance: {gap:?}"
    );
    wait_until("an empty queue", Duration::from_secs(5), || {
        queue_len(&s.relay) == 0
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.push.received().len(), 2, "five messages, two pushes");
    assert!(pushes.iter().all(|(_, token)| token == TOKEN));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_token_is_removed() -> Result<()> {
    let s = setup(&[]).await?;
    assert!(set_token(&s.relay, TOKEN).await?.starts_with("OK"));
    assert!(set_token(&s.relay, "second-token").await?.starts_with("OK"));
    s.push.script(&[410, 200]);
    deliver(&s.relay, OTHER).await?;
    wait_until(
        "both notifications and an empty queue",
        Duration::from_secs(5),
        || s.push.received().len() == 2 && queue_len(&s.relay) == 0,
    )
    .await?;
    let gone = s.push.received().remove(0).1;
    let stored = fs::read_to_string(metadata_file(&s.relay))?;
    assert!(!stored.contains(&gone), "{stored}");
    assert_eq!(stored.matches("token").count(), 2, "{stored}");
    let scrape = s.relay.scrape(MetricsDaemon::ChatmailMetadata).await?;
    assert_eq!(
        scrape.value("chatmail_metadata_dead_tokens_removed_total")?,
        1.0
    );
    assert_eq!(
        scrape.value("chatmail_metadata_notifications_sent_total")?,
        1.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_growing_delays_until_the_deadline() -> Result<()> {
    // Delays 0.2 s and 1.6 s fit in 2.5 s; the next (12.8 s) does not.
    let s = setup(&[
        ("notification_retry_base", "200ms"),
        ("notification_retry_deadline", "2500ms"),
    ])
    .await?;
    assert!(set_token(&s.relay, TOKEN).await?.starts_with("OK"));
    s.push.set_default_status(500);
    deliver(&s.relay, OTHER).await?;
    wait_until("three attempts", Duration::from_secs(10), || {
        s.push.received().len() >= 3
    })
    .await?;
    wait_until(
        "the notification to be dropped",
        Duration::from_secs(5),
        || queue_len(&s.relay) == 0,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let times: Vec<Instant> = s.push.received().iter().map(|(at, _)| *at).collect();
    assert_eq!(times.len(), 3, "no attempt after the deadline");
    let first_gap = times[1] - times[0];
    let second_gap = times[2] - times[1];
    assert!(
        (Duration::from_millis(150)..Duration::from_millis(700)).contains(&first_gap),
        "{first_gap:?}"
    );
    assert!(
        (Duration::from_millis(1400)..Duration::from_millis(2200)).contains(&second_gap),
        "{second_gap:?}"
    );
    let log = s.relay.metadata_log();
    assert_eq!(
        log.matches("giving up a push notification").count(),
        1,
        "{log}"
    );
    assert!(!log.contains(TOKEN), "tokens are never logged in full");
    let scrape = s.relay.scrape(MetricsDaemon::ChatmailMetadata).await?;
    assert_eq!(
        scrape.value("chatmail_metadata_notifications_retried_total")?,
        2.0
    );
    assert_eq!(
        scrape.value(r#"chatmail_metadata_notifications_dropped_total{reason="deadline"}"#)?,
        1.0
    );
    assert_eq!(
        scrape.value("chatmail_metadata_notifications_sent_total")?,
        0.0
    );
    assert_eq!(scrape.value("chatmail_metadata_queue_length")?, 0.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_notifications_survive_sigkill() -> Result<()> {
    let mut s = setup(&[("notification_retry_base", "1h")]).await?;
    assert!(set_token(&s.relay, TOKEN).await?.starts_with("OK"));
    s.push.script(&[503]);
    deliver(&s.relay, OTHER).await?;
    wait_until("a failed attempt", Duration::from_secs(5), || {
        s.push.received().len() == 1
    })
    .await?;
    assert_eq!(queue_len(&s.relay), 1);
    s.relay.kill_metadata();
    s.relay.start_metadata()?;
    wait_until("the resent notification", Duration::from_secs(5), || {
        s.push.received().len() == 2 && queue_len(&s.relay) == 0
    })
    .await?;
    assert_eq!(s.push.received()[1].1, TOKEN);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_corrupt_files_replaced() -> Result<()> {
    let s = setup(&[]).await?;
    let mut imap = imap(&s.relay, USER).await?;
    let long = "x".repeat(5000);
    let status = imap
        .command(&format!(
            "SETMETADATA INBOX (/private/devicetoken \"{long}\")"
        ))
        .await?;
    assert!(!status.starts_with("OK"), "{status}");
    let status = imap
        .command("SETMETADATA INBOX (/private/devicetoken {9+}\r\nbad\ntoken)")
        .await?;
    assert!(!status.starts_with("OK"), "{status}");
    assert!(!metadata_file(&s.relay).exists());

    fs::write(metadata_file(&s.relay), "{\"devicetoken\": [oops")?;
    let (lines, status) = imap
        .command_lines("GETMETADATA INBOX /private/devicetoken")
        .await?;
    assert!(status.starts_with("OK"), "{status} {lines:?}");
    assert!(!lines.iter().any(|line| line.contains("oops")));
    let rewritten = fs::read_to_string(metadata_file(&s.relay))?;
    assert_eq!(rewritten, r#"{"devicetoken":{}}"#);
    let log = s.relay.metadata_log();
    assert_eq!(log.matches("was not valid JSON").count(), 1, "{log}");
    // And it works again.
    assert!(set_token(&s.relay, TOKEN).await?.starts_with("OK"));
    assert!(fs::read_to_string(metadata_file(&s.relay))?.contains(TOKEN));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_deliveries_trigger_pushes() -> Result<()> {
    let s = setup(&[]).await?;
    assert!(set_token(&s.relay, TOKEN).await?.starts_with("OK"));
    // The client sets the attribute the Lua script sets on delivery.
    let mut imap = imap(&s.relay, USER).await?;
    for attempt in [
        "SETMETADATA INBOX (/private/messagenew \"1\")",
        "SETMETADATA \"\" (/private/messagenew \"1\")",
    ] {
        let answer = imap.command(attempt).await?;
        println!("{attempt}: {answer}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(s.push.received().is_empty(), "no push without a delivery");
    deliver(&s.relay, OTHER).await?;
    wait_until("the delivery's push", Duration::from_secs(5), || {
        s.push.received().len() == 1
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_capped_and_refusals_are_not_retried() -> Result<()> {
    let s = setup(&[("notification_retry_base", "100ms")]).await?;
    for n in 0..25 {
        assert!(
            set_token(&s.relay, &format!("token-{n:02}"))
                .await?
                .starts_with("OK")
        );
    }
    let mut imap = imap(&s.relay, USER).await?;
    let (lines, _) = imap
        .command_lines("GETMETADATA INBOX /private/devicetoken")
        .await?;
    let listed = lines.join(" ");
    assert_eq!(listed.matches("token-").count(), 20, "{listed}");
    assert!(
        !listed.contains("token-00") && listed.contains("token-24"),
        "{listed}"
    );
    // A delivery notifies the 20; a 400 for one of them is final (no
    // retry), a 429 is retried.
    let mut statuses = vec![200; 20];
    statuses[0] = 400;
    statuses[1] = 429;
    s.push.script(&statuses);
    deliver(&s.relay, OTHER).await?;
    wait_until("every notification done", Duration::from_secs(10), || {
        queue_len(&s.relay) == 0
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.push.received().len(), 21, "one retry, of the 429");
    let scrape = s.relay.scrape(MetricsDaemon::ChatmailMetadata).await?;
    assert_eq!(
        scrape.value("chatmail_metadata_tokens_registered_total")?,
        25.0
    );
    assert_eq!(
        scrape.value("chatmail_metadata_notifications_queued_total")?,
        20.0
    );
    assert_eq!(
        scrape.value("chatmail_metadata_notifications_sent_total")?,
        19.0
    );
    assert_eq!(
        scrape.value("chatmail_metadata_notifications_retried_total")?,
        1.0
    );
    assert_eq!(
        scrape.value(r#"chatmail_metadata_notifications_dropped_total{reason="refused"}"#)?,
        1.0
    );
    Ok(())
}
