//! A domain relay signs its outgoing mail with OpenDKIM, set up as
//! chatmail-configure sets it up, and the signature passes
//! filtermail-incoming's strict check with the DNS record
//! chatmail-configure prints; without it, or altered, the mail is refused.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chatmail_smtp::Protocol;
use filtermail_incoming::{DkimFailure, DkimVerifier};
use relay_tests::{DnsServer, Recorder, Relay, RelayOptions, SmtpClient, repo_root};

const SENDER: &str = "sender123@alpha.test";
const REMOTE: &str = "bob@beta.test";
const PASSWORD: &str = "right-password-1";

fn encrypted_mail() -> Result<String> {
    let path = repo_root().join("tests/data/mail/encrypted.eml");
    Ok(std::fs::read_to_string(path)?
        .replace("{subject}", "Hi")
        .replacen("From: one@example.org", &format!("From: <{SENDER}>"), 1)
        .replacen("From: <one@example.org>", &format!("From: <{SENDER}>"), 1)
        .replacen("To: two@example.org", &format!("To: <{REMOTE}>"), 1)
        .replacen("To: <two@example.org>", &format!("To: <{REMOTE}>"), 1))
}

/// The TXT record split into the 255-byte strings DNS holds.
fn txt_strings(record: &str) -> Vec<&str> {
    let mut strings = Vec::new();
    let mut rest = record;
    while !rest.is_empty() {
        let (head, tail) = rest.split_at(rest.len().min(255));
        strings.push(head);
        rest = tail;
    }
    strings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_mail_is_signed_and_verifies() -> Result<()> {
    // The remote relay is a recorder in the transport's place.
    let remote = Recorder::start(Protocol::Lmtp).await?;
    let relay = Relay::start(&RelayOptions {
        ini: vec![
            ("mail_domain".into(), "alpha.test".into()),
            (
                "filtermail_lmtp_port_transport".into(),
                remote.port().to_string(),
            ),
        ],
        outgoing_filter: true,
        opendkim: true,
        ..RelayOptions::default()
    })?;
    let key = relay.dkim_key();
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key)?.permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    assert!(relay.login(SENDER, PASSWORD).await?);

    let mut client = SmtpClient::connect_tls(relay.submission_port, relay.postfix.cert()).await?;
    client.ehlo().await?;
    assert_eq!(client.auth_plain(SENDER, PASSWORD).await?.code, 235);
    let reply = client.send(SENDER, &[REMOTE], &encrypted_mail()?).await?;
    client.quit().await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while remote.messages() == 0 {
        if Instant::now() > deadline {
            bail!("nothing reached the remote relay");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let signed = remote.message_texts().remove(0);
    let text = String::from_utf8_lossy(&signed);
    // The signature header with its folded lines, and the message without it.
    let mut signature = String::new();
    let mut stripped = String::new();
    let mut in_signature = false;
    for line in text.split_inclusive("\r\n") {
        in_signature =
            line.starts_with("DKIM-Signature:") || (in_signature && line.starts_with([' ', '\t']));
        if in_signature {
            signature.push_str(line);
        } else {
            stripped.push_str(line);
        }
    }
    assert!(signature.contains("d=alpha.test"), "{text}");
    assert!(signature.contains("s=opendkim"), "{signature}");
    // From, Autocrypt and the other reader-facing headers are oversigned.
    let signed_headers = signature
        .split(';')
        .find_map(|tag| tag.trim().strip_prefix("h="))
        .unwrap_or_default()
        .to_ascii_lowercase()
        .replace(|c: char| c.is_ascii_whitespace(), "");
    // Once for each present and once more: none may be added on the way.
    for name in ["from", "to", "subject", "date", "message-id", "autocrypt"] {
        let count = signed_headers.split(':').filter(|h| *h == name).count();
        assert_eq!(count, 2, "{name} in {signed_headers}");
    }

    // The receiving side: the record chatmail-configure prints, served by
    // DNS, and filtermail-incoming's verifier.
    let dns = DnsServer::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    let record = chatmail_configure::dkim_dns_record(&key)?;
    dns.add_txt("opendkim._domainkey.alpha.test.", &txt_strings(&record));
    let config = chatmail_config::Config::from_ini_str(
        &format!(
            "[params]\nmail_domain = beta.test\ndns_resolver = {}\ndns_dnssec_validation = no\n",
            dns.addr()
        ),
        Path::new("beta.ini"),
    )?;
    let verifier = DkimVerifier::new(chatmail_dns::resolver(
        &config,
        chatmail_dns::NegativeAnswers::Forgotten,
    )?);
    verifier
        .verify(&signed, "alpha.test")
        .await
        .map_err(|failure| anyhow::anyhow!("{failure:?}"))?;
    // Stripped, or with a header added on the way, it is refused.
    assert!(!stripped.contains("DKIM-Signature"), "{stripped}");
    assert!(matches!(
        verifier.verify(stripped.as_bytes(), "alpha.test").await,
        Err(DkimFailure::Missing(_))
    ));
    let added = format!("From: <mallory@alpha.test>\r\n{text}").into_bytes();
    assert!(matches!(
        verifier.verify(&added, "alpha.test").await,
        Err(DkimFailure::Invalid(_))
    ));
    Ok(())
}
