//! Attempts to get around the rules the relay exists to enforce, through
//! every door: port 25 and submission (through real Postfix), `POST
//! /mxdeliv`, the filters' and Postfix's loopback ports, IMAP, the dict
//! sockets and the outbound transport. Each test runs the real stack
//! (Postfix and Dovecot with the shipped configuration, our daemons) and
//! asserts that nothing reached a mailbox, the queue, or the world
//! outside the relay (a recording server where outbound mail would go).

mod transport_support;

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chatmail_config::{MailDomain, canonical_address};
use chatmail_smtp::Protocol;
use relay_tests::{
    DkimKey, DnsServer, HttpVersion, ImapClient, Recorder, Relay, RelayOptions, SmtpClient,
    SmtpReply, TransportDaemon, TransportSetup, post_mxdeliv, test_mail, wait_for_files,
};

const PASSWORD: &str = "right-password-1";
/// A DKIM-signing sender on another domain.
const REMOTE: &str = "one@example.org";
/// A sender on another IP-only relay: no DKIM needed.
const REMOTE_LITERAL: &str = "someone@[127.0.0.2]";
const STRANGER: &str = "anyone@elsewhere.example";

/// The relay under attack, its accounts, and the world outside.
struct World {
    relay: Relay,
    _dns: DnsServer,
    key: DkimKey,
    /// Where Postfix sends mail for other domains.
    outside: Recorder,
    domain: String,
    mail_domain: MailDomain,
}

impl World {
    /// `local@<our domain>`
    fn addr(&self, local: &str) -> String {
        format!("{local}@{}", self.domain)
    }

    fn http_port(&self) -> u16 {
        self.port("filtermail_http_port_incoming")
    }

