//! Strict DKIM as filtermail-incoming checks it, against keys served by a
//! DNS server on loopback and messages signed with mail-auth.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use chatmail_config::Config;
use filtermail_incoming::{DkimFailure, DkimVerifier};
use relay_tests::{DkimKey, DnsMode, DnsServer};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn message(from: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Alice <{from}>\r\nTo: <bob@[127.0.0.1]>\r\nSubject: hello\r\n\
         Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\n\
         \r\n{body}\r\n"
    )
    .into_bytes()
}

fn verifier(dns: &DnsServer) -> DkimVerifier {
    verifier_with(
        dns,
        // The test zone is unsigned and has no signed parent that could
        // prove it insecure, so validation is off.
        "dns_dnssec_validation = no\n",
    )
}

fn verifier_with(dns: &DnsServer, extra_ini: &str) -> DkimVerifier {
    let ini = format!(
        "[params]\nmail_domain = 127.0.0.1\ndns_resolver = {}\n{extra_ini}",
        dns.addr()
    );
    let config = Config::from_ini_str(&ini, Path::new("test.ini")).expect("test config");
    DkimVerifier::new(
        chatmail_dns::resolver(&config, chatmail_dns::NegativeAnswers::Forgotten)
            .expect("resolver"),
    )
}

async fn setup(key: &DkimKey) -> (DnsServer, DkimVerifier) {
    let dns = DnsServer::start(LOOPBACK).await.expect("DNS server");
    dns.add_txt(&key.record_name(), &[&key.record()]);
    let verifier = verifier(&dns);
    (dns, verifier)
}

/// A refusal for missing signatures by the From domain, whose detail
/// mentions `expected`.
fn assert_missing(result: Result<(), DkimFailure>, expected: &str) {
    match result {
        Err(DkimFailure::Missing(detail)) => assert!(
            detail.contains(expected),
            "detail {detail:?} should mention {expected:?}"
        ),
        other => panic!("expected a missing signature, got {other:?}"),
    }
}

