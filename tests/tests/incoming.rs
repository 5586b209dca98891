//! filtermail-incoming behind real Postfix: a remote server's SMTP to the
//! shipped port-25 service, or a remote relay's HTTP POST /mxdeliv, then
//! reinjection into Postfix and delivery by Dovecot, with DKIM keys served
//! by a DNS server on loopback.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use chatmail_config::MetricsDaemon;
use http_body_util::Full;
use relay_tests::{
    DkimKey, DnsMode, DnsServer, HttpVersion, ImapClient, Relay, RelayOptions, SmtpReply,
    VmailUser, http_request, post_mxdeliv, proc_status_kib, test_mail, wait_for_files,
};

const NEW_USER: &str = "newuser12@[127.0.0.1]";
const OLD_USER: &str = "olduser12@[127.0.0.1]";
const PASSWORD: &str = "right-password-1";
const REMOTE: &str = "one@example.org";

/// How a message reaches the relay.
#[derive(Debug, Clone, Copy)]
enum Door {
    Smtp,
    Http(HttpVersion),
}

const DOORS: [Door; 3] = [
    Door::Smtp,
    Door::Http(HttpVersion::Http1),
    Door::Http(HttpVersion::Http2),
];

/// The outcome of one delivery attempt, in SMTP terms.
#[derive(Debug)]
struct Outcome {
    code: u16,
    text: String,
    http_status: Option<u16>,
}

struct Setup {
    relay: Relay,
    dns: DnsServer,
    key: DkimKey,
}

async fn setup() -> Result<Setup> {
    setup_with(&[]).await
}