    fn port(&self, key: &str) -> u16 {
        self.relay
            .ini_value(key)
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("{key} in chatmail.ini"))
    }

    /// Waits until `local`'s inbox holds `count` messages.
    fn wait_for_delivered(&self, local: &str, count: usize) -> Result<Vec<PathBuf>> {
        let inbox = self.relay.mail().join(self.addr(local)).join("new");
        wait_for_files(&inbox, count, Duration::from_secs(20))
    }

    fn delivered(&self, local: &str) -> usize {
        let inbox = self.relay.mail().join(self.addr(local)).join("new");
        fs::read_dir(inbox).map_or(0, Iterator::count)
    }

    /// Waits until Postfix's queue is empty, and then a little longer
    /// for the last LMTP deliveries to land.
    async fn settle(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.relay.postfix.queued()? > 0 {
            if Instant::now() > deadline {
                bail!("Postfix's queue does not empty");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }

    /// Nothing for `local` (in any form that names our account) went out
    /// of the relay.
    fn assert_nothing_left_for_accounts(&self) {
        for rcpt in self.outside.recipients() {
            let parsed = canonical_address(&rcpt, &self.mail_domain);
            assert!(
                !parsed.is_ok_and(|address| address.is_local()),
                "{rcpt} was sent out of the relay"
            );
        }
    }

    fn postfix_log(&self) -> String {
        fs::read_to_string(self.relay.postfix.log_path()).unwrap_or_default()
    }
}

/// Accounts of every relay under attack: a user who sends, another one,
/// a victim whose account refuses cleartext (as every new account does),
/// and one the operator switched off.
const ALICE: &str = "alice1234";
const BOB: &str = "bob123456";
const VICTIM: &str = "victim123";
const DISABLED: &str = "disabled1";

async fn world(mail_domain: &str, ini: &[(&str, &str)]) -> Result<World> {
    let dns = DnsServer::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    let key = DkimKey::ed25519("example.org", "relay")?;
    dns.add_txt(&key.record_name(), &[&key.record()]);
    let outside = Recorder::start(Protocol::Lmtp).await?;
    let mut values: Vec<(String, String)> = vec![
        ("mail_domain".into(), mail_domain.into()),
        ("dns_resolver".into(), dns.addr().to_string()),
        ("dns_dnssec_validation".into(), "no".into()),
        (
            "filtermail_lmtp_port_transport".into(),
            outside.port().to_string(),
        ),
        ("max_user_send_burst_size".into(), "1000".into()),
    ];
    values.extend(ini.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let relay = Relay::start(&RelayOptions {
        ini: values,
        outgoing_filter: true,
        incoming_filter: true,
        ..RelayOptions::default()
    })?;
    let mail_domain = MailDomain::parse(mail_domain).map_err(anyhow::Error::msg)?;
    let world = World {
        relay,
        _dns: dns,
        key,
        outside,
        domain: mail_domain.address_domain(),
        mail_domain,
    };
    for user in [ALICE, BOB, VICTIM, DISABLED] {
        assert!(
            world.relay.login(&world.addr(user), PASSWORD).await?,
            "{user}"
        );
    }
    fs::write(
        world
            .relay
            .mail()
            .join(world.addr(DISABLED))
            .join("DISABLED"),
        "",
    )?;
    Ok(world)
}

/// `name` from REMOTE to `to`, DKIM-signed by example.org.
fn signed(world: &World, name: &str, to: &str) -> Result<String> {
    let signed = world.key.sign(test_mail(name, REMOTE, to).as_bytes())?;
    Ok(String::from_utf8(signed)?)
}

/// One SMTP transaction on 127.0.0.1:`port`, optionally after AUTH.
async fn smtp(
    port: u16,
    login: Option<&str>,
    mail_from: &str,
    rcpt_to: &[&str],
    message: &str,
    tls: Option<&relay_tests::SelfSignedCert>,
) -> Result<SmtpReply> {
    let reply = match tls {
        Some(cert) => {
            let mut client = SmtpClient::connect_tls(port, cert).await?;
            client.ehlo().await?;
            if let Some(user) = login {
                let auth = client.auth_plain(user, PASSWORD).await?;
                assert_eq!(auth.code, 235, "{auth:?}");
            }
            let reply = client.send(mail_from, rcpt_to, message).await?;
            client.quit().await;
            reply
        }
        None => {
            let mut client = SmtpClient::connect(port).await?;
            client.ehlo().await?;
            let reply = client.send(mail_from, rcpt_to, message).await?;
            client.quit().await;
            reply
        }
    };
    Ok(reply)
}

/// Port 25 of the relay, through Postfix and filtermail-incoming.
async fn port25(world: &World, from: &str, rcpt: &str, message: &str) -> Result<SmtpReply> {
    let mut client = world.relay.connect_mx().await?;
    let reply = client.send(from, &[rcpt], message).await?;
    client.quit().await;
    Ok(reply)
}

/// Submission as `login`, through Postfix and filtermail-outgoing.
async fn submit(
    world: &World,
    login: &str,
    mail_from: &str,
    rcpt: &str,
    message: &str,
) -> Result<SmtpReply> {
    let cert = world.relay.postfix.cert();
    smtp(
        world.relay.submission_port,
        Some(login),
        mail_from,
        &[rcpt],
        message,
        Some(cert),
    )
    .await
}

/// `POST /mxdeliv`: the HTTP status and the SMTP reply in the body.
async fn mxdeliv(
    world: &World,
    from: &str,
    rcpt_to: &[&str],
    message: &str,
    version: HttpVersion,
) -> Result<(u16, String)> {
    let answer = post_mxdeliv(
        world.http_port(),
        version,
        Some(from),
        rcpt_to,
        message.as_bytes(),
    )
    .await?;
    Ok((answer.status, answer.text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_from_outside_is_only_for_local_accounts() -> Result<()> {
    let w = world("127.0.0.1", &[]).await?;
    let victim = w.addr(VICTIM);
    // An IP-literal From needs no DKIM, so this is all an attacker needs.
    let message = test_mail("encrypted.eml", REMOTE_LITERAL, STRANGER);

    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let (status, text) = mxdeliv(&w, REMOTE_LITERAL, &[STRANGER], &message, version).await?;
        assert_eq!(status, 400, "{text}");
        assert!(text.starts_with("550 5.7.1 Relay access denied"), "{text}");
        // One foreign recipient refuses the whole request.
        let (status, text) =
            mxdeliv(&w, REMOTE_LITERAL, &[&victim, STRANGER], &message, version).await?;
        assert_eq!(status, 400, "{text}");
        assert!(text.starts_with("550 5.7.1"), "{text}");
    }

    // Port 25: Postfix itself refuses, also for a loopback client.
    let reply = port25(&w, REMOTE_LITERAL, STRANGER, &message).await?;
    assert!(reply.code >= 500, "{reply:?}");
    assert!(reply.text.contains("Relay access denied"), "{reply:?}");

    // The filter's SMTP door, without Postfix in front.
    let filter = w.port("filtermail_smtp_port_incoming");
    let reply = smtp(filter, None, REMOTE_LITERAL, &[STRANGER], &message, None).await?;
    assert_eq!(reply.code, 550, "{reply:?}");
    assert!(
        reply.text.contains("5.7.1 Relay access denied"),
        "{reply:?}"
    );

    // Postfix's reinjection service for incoming mail, straight from
    // loopback: it relays nothing either.
    let reinject = w.port("postfix_reinject_port_incoming");
    let reply = smtp(reinject, None, REMOTE_LITERAL, &[STRANGER], &message, None).await?;
    assert_eq!(reply.code, 554, "{reply:?}");
    assert!(reply.text.contains("Relay access denied"), "{reply:?}");

    w.settle().await?;
    assert_eq!(w.outside.recipients(), Vec::<String>::new());
    assert_eq!(w.relay.postfix.queued()?, 0);
    let attempts = w
        .postfix_log()
        .lines()
        .filter(|line| line.contains("to=<anyone@elsewhere.example>") && line.contains("status="))
        .count();
    assert_eq!(attempts, 0, "no delivery attempt to the stranger");
    assert_eq!(w.delivered(VICTIM), 0);

    // The same doors still take mail for local accounts.
    let message = test_mail("encrypted.eml", REMOTE_LITERAL, &victim);
    let (status, text) =
        mxdeliv(&w, REMOTE_LITERAL, &[&victim], &message, HttpVersion::Http1).await?;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        port25(&w, REMOTE_LITERAL, &victim, &message).await?.code,
        250
    );
    w.wait_for_delivered(VICTIM, 2)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_send_as_themselves_only() -> Result<()> {
    let w = world(
        "127.0.0.1",
        &[
            ("max_user_send_per_minute", "1"),
            ("max_user_send_burst_size", "3"),
        ],
    )
    .await?;
    let (alice, bob, victim) = (w.addr(ALICE), w.addr(BOB), w.addr(VICTIM));

    // Another user's address, in any form, as envelope sender (and From):
    // Postfix refuses it at RCPT because it is not the login's.
    for forged in [
        bob.clone(),
        bob.to_uppercase(),
        format!("{bob}."),
        format!("{BOB}%[127.0.0.1]@[127.0.0.1]"),
        format!("@a.example:{bob}"),
        format!("\"{BOB}\"@[127.0.0.1]"),
        STRANGER.to_owned(),
        REMOTE.to_owned(),
        format!("{ALICE}@[127.0.0.1]."),
        format!("{ALICE}%[127.0.0.1]@[127.0.0.1]"),
    ] {
        let message = test_mail("encrypted.eml", &forged, &victim);
        let reply = submit(&w, &alice, &forged, &victim, &message).await?;
        assert!(reply.code >= 500, "{forged}: {reply:?}");
    }
    // With a clean envelope, a forged From header is refused too.
    let message = test_mail("encrypted.eml", &bob, &victim);
    let reply = submit(&w, &alice, &alice, &victim, &message).await?;
    assert_eq!(reply.code, 500, "{reply:?}");

    // The null sender is no way around it either.
    let message = test_mail("encrypted.eml", &alice, &victim);
    let reply = submit(&w, &alice, "", &victim, &message).await?;
    assert!(reply.code >= 500, "{reply:?}");

    // filtermail-outgoing's own port takes only accounts of this relay
    // as senders, in their one canonical form.
    let filter = w.port("filtermail_smtp_port");
    for sender in [
        STRANGER.to_owned(),
        format!("{bob}."),
        format!("{BOB}%[127.0.0.1]@[127.0.0.1]"),
    ] {
        let message = test_mail("encrypted.eml", &sender, &victim);
        let reply = smtp(filter, None, &sender, &[&victim], &message, None).await?;
        assert!(matches!(reply.code, 501 | 553), "{sender}: {reply:?}");
    }

    // None of it spent Bob's allowance (burst of 3), nor reached anyone.
    for _ in 0..3 {
        let message = test_mail("encrypted.eml", &bob, &alice);
        assert_eq!(submit(&w, &bob, &bob, &alice, &message).await?.code, 250);
    }

    // The rate limit counts per login: Alice's burst (one of the three
    // went to the message with the forged From), then no other envelope
    // sender gets her more.
    let message = test_mail("encrypted.eml", &alice, &bob);
    for _ in 0..2 {
        assert_eq!(submit(&w, &alice, &alice, &bob, &message).await?.code, 250);
    }
    assert_eq!(submit(&w, &alice, &alice, &bob, &message).await?.code, 450);
    let upper = alice.to_uppercase();
    let message_upper = test_mail("encrypted.eml", &upper, &bob);
    let reply = submit(&w, &alice, &upper, &bob, &message_upper).await?;
    assert!(reply.code == 450 || reply.code >= 500, "{reply:?}");
    let reply = submit(
        &w,
        &alice,
        &bob,
        &bob,
        &test_mail("encrypted.eml", &bob, &bob),
    )
    .await?;
    assert!(reply.code >= 500, "{reply:?}");

    w.settle().await?;
    assert_eq!(w.delivered(VICTIM), 0, "no forgery was delivered");
    assert_eq!(w.delivered(ALICE), 3);
    assert_eq!(w.delivered(BOB), 2);
    w.assert_nothing_left_for_accounts();
    assert_eq!(w.outside.messages(), 0);
    Ok(())
}

/// Every way of writing `local`'s address that some server might turn
/// into that account: each must either reach the account's own rules or
/// be refused.
fn address_forms(w: &World, local: &str) -> Vec<String> {
    let d = &w.domain;
    let mut forms = vec![
        format!("{local}@{d}."),
        format!("{local}%{d}@{d}"),
        format!("{d}!{local}@{d}"),
        format!("{local}!x@{d}"),
        format!("@relay.example:{local}@{d}"),
        format!("@relay.example,@other.example:{local}@{d}"),
        format!("\"{local}\"@{d}"),
        format!("\"{local}@{d}\"@elsewhere.example"),
        format!("{}@{}", local.to_uppercase(), d.to_uppercase()),
        format!("{local}+tag@{d}"),
        format!("{local}.@{d}"),
        // Postfix would append its own domain (append_at_myorigin).
        local.to_owned(),
    ];
    match &w.mail_domain {
        MailDomain::Ipv4(ip) => forms.extend([
            format!("{local}@[IPv4:{ip}]"),
            format!("{local}@[IPV6:::ffff:{ip}]"),
            format!("{local}@{ip}"),
            {
                let [a, b, c, e] = ip.octets();
                format!("{local}@[{a:03}.{b:03}.{c:03}.{e:03}]")
            },
        ]),
        MailDomain::Name(_) => {
            forms.extend([format!("{local}@{d}.."), format!("{local}@[127.0.0.1]")])
        }
    }
    forms
}

/// Sends `message(form)` to every form of `local` through port 25,
/// `/mxdeliv` and (when `submission`) submission by Alice. Replies may
/// be anything; what counts is where the mail lands.
async fn send_every_form(
    w: &World,
    local: &str,
    name: &str,
    submission: bool,
) -> Result<Vec<String>> {
    let mut outcomes = Vec::new();
    for form in address_forms(w, local) {
        let message = signed(w, name, &form)?;
        let reply = port25(w, REMOTE, &form, &message).await?;
        outcomes.push(format!("port 25 {form}: {} {}", reply.code, reply.text));
        let (status, text) = mxdeliv(w, REMOTE, &[&form], &message, HttpVersion::Http1).await?;
        outcomes.push(format!("mxdeliv {form}: {status} {text}"));
        if submission {
            let alice = w.addr(ALICE);
            let message = test_mail(name, &alice, &form);
            let reply = submit(w, &alice, &alice, &form, &message).await?;
            outcomes.push(format!("submission {form}: {} {}", reply.code, reply.text));
        }
    }
    Ok(outcomes)
}

async fn address_forms_reach_only_the_accounts_rules(mail_domain: &str) -> Result<()> {
    let w = world(mail_domain, &[]).await?;
    // Cleartext to an account that refuses it, and encrypted mail to a
    // switched-off account, in every form.
    let mut outcomes = send_every_form(&w, VICTIM, "plain.eml", false).await?;
    outcomes.extend(send_every_form(&w, DISABLED, "encrypted.eml", true).await?);
    w.settle().await?;
    assert_eq!(
        (w.delivered(VICTIM), w.delivered(DISABLED)),
        (0, 0),
        "delivered despite the account's rules:\n{}",
        outcomes.join("\n")
    );
    w.assert_nothing_left_for_accounts();

    // The doors are open for the canonical form, so the counts above
    // could have seen a delivery.
    let victim = w.addr(VICTIM);
    let message = signed(&w, "encrypted.eml", &victim)?;
    assert_eq!(port25(&w, REMOTE, &victim, &message).await?.code, 250);
    let (status, text) = mxdeliv(&w, REMOTE, &[&victim], &message, HttpVersion::Http2).await?;
    assert_eq!(status, 200, "{text}");
    let alice = w.addr(ALICE);
    let message = test_mail("encrypted.eml", &alice, &victim);
    assert_eq!(
        submit(&w, &alice, &alice, &victim, &message).await?.code,
        250
    );
    w.wait_for_delivered(VICTIM, 3)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_forms_cannot_bypass_per_recipient_rules_on_an_ip_relay() -> Result<()> {
    address_forms_reach_only_the_accounts_rules("127.0.0.1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_forms_cannot_bypass_per_recipient_rules_on_a_domain_relay() -> Result<()> {
    // A punycode domain: its UTF-8 form must not be a way in either.
    address_forms_reach_only_the_accounts_rules("xn--bcher-kva.example").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_forms_of_a_punycode_domain_are_refused() -> Result<()> {
    let w = world("xn--bcher-kva.example", &[]).await?;
    let victim_utf8 = format!("{VICTIM}@bücher.example");
    let message = signed(&w, "plain.eml", &victim_utf8)?;
    let mut client = w.relay.connect_mx().await?;
    let mail_from = client
        .command(&format!("MAIL FROM:<{REMOTE}> SMTPUTF8"))
        .await?;
    assert_eq!(mail_from.code, 250, "{mail_from:?}");
    let rcpt = client.command(&format!("RCPT TO:<{victim_utf8}>")).await?;
    assert!(rcpt.code >= 500, "{rcpt:?}");
    client.quit().await;
    // filtermail-incoming's own SMTP door refuses it as well.
    let filter = w.port("filtermail_smtp_port_incoming");
    let mut client = SmtpClient::connect(filter).await?;
    client.ehlo().await?;
    assert_eq!(
        client
            .command(&format!("MAIL FROM:<{REMOTE}> SMTPUTF8"))
            .await?
            .code,
        250
    );
    let rcpt = client.command(&format!("RCPT TO:<{victim_utf8}>")).await?;
    assert_eq!(rcpt.code, 501, "{rcpt:?}");
    client.quit().await;
    let _ = message;
    w.settle().await?;
    assert_eq!(w.delivered(VICTIM), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_well_formed_address_literals_skip_dkim() -> Result<()> {
    let w = world("127.0.0.1", &[]).await?;
    let victim = w.addr(VICTIM);
    for from in [
        "ceo@[bank.example]",
        "ceo@[IPv4:192.0.2.1]",
        "ceo@[192.000.002.001]",
        "ceo@[192.0.2.1",
        "ceo@[]",
    ] {
        let message = test_mail("encrypted.eml", from, &victim);
        let reply = port25(&w, from, &victim, &message).await?;
        assert!((500..600).contains(&reply.code), "{from}: {reply:?}");
        let (status, text) = mxdeliv(&w, from, &[&victim], &message, HttpVersion::Http1).await?;
        assert_eq!(status, 400, "{from}: {text}");
        assert!(text.starts_with('5'), "{from}: {text}");
    }
    // A domain From without a signature is refused as before.
    let message = test_mail("encrypted.eml", "ceo@bank.example", &victim);
    let reply = port25(&w, "ceo@bank.example", &victim, &message).await?;
    assert_eq!(reply.code, 554, "{reply:?}");
    // Our own users' mail never arrives from outside: a From of this
    // relay (which an IP-only relay could not check with DKIM) is forged.
    let alice = w.addr(ALICE);
    let message = test_mail("encrypted.eml", &alice, &victim);
    assert_eq!(port25(&w, &alice, &victim, &message).await?.code, 550);
    let (status, text) = mxdeliv(&w, &alice, &[&victim], &message, HttpVersion::Http1).await?;
    assert_eq!(status, 400, "{text}");

    w.settle().await?;
    assert_eq!(w.delivered(VICTIM), 0);
    // A real address literal still needs no DKIM.
    for from in [REMOTE_LITERAL, "someone@[IPv6:2001:db8::2]"] {
        let message = test_mail("encrypted.eml", from, &victim);
        assert_eq!(
            port25(&w, from, &victim, &message).await?.code,
            250,
            "{from}"
        );
    }
    w.wait_for_delivered(VICTIM, 2)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_logins_in_other_forms_reach_no_account() -> Result<()> {
    let w = world("127.0.0.1", &[]).await?;
    let victim = w.addr(VICTIM);
    let before = fs::read_dir(w.relay.mail())?.count();
    for form in address_forms(&w, VICTIM) {
        if form.contains('"') || !form.is_ascii() {
            continue;
        }
        let same_account = form == victim.to_uppercase();
        // Someone else's password never opens the victim's mailbox.
        assert!(!w.relay.login(&form, "another-password-1").await?, "{form}");
        // The victim's own password opens it under the one name only.
        assert_eq!(
            w.relay.login(&form, PASSWORD).await?,
            same_account,
            "{form}"
        );
    }
    // And no login made an account under another form.
    assert_eq!(fs::read_dir(w.relay.mail())?.count(), before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dict_sockets_refuse_other_local_users() -> Result<()> {
    let relay = Relay::start(&RelayOptions {
        metadata: true,
        ..RelayOptions::default()
    })?;
    let user = "sockets12@[127.0.0.1]";
    // Dovecot still reaches each dict: login (doveauth), the last-login
    // plugin (lastlogin), METADATA (chatmail-metadata).
    let mut imap = ImapClient::connect(relay.dovecot.imaps_port(), relay.dovecot.cert()).await?;
    assert!(imap.login(user, PASSWORD).await?);
    let set = imap
        .command("SETMETADATA INBOX (/private/devicetoken \"token-1\")")
        .await?;
    assert!(set.contains("OK"), "{set}");
    let (lines, done) = imap
        .command_lines("GETMETADATA INBOX /private/devicetoken")
        .await?;
    assert!(done.contains("OK"), "{done}");
    assert!(
        lines.iter().any(|line| line.contains("token-1")),
        "{lines:?}"
    );
    let password = relay.mail().join(user).join("password");
    let recorded = || -> Result<bool> {
        let modified = fs::metadata(&password)?.modified()?;
        let since_epoch = modified.duration_since(std::time::UNIX_EPOCH)?.as_secs();
        Ok(since_epoch % 86_400 == 0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !recorded()? {
        assert!(
            Instant::now() < deadline,
            "lastlogin recorded the login day"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Any other local user is refused by the socket's permissions.
    // A copy nobody can run, wherever the checkout is.
    let probe = relay_tests::daemon_binary("unix-connect")?;
    for (name, socket) in relay.dict_sockets() {
        let status = Command::new(&probe)
            .arg(&socket)
            .uid(65534)
            .gid(65534)
            .status()?;
        assert_eq!(status.code(), Some(13), "{name}: EACCES for nobody");
        // The probe itself works: root (as Dovecot's auth worker) gets in.
        assert!(
            Command::new(&probe).arg(&socket).status()?.success(),
            "{name}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_never_contacts_internal_addresses() -> Result<()> {
    let t = transport_support::world(&[]).await?;
    // A host inside the relay's network, listening on both ports the
    // transport would use, counting connections.
    let inside = Ipv4Addr::new(127, 0, 0, 2);
    let (smtp_port, https_port) = (relay_tests::free_port()?, relay_tests::free_port()?);
    let connections = relay_tests::black_hole(inside, &[smtp_port, https_port]).await?;
    t.dns.add_mx("inside.test.", 10, "mx.inside.test.");
    t.dns.add_ip("mx.inside.test.", IpAddr::V4(inside));
    // No MX: the name itself, which is inside.
    t.dns.add_ip("implicit.test.", IpAddr::V4(inside));
    let setup = |allow_private| TransportSetup {
        dir: t.dir.path(),
        dns: t.dns.addr(),
        ca_file: &t.ca.ca_path,
        smtp_port,
        https_port,
        allow_private,
        extra_ini: "",
        env: &[],
    };
    let transport = TransportDaemon::start(&setup(false))?;
    let recipients = [
        "a@[127.0.0.2]",
        "a@[IPv6:::ffff:127.0.0.2]",
        "a@[IPv6:::1]",
        "a@inside.test",
        "a@implicit.test",
    ];
    let replies = transport_support::lmtp(&transport, &recipients).await?;
    for (rcpt, reply) in recipients.iter().zip(&replies) {
        assert_eq!(reply.code, 550, "{rcpt}: {reply:?}");
        assert!(
            reply.text.contains("internal addresses"),
            "{rcpt}: {reply:?}"
        );
    }

    // Through the relay: a user's mail to those destinations bounces
    // back to the user, and the host inside hears nothing.
    let w = world(
        "127.0.0.1",
        &[(
            "filtermail_lmtp_port_transport",
            &transport.lmtp_port.to_string(),
        )],
    )
    .await?;
    let alice = w.addr(ALICE);
    for rcpt in ["x@[127.0.0.2]", "x@inside.test"] {
        let message = test_mail("encrypted.eml", &alice, rcpt);
        assert_eq!(submit(&w, &alice, &alice, rcpt, &message).await?.code, 250);
    }
    w.settle().await?;
    let bounces = w.wait_for_delivered(ALICE, 2)?;
    for bounce in bounces {
        let text = relay_tests::read_message(&bounce)?;
        assert!(text.contains("internal addresses"), "{text}");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing was contacted"
    );

    // With filtermail_transport_allow_private the same destination is
    // contacted (the host never answers; the connection is the proof).
    let allowed = TransportDaemon::start(&setup(true))?;
    let attempt = tokio::spawn(async move {
        let _ = transport_support::lmtp(&allowed, &["a@inside.test"]).await;
    });
    transport_support::wait_until("a connection to the host inside", || {
        connections.load(Ordering::SeqCst) > 0
    })
    .await?;
    attempt.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_from_headers_are_refused_both_ways() -> Result<()> {
    let w = world("127.0.0.1", &[]).await?;
    let (alice, bob, victim) = (w.addr(ALICE), w.addr(BOB), w.addr(VICTIM));
    // A second From that a mail client might show instead of the checked
    // one, before or after it.
    let twice = |message: String, other: &str| {
        let second = format!("From: <{other}>\r\n");
        [
            format!("{second}{message}"),
            message.replacen("\r\n\r\n", &format!("\r\n{second}\r\n"), 1),
        ]
    };
    for message in twice(test_mail("encrypted.eml", &alice, &victim), &bob) {
        let reply = submit(&w, &alice, &alice, &victim, &message).await?;
        assert_eq!(reply.code, 500, "{reply:?}");
        assert!(reply.text.contains("500 Invalid FROM header"), "{reply:?}");
    }
    for message in twice(test_mail("encrypted.eml", REMOTE_LITERAL, &victim), REMOTE) {
        let reply = port25(&w, REMOTE_LITERAL, &victim, &message).await?;
        assert_eq!(reply.code, 500, "{reply:?}");
        let (status, text) =
            mxdeliv(&w, REMOTE_LITERAL, &[&victim], &message, HttpVersion::Http1).await?;
        assert_eq!(status, 400, "{text}");
        assert!(text.starts_with("500 Invalid FROM header"), "{text}");
    }
    w.settle().await?;
    assert_eq!(w.delivered(VICTIM), 0);
    Ok(())
}

/// Other relays deliver over TLS only, and users' clients speak TLS 1.3:
/// a cleartext session on port 25 gets no further than MAIL, and a TLS 1.2
/// handshake fails on submission (IMAP: the Delta Chat tests, on the
/// local relay's complete Dovecot configuration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_25_requires_tls_and_clients_tls_1_3() -> Result<()> {
    let w = world("127.0.0.1", &[]).await?;
    let port = w.relay.mx_port().expect("port-25 service");
    let mut client = SmtpClient::connect(port).await?;
    client.ehlo().await?;
    let mail_from = client.command(&format!("MAIL FROM:<{REMOTE}>")).await?;
    assert_eq!(mail_from.code, 530, "{mail_from:?}");
    client.quit().await;

    for (service, port, cert) in [(
        "submission",
        w.relay.submission_port,
        w.relay.postfix.cert(),
    )] {
        let connect = |config: rustls::ClientConfig| async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
                .await
                .map_err(anyhow::Error::from)
        };
        let old = connect(cert.client_config_tls12_only()?).await;
        assert!(old.is_err(), "{service} accepted TLS 1.2");
        // The same client with TLS 1.3 gets in.
        connect(cert.client_config()?).await?;
    }
    assert_eq!(w.delivered(VICTIM), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vrfy_tells_nobody_which_accounts_exist() -> Result<()> {
    let w = world("127.0.0.1", &[]).await?;
    let mut client = w.relay.connect_mx().await?;
    let known = client
        .command(&format!("VRFY <{}>", w.addr(VICTIM)))
        .await?;
    let unknown = client
        .command(&format!("VRFY <{}>", w.addr("nobody123")))
        .await?;
    // Whatever it names, as the relay we replace answers (Postfix alone
    // would apply RCPT's checks: 504 for a bare word, 554 elsewhere).
    let mut others = Vec::new();
    for argument in ["echo", "<echo>", "nobody@example.org", "two words", ""] {
        let reply = client.command(&format!("VRFY {argument}")).await?;
        others.push((argument, reply.code, reply.text));
    }
    // A bare recipient is still refused in a transaction.
    client.command("MAIL FROM:<someone@example.org>").await?;
    let bare_recipient = client.command("RCPT TO:<echo>").await?;
    client.quit().await;
    assert_eq!(
        (known.code, unknown.code),
        (252, 252),
        "{known:?} {unknown:?}"
    );
    assert!(known.text.starts_with("252 2.0.0"), "{known:?}");
    for (argument, code, text) in &others {
        assert_eq!(*code, 252, "VRFY {argument}: {text}");
        assert!(text.starts_with("252 2.0.0"), "VRFY {argument}: {text}");
    }
    assert_eq!(bare_recipient.code, 504, "{bare_recipient:?}");
    Ok(())
}
