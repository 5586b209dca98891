//! filtermail-outgoing between real Postfix submission (SASL through
//! Dovecot and doveauth) and real Postfix reinjection, delivering through
//! Dovecot LMTP, with the postfix/ and dovecot/ files this repo ships.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use chatmail_config::MetricsDaemon;
use relay_tests::{
    Relay, RelayOptions, SmtpClient, SmtpReply, free_port, proc_status_kib, repo_root,
    wait_for_files,
};

const SENDER: &str = "sender123@[127.0.0.1]";
const RECIPIENT: &str = "recipient@[127.0.0.1]";
const PASSWORD: &str = "right-password-1";

fn relay(ini: &[(&str, &str)]) -> Result<Relay> {
    Relay::start(&RelayOptions {
        ini: ini
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        outgoing_filter: true,
        ..RelayOptions::default()
    })
}

/// A shared test mail with our addresses, LF line endings.
fn mail(name: &str, from: &str) -> String {
    let path = repo_root().join("tests/data/mail").join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    text.replace("{subject}", "Hi")
        .replacen("From: one@example.org", &format!("From: <{from}>"), 1)
        .replacen("From: <one@example.org>", &format!("From: <{from}>"), 1)
        .replacen("To: two@example.org", &format!("To: <{RECIPIENT}>"), 1)
        .replacen("To: <two@example.org>", &format!("To: <{RECIPIENT}>"), 1)
}

fn inbox(relay: &Relay, user: &str) -> PathBuf {
    relay.mail().join(user).join("new")
}

/// Logs in over implicit TLS as SENDER and submits to RECIPIENT;
/// returns the first refusal or the reply to the end of DATA.
async fn submit(relay: &Relay, mail_from: &str, message: &str) -> Result<SmtpReply> {
    submit_as(relay, SENDER, mail_from, RECIPIENT, message).await
}

/// Logs in as `user` and submits from `mail_from` to `to`.
async fn submit_as(
    relay: &Relay,
    user: &str,
    mail_from: &str,
    to: &str,
    message: &str,
) -> Result<SmtpReply> {
    let mut client = SmtpClient::connect_tls(relay.submission_port, relay.postfix.cert()).await?;
    client.ehlo().await?;
    let auth = client.auth_plain(user, PASSWORD).await?;
    assert_eq!(auth.code, 235, "{auth:?}");
    // Postfix passes the filter's refusals on once it has the message.
    let reply = client.send(mail_from, &[to], message).await?;
    client.quit().await;
    Ok(reply)
}

async fn create_accounts(relay: &Relay) -> Result<()> {
    assert!(relay.login(SENDER, PASSWORD).await?);
    assert!(relay.login(RECIPIENT, PASSWORD).await?);
    Ok(())
}

