//! The fuzz targets: each takes arbitrary bytes to one of our parsers
//! through its public entry point, as a peer would, and checks what must
//! always hold.

use std::cell::RefCell;
use std::path::Path;

use chatmail_config::{Config, MailDomain, canonical_address};
use chatmail_smtp::{DataOutcome, Envelope, Protocol, Reply, SessionConfig, SmtpHandler};
use dovecot_dict::{DictError, DictHandler, ServerLimits, Transaction};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::AsyncWriteExt;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// Real inputs the mutations start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub run: fn(&[u8]),
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "smtp_session",
        seeds: smtp_seeds,
        run: smtp_session,
    },
    Target {
        name: "smtp_reply",
        seeds: reply_seeds,
        run: smtp_reply,
    },
    Target {
        name: "dict_session",
        seeds: dict_seeds,
        run: dict_session,
    },
    Target {
        name: "e2ee_policy",
        seeds: mail_seeds,
        run: e2ee_policy,
    },
    Target {
        name: "e2ee_elision",
        seeds: large_mail_seeds,
        run: e2ee_elision,
    },
    Target {
        name: "dkim_input",
        seeds: mail_seeds,
        run: dkim_input,
    },
    Target {
        name: "mxdeliv_request",
        seeds: mxdeliv_seeds,
        run: mxdeliv_request,
    },
    Target {
        name: "chatmail_ini",
        seeds: ini_seeds,
        run: chatmail_ini,
    },
    Target {
        name: "envelope_address",
        seeds: address_seeds,
        run: envelope_address,
    },
    Target {
        name: "mime_agreement",
        seeds: agreement_seeds,
        run: mime_agreement,
    },
];

/// The target called `name`.
#[must_use]
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|target| target.name == name)
}

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `future` on this thread's runtime (made once).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    RUNTIME.with(|cell| {
        let mut slot = cell.borrow_mut();
        let runtime = slot.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
        });
        runtime.block_on(future)
    })
}

// ---- seeds --------------------------------------------------------------

fn mails() -> Vec<&'static [u8]> {
    vec![
        include_bytes!("../../../tests/data/mail/encrypted.eml"),
        include_bytes!("../../../tests/data/mail/plain.eml"),
        include_bytes!("../../../tests/data/mail/fake-encrypted.eml"),
        include_bytes!("../../../tests/data/mail/literal.eml"),
        include_bytes!("../../../tests/data/mail/securejoin-vc.eml"),
        include_bytes!("../../../tests/data/mail/securejoin-vc-fake.eml"),
        include_bytes!("../../../tests/data/mail/mailer-daemon.eml"),
        include_bytes!("../../../tests/data/mail/mdn.eml"),
        include_bytes!("../../../tests/data/mail/asm.eml"),
    ]
}

fn mail_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = mails().into_iter().map(<[u8]>::to_vec).collect();
    // A signed header block, so DKIM parsing has something to chew on.
    seeds.push(
        b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.org;\r\n \
          s=relay; h=from:to:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n \
          b=dGVzdA==\r\nFrom: <one@example.org>\r\nTo: <two@example.org>\r\n\r\nbody\r\n"
            .to_vec(),
    );
    seeds
}

/// PGP/MIME messages with payloads long enough for the policy to parse
/// them without their middle: one well formed, one whose base64 lines
/// were repeated.
fn large_mail_seeds() -> Vec<Vec<u8>> {
    let well_formed = chatmail_e2ee::sample::pgp_mime(0x2000, 76, "\r\n");
    let mut repeated = Vec::new();
    for line in well_formed.split_inclusive(|&byte| byte == b'\n') {
        repeated.extend_from_slice(line);
        let text = line.trim_ascii_end();
        if text.len() == 76 && !text.contains(&b':') {
            repeated.extend_from_slice(line);
        }
    }
    vec![well_formed, repeated]
}