fn assert_invalid(result: Result<(), DkimFailure>, expected: &str) {
    match result {
        Err(DkimFailure::Invalid(reason)) => assert!(
            reason.to_lowercase().contains(&expected.to_lowercase()),
            "reason {reason:?} should mention {expected:?}"
        ),
        other => panic!("expected a refusal mentioning {expected:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn aligned_rsa_and_ed25519_signatures_pass() {
    for key in [
        DkimKey::rsa("example.org", "rsa").unwrap(),
        DkimKey::ed25519("example.org", "ed").unwrap(),
    ] {
        let (_dns, verifier) = setup(&key).await;
        let signed = key.sign(&message("alice@example.org", "hi")).unwrap();
        verifier.verify(&signed, "example.org").await.unwrap();
        // The From domain is compared without regard to case.
        verifier.verify(&signed, "EXAMPLE.org").await.unwrap();
    }
}

#[tokio::test]
async fn signature_of_another_domain_is_refused() {
    let key = DkimKey::rsa("other.org", "s1").unwrap();
    let (_dns, verifier) = setup(&key).await;
    let signed = key.sign(&message("alice@example.org", "hi")).unwrap();
    assert_missing(
        verifier.verify(&signed, "example.org").await,
        "other domains than example.org",
    );
    // A subdomain is another domain too.
    let key = DkimKey::ed25519("mail.example.org", "s1").unwrap();
    let (_dns, verifier) = setup(&key).await;
    let signed = key.sign(&message("alice@example.org", "hi")).unwrap();
    assert_missing(
        verifier.verify(&signed, "example.org").await,
        "other domains",
    );
}

#[tokio::test]
async fn body_changed_after_signing_is_refused() {
    let key = DkimKey::rsa("example.org", "s1").unwrap();
    let (_dns, verifier) = setup(&key).await;
    let signed = key.sign(&message("alice@example.org", "pay 10")).unwrap();
    let text = String::from_utf8(signed).unwrap();
    let tampered = text.replace("pay 10", "pay 99");
    assert_invalid(
        verifier.verify(tampered.as_bytes(), "example.org").await,
        "body",
    );
}

#[tokio::test]
async fn changed_signed_header_is_refused() {
    let key = DkimKey::ed25519("example.org", "s1").unwrap();
    let (_dns, verifier) = setup(&key).await;
    let signed = key.sign(&message("alice@example.org", "hi")).unwrap();
    let text = String::from_utf8(signed).unwrap();
    let tampered = text.replace("Subject: hello", "Subject: urgent");
    assert_invalid(
        verifier.verify(tampered.as_bytes(), "example.org").await,
        "verif",
    );
}

/// A valid signature of the domain that leaves From out could be put on
/// a message with any From of that domain: it does not count.
#[tokio::test]
async fn signature_that_does_not_sign_from_is_refused() {
    for key in [
        DkimKey::rsa("example.org", "s1").unwrap(),
        DkimKey::ed25519("example.org", "s2").unwrap(),
    ] {
        let (_dns, verifier) = setup(&key).await;
        let signed = key
            .sign_headers(
                &message("alice@example.org", "hi"),
                &["to", "subject", "date"],
            )
            .unwrap();
        let text = String::from_utf8(signed).unwrap();
        let header_end = text.find("b=").expect("a signature");
        assert!(
            !text[..header_end].to_lowercase().contains("from"),
            "{text}"
        );
        let replayed = text.replace(
            "From: Alice <alice@example.org>",
            "From: CEO <ceo@example.org>",
        );
        assert_invalid(
            verifier.verify(replayed.as_bytes(), "example.org").await,
            "signs the From header",
        );
        assert_invalid(
            verifier.verify(text.as_bytes(), "example.org").await,
            "From",
        );
    }
}

#[tokio::test]
async fn expired_signature_is_refused() {
    let key = DkimKey::rsa("example.org", "s1").unwrap();
    let (_dns, verifier) = setup(&key).await;
    let signed = key
        .sign_expiring(&message("alice@example.org", "hi"), 1)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_invalid(verifier.verify(&signed, "example.org").await, "expired");
}

#[tokio::test]
async fn missing_signature_is_refused() {
    let dns = DnsServer::start(LOOPBACK).await.unwrap();
    let verifier = verifier(&dns);
    assert_missing(
        verifier
            .verify(&message("alice@example.org", "hi"), "example.org")
            .await,
        "",
    );
}

#[tokio::test]
async fn unpublished_key_is_refused_and_not_remembered() {
    let key = DkimKey::rsa("example.org", "late").unwrap();
    let dns = DnsServer::start(LOOPBACK).await.unwrap();
    let verifier = verifier(&dns);
    let signed = key.sign(&message("alice@example.org", "hi")).unwrap();
    assert!(matches!(
        verifier.verify(&signed, "example.org").await,
        Err(DkimFailure::Invalid(_))
    ));
    // Published a moment later: found at once, as nothing negative is cached.
    dns.add_txt(&key.record_name(), &[&key.record()]);
    verifier.verify(&signed, "example.org").await.unwrap();
}

#[tokio::test]
async fn unanswered_dns_is_a_temporary_failure() {
    // Ed25519 keys are fetched by our own lookup first (see dkim_key.rs):
    // a failure must read the same, and cost no second round of queries.
    let mut queries = Vec::new();
    for mode in [DnsMode::Silent, DnsMode::ServFail] {
        for key in [
            DkimKey::rsa("example.org", "s1").unwrap(),
            DkimKey::ed25519("example.org", "s1").unwrap(),
        ] {
            let (dns, verifier) = setup(&key).await;
            dns.set_mode(mode);
            let signed = key.sign(&message("alice@example.org", "hi")).unwrap();
            let result = verifier.verify(&signed, "example.org").await;
            assert!(
                matches!(result, Err(DkimFailure::Temporary(_))),
                "{mode:?}: got {result:?}"
            );
            queries.push(dns.queries());
        }
    }
    assert!(queries.iter().all(|&count| count > 0), "{queries:?}");
    assert_eq!(queries[0], queries[1], "silent: RSA and Ed25519 queries");
    assert_eq!(queries[2], queries[3], "SERVFAIL: RSA and Ed25519 queries");
}

#[tokio::test]
async fn cached_key_survives_a_dns_outage() {
    let key = DkimKey::ed25519("example.org", "s1").unwrap();
    let (dns, verifier) = setup(&key).await;
    let signed = key.sign(&message("alice@example.org", "hi")).unwrap();
    verifier.verify(&signed, "example.org").await.unwrap();
    assert_eq!(verifier.cached_keys(), 1);
    dns.set_mode(DnsMode::Silent);
    let started = Instant::now();
    verifier.verify(&signed, "example.org").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn key_records_in_unusual_forms_work() {
    // Ed25519 keys are read by our own code (for dalek), RSA by mail-auth.
    for (key, k) in [
        (DkimKey::rsa("example.org", "s1").unwrap(), "rsa"),
        (DkimKey::ed25519("example.org", "s1").unwrap(), "ed25519"),
    ] {
        let public_key = key.public_key();
        let (first, second) = public_key.split_at(public_key.len() / 2);
        let upper = k.to_uppercase();
        let mut forms: Vec<Vec<String>> = vec![
            // Split into several character strings, as long keys must be.
            vec![format!("v=DKIM1; k={k}; p={first}"), second.to_owned()],
            // Stray whitespace and line breaks inside the key.
            vec![format!("v=DKIM1;  k={k};\n\tp={first}\n {second} ")],
            // No v= tag, the key type in capitals, tags in another order.
            vec![format!("p={public_key} ; k = {upper}")],
        ];
        if k == "rsa" {
            // Only p=: RSA is the default key type.
            forms.push(vec![format!("p={public_key}")]);
        }
        for form in forms {
            let dns = DnsServer::start(LOOPBACK).await.unwrap();
            let strings: Vec<&str> = form.iter().map(String::as_str).collect();
            dns.add_txt(&key.record_name(), &strings);
            let verifier = verifier(&dns);
            let signed = key.sign(&message("alice@example.org", "hi")).unwrap();
            verifier
                .verify(&signed, "example.org")
                .await
                .unwrap_or_else(|error| panic!("record {form:?}: {error:?}"));
        }
    }
}

#[tokio::test]
async fn ed25519_signature_needs_the_published_key() {
    let signer = DkimKey::ed25519("example.org", "s1").unwrap();
    let other = DkimKey::ed25519("example.org", "s1").unwrap();
    let signed = signer.sign(&message("alice@example.org", "hi")).unwrap();
    // Another Ed25519 key, an RSA key, and no key at all under the name.
    let rsa = DkimKey::rsa("example.org", "s1").unwrap();
    for (record, expected) in [
        (other.record(), "does not verify"),
        (format!("v=DKIM1; k=ed25519; p={}", rsa.public_key()), ""),
        ("v=DKIM1; k=ed25519; p=".to_owned(), ""),
    ] {
        let dns = DnsServer::start(LOOPBACK).await.unwrap();
        dns.add_txt(&signer.record_name(), &[&record]);
        let verifier = verifier(&dns);
        assert_invalid(verifier.verify(&signed, "example.org").await, expected);
    }
}

#[tokio::test]
async fn one_valid_aligned_signature_among_others_is_enough() {
    let good = DkimKey::ed25519("example.org", "good").unwrap();
    let foreign = DkimKey::rsa("list.example.net", "list").unwrap();
    let (dns, verifier) = setup(&good).await;
    dns.add_txt(&foreign.record_name(), &[&foreign.record()]);
    let signed = good.sign(&message("alice@example.org", "hi")).unwrap();
    let signed = foreign.sign(&signed).unwrap();
    verifier.verify(&signed, "example.org").await.unwrap();
}

#[tokio::test]
async fn keys_from_a_signed_zone_are_validated() {
    let key = DkimKey::ed25519("example.org", "s1").unwrap();
    let dns = DnsServer::start(LOOPBACK).await.unwrap();
    dns.add_txt(&key.record_name(), &[&key.record()]);
    let anchor = dns.sign_zone("example.org.");
    let dir = tempfile::tempdir().unwrap();
    let anchor_file = dir.path().join("anchor.keys");
    std::fs::write(&anchor_file, anchor).unwrap();
    let ini = format!(
        "dns_dnssec_validation = yes\ndns_trust_anchor = {}\n",
        anchor_file.display()
    );
    let signed = key.sign(&message("alice@example.org", "hi")).unwrap();
    verifier_with(&dns, &ini)
        .verify(&signed, "example.org")
        .await
        .unwrap();

    // A forged answer (signatures that do not verify) is never trusted:
    // the key cannot be had, which is a temporary failure, not a pass.
    dns.break_signatures();
    let result = verifier_with(&dns, &ini)
        .verify(&signed, "example.org")
        .await;
    match result {
        Err(DkimFailure::Temporary(reason)) => assert!(reason.contains("DNSSEC"), "{reason}"),
        other => panic!("expected a temporary DNSSEC failure, got {other:?}"),
    }
}