fn body_of(message: &str) -> &str {
    message
        .split_once("\r\n\r\n")
        .or_else(|| message.split_once("\n\n"))
        .map_or("", |(_, body)| body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_mail_is_delivered_with_an_identical_body() -> Result<()> {
    let relay = relay(&[])?;
    create_accounts(&relay).await?;
    let message = mail("encrypted.eml", SENDER);
    let reply = submit(&relay, SENDER, &message).await?;
    assert_eq!(reply.code, 250, "{reply:?}");
    let files = wait_for_files(&inbox(&relay, RECIPIENT), 1, Duration::from_secs(20))?;
    let delivered = relay_tests::read_message(files.first().expect("one file"))?;
    let sent = message.replace("\r\n", "\n");
    assert_eq!(body_of(&delivered).replace("\r\n", "\n"), body_of(&sent));
    assert!(delivered.contains("Content-Type: multipart/encrypted"));
    // The subject outside the encryption tells nothing (it was "Hi"), and
    // no header records the path the message took.
    assert!(
        delivered
            .lines()
            .any(|line| line.trim_end() == "Subject: [...]"),
        "{delivered}"
    );
    assert!(!delivered.contains("Subject: Hi"), "{delivered}");
    assert!(!delivered.contains("Received:"), "{delivered}");
    // The lines existing dashboards (mtail) count: one per message, one
    // per created account (without the address at info level).
    let log = relay.outgoing_filter_log();
    assert_eq!(
        log.matches("Outgoing: Filtering encrypted mail.").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("Outgoing: Filtering unencrypted mail.").count(),
        0,
        "{log}"
    );
    let doveauth = relay.doveauth_log();
    let created: Vec<&str> = doveauth
        .lines()
        .filter(|line| line.contains("Created address: "))
        .collect();
    assert_eq!(created.len(), 2, "{doveauth}");
    assert!(
        created
            .iter()
            .all(|line| line.contains("INFO") && line.contains("Created address: *@[127.0.0.1]")),
        "{created:?}"
    );

    // The same, scraped: the filter counted one accepted message and
    // timed its check; doveauth two accounts; Dovecot the logins and the
    // delivery.
    let filter = relay.scrape(MetricsDaemon::FiltermailOutgoing).await?;
    assert_eq!(filter.value(&outgoing("accepted"))?, 1.0);
    assert_eq!(
        filter.sum("filtermail_messages_total"),
        1.0,
        "only that one"
    );
    assert_eq!(
        filter.value(r#"filtermail_check_seconds_count{direction="outgoing"}"#)?,
        1.0
    );
    assert!(
        filter.value(r#"filtermail_message_bytes_total{direction="outgoing"}"#)?
            >= message.len() as f64
    );
    let auth = relay.scrape(MetricsDaemon::Doveauth).await?;
    assert_eq!(auth.value("doveauth_accounts_created_total")?, 2.0);
    assert_eq!(auth.sum("doveauth_registrations_refused_total"), 0.0);
    let dovecot = relay.scrape(MetricsDaemon::Dovecot).await?;
    assert_eq!(dovecot.value("dovecot_imap_logins_total")?, 2.0);
    assert_eq!(dovecot.value("dovecot_smtp_logins_total")?, 1.0);
    assert_eq!(dovecot.value("dovecot_auth_failures_total")?, 0.0);
    assert_eq!(dovecot.value("dovecot_mail_deliveries_total")?, 1.0);
    Ok(())
}

/// The series of an outcome of filtermail-outgoing.
fn outgoing(outcome: &str) -> String {
    format!(r#"filtermail_messages_total{{direction="outgoing",outcome="{outcome}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_reach_the_client() -> Result<()> {
    let relay = relay(&[("max_message_size", "200000")])?;
    create_accounts(&relay).await?;

    let cleartext = submit(&relay, SENDER, &mail("plain.eml", SENDER)).await?;
    assert_eq!(cleartext.code, 523, "{cleartext:?}");
    let log = relay.outgoing_filter_log();
    assert_eq!(
        log.matches("Outgoing: Filtering unencrypted mail.").count(),
        1,
        "{log}"
    );
    assert!(
        cleartext
            .text
            .contains("Encryption Needed: Invalid Unencrypted Mail"),
        "{cleartext:?}"
    );

    let forged = submit(
        &relay,
        SENDER,
        &mail("encrypted.eml", "someone1@[127.0.0.1]"),
    )
    .await?;
    assert_eq!(forged.code, 500, "{forged:?}");
    // The texts of the program we replace, which operators search for.
    assert!(
        forged
            .text
            .starts_with("500 Invalid FROM <someone1@[127.0.0.1]> for <"),
        "{forged:?}"
    );

    let mut big = mail("encrypted.eml", SENDER);
    big.insert_str(
        0,
        &"X-Padding: 0123456789012345678901234567890123456789\n".repeat(6000),
    );
    let too_big = submit(&relay, SENDER, &big).await?;
    // Postfix's own message_size_limit (the same max_message_size) may
    // refuse it before the filter does, in its own words.
    assert_eq!(too_big.code, 552, "{too_big:?}");

    // Nothing of it was delivered.
    std::thread::sleep(Duration::from_secs(1));
    let delivered = fs::read_dir(inbox(&relay, RECIPIENT))
        .map(Iterator::count)
        .unwrap_or(0);
    assert_eq!(delivered, 0);
    // Each refusal is counted under its reason, nothing as accepted.
    let filter = relay.scrape(MetricsDaemon::FiltermailOutgoing).await?;
    assert_eq!(filter.value(&outgoing("not_encrypted"))?, 1.0);
    assert_eq!(filter.value(&outgoing("from_mismatch"))?, 1.0);
    assert_eq!(filter.value(&outgoing("accepted"))?, 0.0);
    Ok(())
}

/// Cleartext that reads as PGP/MIME to one parser and as text to Delta
/// Chat's: a logged-in user cannot send it to anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_read_two_ways_is_refused_at_submission() -> Result<()> {
    let relay = relay(&[])?;
    create_accounts(&relay).await?;
    for (what, message) in relay_tests::mails_read_two_ways(SENDER, RECIPIENT) {
        let reply = submit(&relay, SENDER, &message).await?;
        assert_eq!(reply.code, 523, "{what}: {reply:?}");
    }
    // The same mail read one way passes.
    let encrypted = submit(&relay, SENDER, &mail("encrypted.eml", SENDER)).await?;
    assert_eq!(encrypted.code, 250, "{encrypted:?}");
    relay_tests::wait_for_files(&inbox(&relay, RECIPIENT), 1, Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_millis(500));
    let delivered = fs::read_dir(inbox(&relay, RECIPIENT)).map_or(0, Iterator::count);
    assert_eq!(delivered, 1);
    Ok(())
}

/// One account addresses at most max_user_recipients_per_minute
/// recipients a minute over all its messages; others are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_per_minute_are_bounded_per_account() -> Result<()> {
    let relay = relay(&[("max_user_recipients_per_minute", "3")])?;
    create_accounts(&relay).await?;
    let mut client = SmtpClient::connect_tls(relay.submission_port, relay.postfix.cert()).await?;
    client.ehlo().await?;
    let auth = client.auth_plain(SENDER, PASSWORD).await?;
    assert_eq!(auth.code, 235, "{auth:?}");
    // Postfix passes the envelope to the filter once it has the whole
    // message (speed_adjust): the answer to the message tells.
    let recipients: Vec<String> = (0..5).map(|n| format!("someone{n}@example.org")).collect();
    let recipients: Vec<&str> = recipients.iter().map(String::as_str).collect();
    let reply = client
        .send(SENDER, &recipients, &mail("encrypted.eml", SENDER))
        .await?;
    assert_eq!(reply.code, 450, "{reply:?}");
    assert!(reply.text.contains("Too many recipients from"), "{reply:?}");
    client.quit().await;
    // Another account has its own allowance.
    let other = submit_as(
        &relay,
        RECIPIENT,
        RECIPIENT,
        SENDER,
        &mail("encrypted.eml", RECIPIENT),
    )
    .await?;
    assert_eq!(other.code, 250, "{other:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_rate_limit_gets_450() -> Result<()> {
    let relay = relay(&[
        ("max_user_send_per_minute", "60"),
        ("max_user_send_burst_size", "3"),
    ])?;
    create_accounts(&relay).await?;
    let message = mail("encrypted.eml", SENDER);
    let mut replies = Vec::new();
    for _ in 0..5 {
        replies.push(submit(&relay, SENDER, &message).await?);
    }
    let codes: Vec<u16> = replies.iter().map(|reply| reply.code).collect();
    assert_eq!(&codes[..3], [250, 250, 250], "{codes:?}");
    let limited = replies
        .iter()
        .find(|reply| reply.code == 450)
        .expect("a 450 over the burst");
    assert!(
        limited
            .text
            .starts_with(&format!("450 4.7.1: Too much mail from {SENDER}")),
        "{limited:?}"
    );
    let filter = relay.scrape(MetricsDaemon::FiltermailOutgoing).await?;
    let accepted = codes.iter().filter(|code| **code == 250).count();
    assert_eq!(filter.value(&outgoing("accepted"))?, accepted as f64);
    assert_eq!(
        filter.value(&outgoing("rate_limited"))?,
        (codes.len() - accepted) as f64
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinjection_down_is_a_temporary_failure_and_a_retry_delivers() -> Result<()> {
    let mut relay = relay(&[])?;
    create_accounts(&relay).await?;
    let closed = free_port()?.to_string();
    relay.restart_outgoing_filter(&[("postfix_reinject_port", &closed)])?;
    let message = mail("encrypted.eml", SENDER);
    let reply = submit(&relay, SENDER, &message).await?;
    assert!((400..500).contains(&reply.code), "{reply:?}");
    let filter = relay.scrape(MetricsDaemon::FiltermailOutgoing).await?;
    assert_eq!(filter.value(&outgoing("reinjection_failed"))?, 1.0);
    assert_eq!(
        filter.value(r#"filtermail_reinjection_failures_total{direction="outgoing"}"#)?,
        1.0
    );

    relay.restart_outgoing_filter(&[])?;
    let retry = submit(&relay, SENDER, &message).await?;
    assert_eq!(retry.code, 250, "{retry:?}");
    let files = wait_for_files(&inbox(&relay, RECIPIENT), 1, Duration::from_secs(20))?;
    assert_eq!(files.len(), 1, "delivered exactly once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_smuggling_is_refused_without_a_second_message() -> Result<()> {
    let relay = relay(&[])?;
    create_accounts(&relay).await?;
    let mut client = SmtpClient::connect_tls(relay.submission_port, relay.postfix.cert()).await?;
    client.ehlo().await?;
    assert_eq!(client.auth_plain(SENDER, PASSWORD).await?.code, 235);
    assert_eq!(
        client.command(&format!("MAIL FROM:<{SENDER}>")).await?.code,
        250
    );
    assert_eq!(
        client
            .command(&format!("RCPT TO:<{RECIPIENT}>"))
            .await?
            .code,
        250
    );
    assert_eq!(client.command("DATA").await?.code, 354);
    let encrypted = mail("encrypted.eml", SENDER).replace('\n', "\r\n");
    let smuggled = format!(
        "{encrypted}\n.\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n{encrypted}.\r\n"
    );
    client.write_raw(smuggled.as_bytes()).await?;
    let outcome = client.read_reply().await;
    if let Ok(reply) = &outcome {
        assert!(reply.code >= 500, "{reply:?}");
    }
    std::thread::sleep(Duration::from_secs(2));
    let delivered = fs::read_dir(inbox(&relay, RECIPIENT))
        .map(Iterator::count)
        .unwrap_or(0);
    assert_eq!(
        delivered, 0,
        "neither the message nor a smuggled one arrived"
    );
    Ok(())
}

/// A large encrypted message is checked without copies of its payload:
/// the filter's memory grows by about the message it must hold, not by
/// the decoded armor on top (it grew by 2.75 times the message while the
/// check decoded the whole armor into memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_encrypted_message_costs_the_filter_about_its_size() -> Result<()> {
    let relay = relay(&[])?;
    create_accounts(&relay).await?;
    let pid = relay.outgoing_filter_pid().expect("the filter runs");
    let port: u16 = relay
        .ini_value("filtermail_smtp_port")
        .and_then(|port| port.parse().ok())
        .expect("the filter's port");
    let message = relay_tests::encrypted_message(SENDER, RECIPIENT, 24 << 20)?;
    let message = String::from_utf8(message)?;
    let idle_kib = proc_status_kib(pid, "VmRSS");
    // Straight to the filter, as Postfix's submission service passes it.
    let mut client = SmtpClient::connect(port).await?;
    client.ehlo().await?;
    let reply = client.send(SENDER, &[RECIPIENT], &message).await?;
    client.quit().await;
    assert_eq!(reply.code, 250, "{reply:?}");
    wait_for_files(&inbox(&relay, RECIPIENT), 1, Duration::from_secs(60))?;
    relay_tests::assert_held_one_copy(pid, idle_kib, message.len());
    Ok(())
}