/// The mails, the large PGP/MIME ones, and forms that parsers read
/// differently (a second Content-Type, a boundary inside a line).
fn agreement_seeds() -> Vec<Vec<u8>> {
    let mut seeds = mail_seeds();
    seeds.extend(large_mail_seeds());
    let encrypted = String::from_utf8_lossy(mails().first().copied().unwrap_or_default())
        .replace("{subject}", "Hi");
    for (from, to) in [
        (
            "Content-Type: multipart/encrypted;",
            "Content-Type: text/plain\nContent-Type: multipart/encrypted;",
        ),
        (
            "Content-Type: application/octet-stream",
            "Content-Transfer-Encoding: base64\nContent-Type: application/octet-stream",
        ),
        ("boundary=", "boundary=\"x\"; boundary="),
        ("\n\n--", "\nx --YFrteb74qSXmggbOxZL9dRnhymywAi\n\n--"),
    ] {
        seeds.push(encrypted.replacen(from, to, 1).into_bytes());
    }
    seeds
}

fn smtp_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for mail in mails() {
        let mut session =
            b"EHLO client.example\r\nMAIL FROM:<one@example.org> SIZE=4000 BODY=8BITMIME\r\n\
            RCPT TO:<two@[127.0.0.1]> NOTIFY=NEVER\r\nRCPT TO:<\"quoted\"@example.org>\r\nDATA\r\n"
                .to_vec();
        session.extend_from_slice(mail);
        session.extend_from_slice(b"\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n");
        seeds.push(session);
    }
    seeds.push(
        b"LHLO postfix\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.c>\r\nRCPT TO:<@x.y:d@e.f>\r\nDATA\r\n..x\r\n.\r\n"
            .to_vec(),
    );
    seeds
}

fn reply_seeds() -> Vec<Vec<u8>> {
    vec![
        b"220 mx.example.org ESMTP Postfix\r\n".to_vec(),
        b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 31457280\r\n250-STARTTLS\r\n\
          250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
            .to_vec(),
        b"550 5.1.1 <x@example.org>: Recipient address rejected\r\n354 go\r\n".to_vec(),
        b"421 4.3.2 Service shutting down\r\n".to_vec(),
    ]
}

fn dict_seeds() -> Vec<Vec<u8>> {
    vec![
        b"H3\t2\t0\tuser@example.org\tauth\n\
          Lshared/passdb/pass\\tword\"user@example.org\tuser@example.org\n\
          Lshared/userdb/user@example.org\t\n\
          I0\t0\tshared/userdb/\t\n"
            .to_vec(),
        b"H3\t2\t0\tuser@[127.0.0.1]\tmetadata-delivery\n\
          B1\tuser@[127.0.0.1]\n\
          S1\tpriv/43f5f508a7ea0366dff30200c15250e3/devicetoken\ttoken-123\n\
          S1\tpriv/43f5f508a7ea0366dff30200c15250e3/messagenew\t1\n\
          U1\tpriv/x/y\nA1\tk\tv\n+1\tk\t5\nC1\tA2\n\
          B2\t\nS2\tshared/last-login/user@example.org\t1709659391\nR2\n"
            .to_vec(),
    ]
}

fn mxdeliv_seeds() -> Vec<Vec<u8>> {
    vec![
        b"x-mail-from: one@example.org\nx-mail-to: <two@[127.0.0.1]>\nx-mail-to: three@[127.0.0.1]\n\n\
          From: one@example.org\nSubject: lf only\n\nbody\r\nmixed\rends\n"
            .to_vec(),
        [b"x-mail-to: a@[127.0.0.1]\n\n".as_slice(), mails().first().copied().unwrap_or_default()]
            .concat(),
    ]
}

fn ini_seeds() -> Vec<Vec<u8>> {
    vec![
        include_bytes!("../../../debian/chatmail.ini").to_vec(),
        b"[params]\nmail_domain = 127.0.0.1\nmax_message_size = 31457280\n\
          notification_retry_base = 500ms\nfiltermail_message_memory = 64M\n\
          dns_resolver = 127.0.0.1:5353\n[other]\nx = y\n"
            .to_vec(),
    ]
}

fn address_seeds() -> Vec<Vec<u8>> {
    [
        "victim@example.org",
        "Victim@Example.ORG.",
        "victim%example.org@example.org",
        "@a.example,@b.example:victim@example.org",
        "\"vic tim\"@example.org",
        "victim@[127.0.0.1]",
        "victim@[IPv6:2001:db8::1]",
        "victim@[IPv4:127.000.000.001]",
        "a!b@xn--bcher-kva.example",
    ]
    .iter()
    .map(|text| text.as_bytes().to_vec())
    .collect()
}

// ---- targets ------------------------------------------------------------