async fn setup_with(ini: &[(&str, &str)]) -> Result<Setup> {
    let dns = DnsServer::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    let key = DkimKey::ed25519("example.org", "relay")?;
    dns.add_txt(&key.record_name(), &[&key.record()]);
    let mut values: Vec<(String, String)> = vec![
        ("dns_resolver".into(), dns.addr().to_string()),
        // The test zone is unsigned and has no signed parent.
        ("dns_dnssec_validation".into(), "no".into()),
    ];
    values.extend(ini.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let relay = Relay::start(&RelayOptions {
        ini: values,
        incoming_filter: true,
        ..RelayOptions::default()
    })?;
    // New accounts refuse cleartext; an account from before that rule
    // has no enforceE2EEincoming file.
    assert!(relay.login(NEW_USER, PASSWORD).await?);
    assert!(relay.login(OLD_USER, PASSWORD).await?);
    fs::remove_file(relay.mail().join(OLD_USER).join("enforceE2EEincoming"))?;
    Ok(Setup { relay, dns, key })
}

/// A shared test mail from `from` to `to`, with CRLF line endings.
fn mail(name: &str, from: &str, to: &str) -> Vec<u8> {
    test_mail(name, from, to).into_bytes()
}

fn inbox(relay: &Relay, user: &str) -> PathBuf {
    relay.mail().join(user).join("new")
}

fn delivered(relay: &Relay, user: &str) -> usize {
    fs::read_dir(inbox(relay, user)).map_or(0, Iterator::count)
}

async fn deliver(
    relay: &Relay,
    door: Door,
    mail_from: &str,
    rcpt_to: &[&str],
    message: &[u8],
) -> Result<Outcome> {
    match door {
        Door::Smtp => {
            let mut client = relay.connect_mx().await?;
            let text = String::from_utf8(message.to_vec())?;
            let SmtpReply { code, text, .. } = client.send(mail_from, rcpt_to, &text).await?;
            client.quit().await;
            Ok(Outcome {
                code,
                text,
                http_status: None,
            })
        }
        Door::Http(version) => {
            let port: u16 = relay
                .ini_value("filtermail_http_port_incoming")
                .and_then(|port| port.parse().ok())
                .expect("HTTP port");
            let from = (!mail_from.is_empty()).then_some(mail_from);
            let answer = post_mxdeliv(port, version, from, rcpt_to, message).await?;
            let code = answer
                .text
                .get(..3)
                .and_then(|code| code.parse().ok())
                .unwrap_or(0);
            Ok(Outcome {
                code,
                text: answer.text,
                http_status: Some(answer.status),
            })
        }
    }
}

/// Delivers through `door`, expects 250, and waits until the inbox of
/// `user` holds `count` messages, which it returns.
async fn deliver_ok(
    relay: &Relay,
    door: Door,
    mail_from: &str,
    rcpt_to: &[&str],
    message: &[u8],
    (user, count): (&str, usize),
) -> Result<Vec<PathBuf>> {
    let outcome = deliver(relay, door, mail_from, rcpt_to, message).await?;
    assert_code(&outcome, 250, door);
    wait_for_files(&inbox(relay, user), count, Duration::from_secs(20))
}

/// Delivers through `door` and expects a refusal with `code` whose text
/// mentions `reason`.
async fn expect_refusal(
    relay: &Relay,
    door: Door,
    mail_from: &str,
    rcpt_to: &[&str],
    message: &[u8],
    (code, reason): (u16, &str),
) -> Result<()> {
    let outcome = deliver(relay, door, mail_from, rcpt_to, message).await?;
    assert_code(&outcome, code, door);
    assert!(outcome.text.contains(reason), "{door:?}: {outcome:?}");
    Ok(())
}

fn assert_code(outcome: &Outcome, code: u16, door: Door) {
    assert_eq!(outcome.code, code, "{door:?}: {outcome:?}");
    if let Some(status) = outcome.http_status {
        let expected = if code == 250 { 200 } else { 400 };
        assert_eq!(status, expected, "{door:?}: {outcome:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_signed_mail_is_delivered_through_both_doors() -> Result<()> {
    let s = setup().await?;
    let (relay, key) = (&s.relay, &s.key);
    for (n, door) in DOORS.into_iter().enumerate() {
        let message = key.sign(&mail("encrypted.eml", REMOTE, NEW_USER))?;
        let files = deliver_ok(
            relay,
            door,
            REMOTE,
            &[NEW_USER],
            &message,
            (NEW_USER, n + 1),
        )
        .await?;
        // Stored compressed, unchanged but for Return-Path and Delivered-To;
        // the signature and trace headers are gone (lmtp_header_checks,
        // lmtp_add_received_header = no).
        let file = files.first().expect("a file");
        assert!(relay_tests::is_gzip(file)?, "{}", file.display());
        let text = relay_tests::read_message(file)?;
        assert!(text.contains("Content-Type: multipart/encrypted"), "{text}");
        assert!(text.contains("Return-Path: <one@example.org>"), "{text}");
        for header in ["DKIM-Signature:", "Received:", "Authentication-Results:"] {
            assert!(!text.contains(header), "{door:?}: {header} kept in\n{text}");
        }
    }
    // IMAP serves the compressed files as the messages they are.
    let mut imap = ImapClient::connect(relay.dovecot.imaps_port(), relay.dovecot.cert()).await?;
    assert!(imap.login(NEW_USER, PASSWORD).await?);
    assert!(imap.command("SELECT INBOX").await?.starts_with("OK"));
    let (fetched, status) = imap.command_lines("FETCH 1:* BODY.PEEK[]").await?;
    assert!(status.starts_with("OK"), "{status}");
    assert_eq!(fetched.len(), DOORS.len(), "{fetched:?}");
    for message in fetched {
        assert!(
            message.contains("Content-Type: multipart/encrypted"),
            "{message}"
        );
        assert!(message.contains("-----BEGIN PGP MESSAGE-----"), "{message}");
    }
    assert_log_lines(
        relay,
        &[
            ("Incoming: Filtering encrypted mail.", DOORS.len()),
            ("Incoming: Filtering unencrypted mail.", 0),
        ],
    );
    assert_counts(relay, &[("accepted", DOORS.len())]).await?;
    let scrape = relay.scrape(MetricsDaemon::FiltermailIncoming).await?;
    assert_eq!(
        scrape.value(r#"filtermail_check_seconds_count{direction="incoming"}"#)?,
        DOORS.len() as f64
    );
    // Every connection was closed again, through both doors.
    assert_eq!(scrape.sum("filtermail_connections_open"), 0.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_is_refused_for_new_accounts_and_delivered_to_old_ones() -> Result<()> {
    let s = setup().await?;
    let (relay, key) = (&s.relay, &s.key);
    for (n, door) in DOORS.into_iter().enumerate() {
        let refused = key.sign(&mail("plain.eml", REMOTE, NEW_USER))?;
        expect_refusal(
            relay,
            door,
            REMOTE,
            &[NEW_USER],
            &refused,
            (523, "Encryption Needed"),
        )
        .await?;

        // One recipient that refuses cleartext refuses the message.
        let outcome = deliver(relay, door, REMOTE, &[OLD_USER, NEW_USER], &refused).await?;
        assert_code(&outcome, 523, door);

        let accepted = key.sign(&mail("plain.eml", REMOTE, OLD_USER))?;
        deliver_ok(
            relay,
            door,
            REMOTE,
            &[OLD_USER],
            &accepted,
            (OLD_USER, n + 1),
        )
        .await?;
    }
    assert_eq!(delivered(relay, NEW_USER), 0);
    // Three cleartext messages through each door.
    assert_log_lines(
        relay,
        &[
            ("Incoming: Filtering unencrypted mail.", 3 * DOORS.len()),
            ("Incoming: Filtering encrypted mail.", 0),
        ],
    );
    assert_counts(
        relay,
        &[
            ("not_encrypted", 2 * DOORS.len()),
            ("accepted", DOORS.len()),
        ],
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailer_daemon_reports_are_delivered() -> Result<()> {
    let s = setup().await?;
    let (relay, key) = (&s.relay, &s.key);
    for (n, door) in DOORS.into_iter().enumerate() {
        let report = key.sign(&mail("mailer-daemon.eml", REMOTE, NEW_USER))?;
        deliver_ok(relay, door, "", &[NEW_USER], &report, (NEW_USER, n + 1)).await?;
    }
    // The line existing dashboards (mtail) count, once per message, with
    // the sender's domain only.
    assert_log_lines(
        relay,
        &[(
            "Incoming: Filtering mailer-daemon message from *@example.org",
            DOORS.len(),
        )],
    );
    Ok(())
}

/// The incoming filter counted each of `counts` (outcome, count) so, and
/// no other outcome.
async fn assert_counts(relay: &Relay, counts: &[(&str, usize)]) -> Result<()> {
    let scrape = relay.scrape(MetricsDaemon::FiltermailIncoming).await?;
    for (outcome, count) in counts {
        let series =
            format!(r#"filtermail_messages_total{{direction="incoming",outcome="{outcome}"}}"#);
        assert_eq!(scrape.value(&series)?, *count as f64, "{series}");
    }
    let total: usize = counts.iter().map(|(_, count)| count).sum();
    assert_eq!(
        scrape.sum("filtermail_messages_total"),
        total as f64,
        "{}",
        scrape.text
    );
    Ok(())
}

/// Each of `lines` (text, count) is in the incoming filter's log exactly
/// `count` times, as the mtail program of the relay we replace counts.
fn assert_log_lines(relay: &Relay, lines: &[(&str, usize)]) {
    let log = relay.incoming_filter_log();
    for (line, count) in lines {
        assert_eq!(log.matches(line).count(), *count, "{line:?} in\n{log}");
    }
}

/// Messages above 256 KiB are parsed and DKIM-checked on the blocking
/// pool, away from the filter's one runtime thread: same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_get_the_same_checks() -> Result<()> {
    let s = setup().await?;
    let (relay, key) = (&s.relay, &s.key);
    let padding = "X-Padding: 0123456789012345678901234567890123456789\r\n".repeat(8000);
    let unsigned = format!(
        "{padding}{}",
        String::from_utf8(mail("encrypted.eml", REMOTE, NEW_USER))?
    );
    assert!(unsigned.len() > 300 * 1024);
    for (n, door) in DOORS.into_iter().enumerate() {
        expect_refusal(
            relay,
            door,
            REMOTE,
            &[NEW_USER],
            unsigned.as_bytes(),
            (554, "5.7.1 No DKIM signature found"),
        )
        .await?;
        let signed = key.sign(unsigned.as_bytes())?;
        let tampered = String::from_utf8(signed.clone())?.replacen("Subject: Hi", "Subject: Yo", 1);
        let outcome = deliver(relay, door, REMOTE, &[NEW_USER], tampered.as_bytes()).await?;
        assert_code(&outcome, 554, door);
        deliver_ok(relay, door, REMOTE, &[NEW_USER], &signed, (NEW_USER, n + 1)).await?;
    }
    Ok(())
}

/// A large signed and encrypted message is checked (DKIM and the
/// encryption policy) without copies of its payload, through either
/// door: the filter's memory grows by about the message it must hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_costs_the_filter_about_its_size() -> Result<()> {
    let s = setup().await?;
    let (relay, key) = (&s.relay, &s.key);
    let pid = relay.incoming_filter_pid().expect("the filter runs");
    let message = key.sign(&relay_tests::encrypted_message(REMOTE, NEW_USER, 24 << 20)?)?;
    let idle_kib = proc_status_kib(pid, "VmRSS");
    let doors = [Door::Smtp, Door::Http(HttpVersion::Http1)];
    for (n, door) in doors.into_iter().enumerate() {
        let files = (NEW_USER, n + 1);
        deliver_ok(relay, door, REMOTE, &[NEW_USER], &message, files).await?;
    }
    relay_tests::assert_held_one_copy(pid, idle_kib, message.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_failures_are_refused_with_the_reason() -> Result<()> {
    let s = setup().await?;
    let (relay, key) = (&s.relay, &s.key);
    let stranger = DkimKey::ed25519("example.net", "relay")?;
    for door in DOORS {
        let unsigned = mail("encrypted.eml", REMOTE, NEW_USER);
        expect_refusal(
            relay,
            door,
            REMOTE,
            &[NEW_USER],
            &unsigned,
            (554, "5.7.1 No DKIM signature found"),
        )
        .await?;

        let foreign = stranger.sign(&unsigned)?;
        expect_refusal(
            relay,
            door,
            REMOTE,
            &[NEW_USER],
            &foreign,
            (
                554,
                "No DKIM signature found: signatures by other domains than example.org only",
            ),
        )
        .await?;

        let signed = key.sign(&unsigned)?;
        let tampered = String::from_utf8(signed)?.replacen("Subject: Hi", "Subject: Yo", 1);
        let outcome = deliver(relay, door, REMOTE, &[NEW_USER], tampered.as_bytes()).await?;
        assert_code(&outcome, 554, door);
        assert!(
            outcome
                .text
                .contains("No valid DKIM signature found: the signature does not verify"),
            "{outcome:?}"
        );
    }
    assert_eq!(delivered(relay, NEW_USER), 0);
    assert_counts(
        relay,
        &[
            ("dkim_missing", 2 * DOORS.len()),
            ("dkim_invalid", DOORS.len()),
        ],
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_published_after_a_refusal_is_found_at_once() -> Result<()> {
    let s = setup().await?;
    let relay = &s.relay;
    // The zone lets resolvers keep its "no such record" for a minute; the
    // filter must not, or a freshly published key would be refused.
    for (n, door) in DOORS.into_iter().enumerate() {
        let key = DkimKey::ed25519("example.org", &format!("late{n}"))?;
        let message = key.sign(&mail("encrypted.eml", REMOTE, NEW_USER))?;
        let unknown = (554, "no usable key in DNS");
        expect_refusal(relay, door, REMOTE, &[NEW_USER], &message, unknown).await?;
        s.dns.add_txt(&key.record_name(), &[&key.record()]);
        let inbox = (NEW_USER, n + 1);
        deliver_ok(relay, door, REMOTE, &[NEW_USER], &message, inbox).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_outage_is_a_temporary_failure() -> Result<()> {
    let s = setup().await?;
    let (relay, key) = (&s.relay, &s.key);
    s.dns.set_mode(DnsMode::ServFail);
    for door in DOORS {
        let message = key.sign(&mail("encrypted.eml", REMOTE, NEW_USER))?;
        expect_refusal(
            relay,
            door,
            REMOTE,
            &[NEW_USER],
            &message,
            (451, "try again later"),
        )
        .await?;
    }
    assert_eq!(delivered(relay, NEW_USER), 0);
    assert_counts(relay, &[("dkim_tempfail", DOORS.len())]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_literal_senders_need_no_dkim() -> Result<()> {
    let s = setup().await?;
    let relay = &s.relay;
    let sender = "someone@[127.0.0.2]";
    for (n, door) in DOORS.into_iter().enumerate() {
        let message = mail("encrypted.eml", sender, NEW_USER);
        deliver_ok(
            relay,
            door,
            sender,
            &[NEW_USER],
            &message,
            (NEW_USER, n + 1),
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_of_dots_survive_every_hop() -> Result<()> {
    let s = setup().await?;
    let relay = &s.relay;
    let sender = "someone@[127.0.0.2]";
    // Dot lines in the MIME preamble: stuffed by the client, unstuffed and
    // stuffed again by Postfix, filtermail-incoming and the reinjection.
    let message = String::from_utf8(mail("encrypted.eml", sender, NEW_USER))?;
    let message = message.replacen("\r\n\r\n", "\r\n\r\n.\r\n..\r\n.dot first\r\n", 1);
    let files = deliver_ok(
        relay,
        Door::Smtp,
        sender,
        &[NEW_USER],
        message.as_bytes(),
        (NEW_USER, 1),
    )
    .await?;
    let delivered = relay_tests::read_message(files.first().expect("a file"))?;
    assert!(delivered.contains("\n\n.\n..\n.dot first\n"), "{delivered}");
    // DATA that is nothing but its end: an empty message is no mail.
    let mut client = relay.connect_mx().await?;
    let reply = client.send(sender, &[NEW_USER], "").await?;
    assert_eq!(reply.code, 500, "{reply:?}");
    client.quit().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_envelope_sender_gets_an_empty_return_path() -> Result<()> {
    let s = setup().await?;
    let (relay, key) = (&s.relay, &s.key);
    for (n, door) in DOORS.into_iter().enumerate() {
        let message = key.sign(&mail("encrypted.eml", REMOTE, NEW_USER))?;
        let files = deliver_ok(
            relay,
            door,
            "victim@example.com",
            &[NEW_USER],
            &message,
            (NEW_USER, n + 1),
        )
        .await?;
        for file in files {
            let text = relay_tests::read_message(&file)?;
            assert!(text.starts_with("Return-Path: <>"), "{door:?}: {text}");
        }
    }
    Ok(())
}

/// A From that differs from the envelope sender only in the case of its
/// local part is the sender's own: bounces still reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_in_another_case_keeps_the_return_path() -> Result<()> {
    let s = setup().await?;
    let (relay, key) = (&s.relay, &s.key);
    for (n, door) in DOORS.into_iter().enumerate() {
        let message = key.sign(&mail("encrypted.eml", "One@example.org", NEW_USER))?;
        let files = deliver_ok(
            relay,
            door,
            REMOTE,
            &[NEW_USER],
            &message,
            (NEW_USER, n + 1),
        )
        .await?;
        let Some(file) = files.into_iter().last() else {
            panic!("{door:?}: nothing delivered");
        };
        let text = relay_tests::read_message(&file)?;
        assert!(
            text.starts_with(&format!("Return-Path: <{REMOTE}>")),
            "{door:?}: {text}"
        );
    }
    Ok(())
}

/// Cleartext that reads as PGP/MIME to one parser and as text to
/// another, signed by its domain, through every door: refused as any
/// cleartext, and nothing delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_read_two_ways_is_refused_at_every_door() -> Result<()> {
    let s = setup().await?;
    let (relay, key) = (&s.relay, &s.key);
    for door in DOORS {
        for (what, message) in relay_tests::mails_read_two_ways(REMOTE, NEW_USER) {
            let signed = key.sign(message.as_bytes())?;
            let outcome = deliver(relay, door, REMOTE, &[NEW_USER], &signed).await?;
            assert_eq!(outcome.code, 523, "{door:?}, {what}: {outcome:?}");
        }
    }
    // The one that reads right passes, so the refusals are not the door's.
    let encrypted = key.sign(&mail("encrypted.eml", REMOTE, NEW_USER))?;
    deliver_ok(
        relay,
        Door::Smtp,
        REMOTE,
        &[NEW_USER],
        &encrypted,
        (NEW_USER, 1),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(delivered(relay, NEW_USER), 1);
    Ok(())
}

/// The mailer-daemon exception holds for real delivery status
/// notifications only, signed or from an address literal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_bounces_are_refused_at_every_door() -> Result<()> {
    let s = setup().await?;
    let (relay, key) = (&s.relay, &s.key);
    for door in DOORS {
        for from in ["MAILER-DAEMON@example.org", "mailer-daemon@[127.0.0.5]"] {
            for (what, message) in relay_tests::forged_bounces(from, NEW_USER) {
                let message = key.sign(message.as_bytes())?;
                let outcome = deliver(relay, door, "", &[NEW_USER], &message).await?;
                assert_eq!(outcome.code, 523, "{door:?}, {from}, {what}: {outcome:?}");
            }
        }
    }
    assert_eq!(delivered(relay, NEW_USER), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_recipients_are_dropped() -> Result<()> {
    let s = setup().await?;
    let (relay, key) = (&s.relay, &s.key);
    fs::write(relay.mail().join(OLD_USER).join("DISABLED"), "")?;
    for (n, door) in DOORS.into_iter().enumerate() {
        let message = key.sign(&mail("encrypted.eml", REMOTE, NEW_USER))?;
        deliver_ok(
            relay,
            door,
            REMOTE,
            &[OLD_USER, NEW_USER],
            &message,
            (NEW_USER, n + 1),
        )
        .await?;
        // Only disabled recipients: accepted and dropped.
        let outcome = deliver(relay, door, REMOTE, &[OLD_USER], &message).await?;
        assert_code(&outcome, 250, door);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(delivered(relay, OLD_USER), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refuses_bad_requests() -> Result<()> {
    let s = setup_with(&[("max_message_size", "20000")]).await?;
    let (relay, key) = (&s.relay, &s.key);
    let port: u16 = relay
        .ini_value("filtermail_http_port_incoming")
        .and_then(|port| port.parse().ok())
        .expect("HTTP port");
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let get = hyper::Request::get(format!("http://127.0.0.1:{port}/mxdeliv"))
            .body(Full::new(Bytes::new()))?;
        assert_eq!(http_request(port, version, get).await?.status, 405);

        let wrong_path = hyper::Request::post(format!("http://127.0.0.1:{port}/other"))
            .header("X-Mail-To", NEW_USER)
            .body(Full::new(Bytes::new()))?;
        assert_eq!(http_request(port, version, wrong_path).await?.status, 404);

        let message = key.sign(&mail("encrypted.eml", REMOTE, NEW_USER))?;
        let answer = post_mxdeliv(port, version, Some(REMOTE), &[], &message).await?;
        assert_eq!(answer.status, 400, "{answer:?}");
        assert!(answer.text.starts_with("503"), "{answer:?}");

        let mut big = message.clone();
        big.extend(std::iter::repeat_n(b'x', 30_000));
        let answer = post_mxdeliv(port, version, Some(REMOTE), &[NEW_USER], &big).await?;
        assert_eq!(answer.status, 413, "{answer:?}");
        assert!(answer.text.starts_with("552"), "{answer:?}");

        let elsewhere =
            post_mxdeliv(port, version, Some(REMOTE), &["two@example.net"], &message).await?;
        assert_eq!(elsewhere.status, 400, "{elsewhere:?}");
        assert!(elsewhere.text.starts_with("5"), "{elsewhere:?}");
    }
    assert_eq!(delivered(relay, NEW_USER), 0);
    // Per HTTP version: one request without recipients, one too large,
    // one for another domain; the wrong method and path are no messages.
    assert_counts(
        relay,
        &[("bad_address", 2), ("too_large", 2), ("relay_denied", 2)],
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_dkim_is_possible_and_loud() -> Result<()> {
    let mut s = setup().await?;
    s.relay
        .restart_incoming_filter(&[], &[("FILTERMAIL_SKIP_DKIM", "1")])?;
    let relay = &s.relay;
    let log = relay.incoming_filter_log();
    assert!(log.contains("DKIM CHECKS ARE OFF"), "{log}");
    let unsigned = mail("encrypted.eml", REMOTE, NEW_USER);
    deliver_ok(
        relay,
        Door::Smtp,
        REMOTE,
        &[NEW_USER],
        &unsigned,
        (NEW_USER, 1),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_mail_is_kept_only_when_asked() -> Result<()> {
    let mut s = setup().await?;
    let unsigned = mail("encrypted.eml", REMOTE, NEW_USER);
    let outcome = deliver(&s.relay, Door::Smtp, REMOTE, &[NEW_USER], &unsigned).await?;
    assert_code(&outcome, 554, Door::Smtp);
    assert!(!s.relay.work.path().join("refused").exists());
    // The operator creates the directory for the daemon's user.
    let kept = s.relay.work.subdir("refused", 0o700)?;
    VmailUser::lookup()?.own(&kept)?;
    let kept_dir = kept.display().to_string();
    s.relay
        .restart_incoming_filter(&[("filtermail_refused_mail_dir", &kept_dir)], &[])?;
    let (relay, key) = (&s.relay, &s.key);
    let outcome = deliver(relay, Door::Smtp, REMOTE, &[NEW_USER], &unsigned).await?;
    assert_code(&outcome, 554, Door::Smtp);
    let files = wait_for_files(&kept, 1, Duration::from_secs(5))?;
    let text = relay_tests::read_message(files.first().expect("a file"))?;
    assert!(text.starts_with("X-Filtermail-Refused: 554"), "{text}");
    // Accepted mail is not kept.
    let signed = key.sign(&unsigned)?;
    let outcome = deliver(relay, Door::Smtp, REMOTE, &[NEW_USER], &signed).await?;
    assert_code(&outcome, 250, Door::Smtp);
    assert_eq!(fs::read_dir(&kept)?.count(), 1);
    Ok(())
}