/// Accepts everything, as a filter that lets mail through would.
struct AcceptAll;

impl SmtpHandler for AcceptAll {
    async fn data(&self, envelope: Envelope, message: Vec<u8>) -> DataOutcome {
        assert!(message.len() <= 1 << 16, "the size limit holds");
        DataOutcome::PerRecipient(vec![Reply::OK; envelope.rcpt_to.len()])
    }
}

/// A whole session from a client that sends `input` and hangs up; the
/// first byte picks SMTP or LMTP.
fn smtp_session(input: &[u8]) {
    let protocol = if input.first().is_some_and(|byte| byte.is_multiple_of(2)) {
        Protocol::Smtp
    } else {
        Protocol::Lmtp
    };
    let config = SessionConfig::new(protocol, "fuzz.test", 1 << 16);
    block_on(async {
        let (client, server) = tokio::io::duplex(1 << 16);
        let session = chatmail_smtp::run_session(server, &AcceptAll, &config);
        let ((), out) = tokio::join!(session, talk(client, input));
        // Every reply line is a reply: a code and a separator.
        for line in out
            .split(|&byte| byte == b'\n')
            .filter(|line| !line.is_empty())
        {
            assert!(
                line.len() >= 4 && line.iter().take(3).all(u8::is_ascii_digit),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    });
}

/// A client that sends `input`, hangs up its sending side, and reads
/// every answer meanwhile (a client that does not read would only test
/// the write timeouts).
async fn talk(client: tokio::io::DuplexStream, input: &[u8]) -> Vec<u8> {
    let (mut reading, mut writing) = tokio::io::split(client);
    let send = async {
        let _ = writing.write_all(input).await;
        let _ = writing.shutdown().await;
    };
    let receive = async {
        let mut out = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut reading, &mut out).await;
        out
    };
    let ((), out) = tokio::join!(send, receive);
    out
}

/// Replies of a remote server, read one after the other.
fn smtp_reply(input: &[u8]) {
    block_on(async {
        let mut reader = tokio::io::BufReader::new(input);
        for _ in 0..64 {
            match chatmail_smtp::read_reply(&mut reader).await {
                Ok((_, raw)) => assert!(raw.len() <= chatmail_smtp::MAX_REPLY_BYTES),
                Err(_) => break,
            }
        }
    });
}

/// A dict that answers lookups and takes every commit.
struct AnswerAll;

impl DictHandler for AnswerAll {
    async fn lookup(&self, key: &str, _user: &str) -> Result<Option<String>, DictError> {
        Ok(key
            .len()
            .is_multiple_of(2)
            .then(|| format!("value\tof\n{key}")))
    }

    async fn commit(&self, transaction: Transaction) -> Result<(), DictError> {
        if transaction.changes.len().is_multiple_of(3) {
            Err(DictError::new("refused"))
        } else {
            Ok(())
        }
    }
}

/// A Dovecot dict connection sending `input`.
fn dict_session(input: &[u8]) {
    block_on(async {
        let (client, server) = tokio::io::duplex(1 << 16);
        let limits = ServerLimits::default();
        let serving = dovecot_dict::serve_connection(
            server,
            &AnswerAll,
            &limits,
            tokio_util::sync::CancellationToken::new(),
        );
        tokio::join!(serving, talk(client, input));
    });
}

/// Calls `check` for mail in both directions, with one envelope.
fn both_directions(mut check: impl FnMut(&chatmail_e2ee::Envelope<'_>, chatmail_e2ee::Direction)) {
    let rcpt_to = vec!["two@example.org".to_owned()];
    let envelope = chatmail_e2ee::Envelope {
        mail_from: "one@example.org",
        rcpt_to: &rcpt_to,
    };
    for direction in [
        chatmail_e2ee::Direction::Incoming,
        chatmail_e2ee::Direction::Outgoing,
    ] {
        check(&envelope, direction);
    }
}

/// The encryption policy and the From header, both directions.
fn e2ee_policy(input: &[u8]) {
    both_directions(|envelope, direction| {
        let _ = chatmail_e2ee::classify(input, envelope, direction);
    });
    let _ = chatmail_e2ee::from_header_address(input);
}

/// The policy's parse of a long payload without its middle decides as
/// the parse of the whole message does.
fn e2ee_elision(input: &[u8]) {
    both_directions(|envelope, direction| {
        assert_eq!(
            chatmail_e2ee::classify(input, envelope, direction),
            chatmail_e2ee::classify_whole(input, envelope, direction),
            "the parse without the payload's middle decided otherwise"
        );
    });
}

/// Whatever the policy lets through, Delta Chat's MIME parser reads the
/// same way (see `chatmail_e2ee::oracle`).
fn mime_agreement(input: &[u8]) {
    let rcpt_to = vec!["two@example.org".to_owned()];
    let envelope = chatmail_e2ee::Envelope {
        mail_from: "one@example.org",
        rcpt_to: &rcpt_to,
    };
    if let Some(what) = chatmail_e2ee::oracle::disagreement(input, &envelope) {
        panic!("the policy and mailparse disagree: {what}");
    }
}

/// What DKIM verification parses before it asks DNS anything.
fn dkim_input(input: &[u8]) {
    if let Some(message) = mail_auth::AuthenticatedMessage::parse(input) {
        let _ = message.dkim_headers.len();
        let _ = message.from();
    }
}

/// An `/mxdeliv` request: header lines, an empty line, the body. The
/// envelope is checked as the HTTP door does; the body converted in two
/// chunks split where the first byte says.
fn mxdeliv_request(input: &[u8]) {
    let split = input
        .windows(2)
        .position(|pair| pair == b"\n\n")
        .unwrap_or(input.len());
    let (head, body) = input.split_at(split);
    let mut headers = HeaderMap::new();
    for line in head.split(|&byte| byte == b'\n') {
        let Some(colon) = line.iter().position(|&byte| byte == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(value.get(1..).unwrap_or_default()),
        ) {
            headers.append(name, value);
        }
    }
    thread_local! {
        static FILTER: filtermail_incoming::IncomingFilter = {
            let config = Config::from_ini_str(
                "[params]\nmail_domain = 127.0.0.1\n",
                Path::new("fuzz.ini"),
            )
            .expect("a valid config");
            filtermail_incoming::IncomingFilter::new(
                &config,
                filtermail_incoming::OriginCheck::Skip,
                chatmail_metrics::FilterMetrics::new(chatmail_metrics::Direction::Incoming),
            )
        };
    }
    FILTER.with(|filter| {
        if let Ok(envelope) = filtermail_incoming::http::envelope(&headers, filter) {
            for rcpt in &envelope.rcpt_to {
                assert!(
                    rcpt.ends_with("@[127.0.0.1]"),
                    "only local recipients: {rcpt}"
                );
            }
        }
    });
    let cut = usize::from(body.first().copied().unwrap_or(0)).min(body.len());
    let (first, second) = body.split_at(cut);
    let mut message = Vec::new();
    let mut previous = 0;
    filtermail_incoming::http::append_crlf(&mut message, first, &mut previous);
    filtermail_incoming::http::append_crlf(&mut message, second, &mut previous);
    for (index, &byte) in message.iter().enumerate() {
        if byte == b'\n' {
            assert!(
                index > 0 && message.get(index - 1) == Some(&b'\r'),
                "a bare LF"
            );
        }
    }
}

/// chatmail.ini as any daemon reads it.
fn chatmail_ini(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    if let Ok(config) = Config::from_ini_str(&text, Path::new("fuzz.ini")) {
        assert!(config.filtermail_message_memory >= config.max_message_size);
    }
}

/// Envelope addresses for a domain relay and an IP-only relay: what is
/// accepted is canonical (a second pass changes nothing).
fn envelope_address(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let _ = MailDomain::parse(&text);
    for domain in ["example.org", "127.0.0.1"] {
        let Ok(domain) = MailDomain::parse(domain) else {
            continue;
        };
        if let Ok(address) = canonical_address(&text, &domain) {
            let again = canonical_address(address.as_str(), &domain);
            assert_eq!(again.as_ref(), Ok(&address), "canonical is stable");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The elision target starts from a message the policy carries.
    #[test]
    fn the_large_seed_is_encrypted() {
        let seeds = large_mail_seeds();
        let mut verdicts = Vec::new();
        both_directions(|envelope, direction| {
            for seed in &seeds {
                verdicts.push(chatmail_e2ee::classify(seed, envelope, direction).is_allowed());
            }
        });
        assert_eq!(verdicts, [true, false, true, false]);
    }
}
