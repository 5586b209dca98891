//! The session engine over in-memory streams, asserting exact transcripts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatmail_smtp::{
    DataOutcome, Envelope, Protocol, Reply, SessionConfig, SmtpHandler, run_session,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct Recorder {
    messages: Mutex<Vec<(Envelope, Vec<u8>)>>,
    slow: bool,
}

impl SmtpHandler for Recorder {
    async fn mail_from(&self, sender: &str) -> Result<String, Reply> {
        if sender == "blocked@example.org" {
            return Err(Reply::new(450, "4.7.1", "Slow down"));
        }
        Ok(sender.to_owned())
    }

    /// Records recipients in lower case, as a handler that canonicalises.
    async fn rcpt_to(&self, _envelope: &Envelope, recipient: &str) -> Result<String, Reply> {
        if recipient.starts_with("bad") {
            return Err(Reply::new(550, "5.1.1", "No such user"));
        }
        Ok(recipient.to_ascii_lowercase())
    }

    async fn data(&self, envelope: Envelope, message: Vec<u8>) -> DataOutcome {
        if self.slow {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let recipients = envelope.rcpt_to.clone();
        if let Ok(mut messages) = self.messages.lock() {
            messages.push((envelope, message));
        }
        if recipients.len() > 1 {
            DataOutcome::PerRecipient(
                recipients
                    .iter()
                    .map(|rcpt| Reply::owned(250, "2.0.0", format!("<{rcpt}> delivered")))
                    .collect(),
            )
        } else {
            DataOutcome::Message(Reply::new(250, "2.0.0", "Queued"))
        }
    }
}

fn config(protocol: Protocol) -> SessionConfig {
    let mut config = SessionConfig::new(protocol, "filter.test", 100);
    config.max_errors = 5;
    config
}

async fn transcript(handler: &Recorder, config: &SessionConfig, input: &[u8]) -> String {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let session = run_session(server, handler, config);
    let talk = async {
        client.write_all(input).await.expect("write");
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.expect("read");
        String::from_utf8(out).expect("utf8")
    };
    let ((), out) = tokio::join!(session, talk);
    out
}

const EHLO_REPLY: &str = "250-filter.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 100\r\n\
                          250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 XFORWARD ADDR\r\n";

#[tokio::test]
async fn smtp_transaction_with_every_postfix_parameter() {
    let handler = Recorder::default();
    let out = transcript(
        &handler,
        &config(Protocol::Smtp),
        b"EHLO client\r\n\
          MAIL FROM:<a@example.org> SIZE=42 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc\r\n\
          RCPT TO:<B@Example.ORG> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.org\r\n\
          DATA\r\n\
          Subject: x\r\n\r\n..dot\r\nline\r\n.\r\nQUIT\r\n",
    )
    .await;
    assert_eq!(
        out,
        format!(
            "220 filter.test ESMTP\r\n{EHLO_REPLY}250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n\
             354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Queued\r\n221 2.0.0 Bye\r\n"
        )
    );
    let messages = handler.messages.lock().expect("lock");
    let (envelope, message) = messages.first().expect("one message");
    assert_eq!(envelope.sender(), "a@example.org");
    // The transaction records the recipient as the handler returned it.
    assert_eq!(envelope.rcpt_to, ["b@example.org"]);
    assert_eq!(message, b"Subject: x\r\n\r\n.dot\r\nline\r\n");
}

#[tokio::test]
async fn lmtp_answers_once_per_accepted_recipient() {
    let handler = Recorder::default();
    let out = transcript(
        &handler,
        &config(Protocol::Lmtp),
        b"LHLO postfix\r\nMAIL FROM:<>\r\nRCPT TO:<x@a.org>\r\nRCPT TO:<bad@a.org>\r\n\
          RCPT TO:<y@b.org>\r\nDATA\r\nhi\r\n.\r\n\
          MAIL FROM:<s@a.org>\r\nRCPT TO:<z@a.org>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"220 filter.test LMTP"));
    let tail: Vec<&str> = lines.iter().skip(8).copied().collect();
    assert_eq!(
        tail,
        [
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "550 5.1.1 No such user",
            "250 2.1.5 Recipient OK",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 <x@a.org> delivered",
            "250 2.0.0 <y@b.org> delivered",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Queued",
            "221 2.0.0 Bye",
        ]
    );
    assert!(out.contains("250-filter.test\r\n"), "LHLO answered: {out}");
}

#[tokio::test]
async fn wrong_greeting_for_the_protocol() {
    let handler = Recorder::default();
    let out = transcript(&handler, &config(Protocol::Lmtp), b"EHLO x\r\nQUIT\r\n").await;
    assert!(out.contains("500 5.5.1"), "{out}");
    let out = transcript(
        &handler,
        &config(Protocol::Smtp),
        b"LHLO x\r\nHELO x\r\nQUIT\r\n",
    )
    .await;
    assert!(out.contains("500 5.5.1"), "{out}");
    assert!(out.contains("250 filter.test\r\n"), "{out}");
}

#[tokio::test]
async fn command_sequence_errors() {
    let handler = Recorder::default();
    let mut lenient = config(Protocol::Smtp);
    lenient.max_errors = 20;
    let out = transcript(
        &handler,
        &lenient,
        b"MAIL FROM:<a@b.c>\r\nEHLO x\r\nRCPT TO:<a@b.c>\r\nDATA\r\nMAIL FROM:<a@b.c>\r\n\
          MAIL FROM:<a@b.c>\r\nDATA\r\nRSET\r\nRCPT TO:<a@b.c>\r\nNOOP\r\nVRFY x\r\nQUIT\r\n",
    )
    .await;
    let codes: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("250-"))
        .map(|l| &l[..3])
        .collect();
    assert_eq!(
        codes,
        [
            "220", "503", "250", "503", "503", "250", "503", "503", "250", "503", "250", "252",
            "221"
        ]
    );
    assert!(handler.messages.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn sender_refusal_from_the_handler() {
    let handler = Recorder::default();
    let out = transcript(
        &handler,
        &config(Protocol::Smtp),
        b"EHLO x\r\nMAIL FROM:<blocked@example.org>\r\nMAIL FROM:<ok@example.org>\r\nQUIT\r\n",
    )
    .await;
    assert!(
        out.contains("450 4.7.1 Slow down\r\n250 2.1.0 Sender OK\r\n"),
        "{out}"
    );
}

#[tokio::test]
async fn long_lines_and_unknown_commands_are_errors_not_disconnects() {
    let handler = Recorder::default();
    let mut input = b"EHLO x\r\nNOOP ".to_vec();
    input.extend(std::iter::repeat_n(b'a', 5000));
    input.extend_from_slice(b"\r\nFOO\r\nMAIL FROM:<a@b.c> XYZZY=1\r\nNOOP\r\nQUIT\r\n");
    let out = transcript(&handler, &config(Protocol::Smtp), &input).await;
    assert!(out.contains("555 5.5.4"), "{out}");
    assert!(out.contains("500 5.5.2 Line too long"), "{out}");
    assert!(out.contains("500 5.5.1 Unknown command"), "{out}");
    assert!(out.ends_with("250 2.0.0 OK\r\n221 2.0.0 Bye\r\n"), "{out}");

    // A long line that arrives in many small pieces is never buffered.
    let (client, server) = tokio::io::duplex(64);
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let config = config(Protocol::Smtp);
    let session = run_session(server, &handler, &config);
    let write = async {
        to_server
            .write_all(b"EHLO x\r\nNOOP ")
            .await
            .expect("write");
        for _ in 0..1000 {
            to_server.write_all(&[b'b'; 100]).await.expect("write");
        }
        to_server.write_all(b"\r\nQUIT\r\n").await.expect("write");
    };
    let read = async {
        let mut out = Vec::new();
        from_server.read_to_end(&mut out).await.expect("read");
        String::from_utf8(out).expect("utf8")
    };
    let ((), (), out) = tokio::join!(session, write, read);
    assert!(
        out.ends_with("500 5.5.2 Line too long\r\n221 2.0.0 Bye\r\n"),
        "{out}"
    );
}

#[tokio::test]
async fn too_many_errors_close_the_connection() {
    let handler = Recorder::default();
    let out = transcript(&handler, &config(Protocol::Smtp), &b"FOO\r\n".repeat(50)).await;
    assert!(
        out.ends_with("421 4.7.0 Too many errors, closing connection\r\n"),
        "{out}"
    );
    assert_eq!(out.matches("500 5.5.1").count(), 6);
}

#[tokio::test]
async fn oversized_message_gets_552_and_the_session_goes_on() {
    let handler = Recorder::default();
    let mut input = b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n".to_vec();
    for _ in 0..100 {
        input.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    input.extend_from_slice(b".\r\nMAIL FROM:<a@b.c> SIZE=1000\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nsmall\r\n.\r\nQUIT\r\n");
    let out = transcript(&handler, &config(Protocol::Smtp), &input).await;
    assert_eq!(
        out.matches("552 Message exceeds maximum size").count(),
        2,
        "{out}"
    );
    assert!(out.contains("250 2.0.0 Queued"), "{out}");
    let messages = handler.messages.lock().expect("lock");
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages.first().map(|m| m.1.as_slice()),
        Some(&b"small\r\n"[..])
    );
}

#[tokio::test]
async fn bare_lf_smuggling_yields_no_second_message() {
    let handler = Recorder::default();
    let out = transcript(
        &handler,
        &config(Protocol::Smtp),
        b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nreal\r\n\n.\r\n\
          MAIL FROM:<evil@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n",
    )
    .await;
    assert!(
        out.contains("550 5.5.2 Message contains a bare <CR> or <LF>"),
        "{out}"
    );
    assert!(
        handler.messages.lock().expect("lock").is_empty(),
        "nothing accepted"
    );
    assert!(out.ends_with("221 2.0.0 Bye\r\n"), "{out}");
}

#[tokio::test(start_paused = true)]
async fn idle_client_times_out() {
    let handler = Recorder::default();
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let config = config(Protocol::Smtp);
    let session = run_session(server, &handler, &config);
    let talk = async {
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.expect("read");
        String::from_utf8(out).expect("utf8")
    };
    let ((), out) = tokio::join!(session, talk);
    assert!(
        out.ends_with("421 4.4.2 Timeout, closing connection\r\n"),
        "{out}"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_check_becomes_a_temporary_failure() {
    let handler = Arc::new(Recorder {
        slow: true,
        ..Recorder::default()
    });
    let out = transcript(
        &handler,
        &config(Protocol::Smtp),
        b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
    )
    .await;
    assert!(out.contains("451 4.4.7"), "{out}");
}

#[tokio::test]
async fn data_that_starts_with_a_dot() {
    let handler = Recorder::default();
    let out = transcript(
        &handler,
        &config(Protocol::Smtp),
        b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n.\r\n\
          MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n..first\r\n.\r\nQUIT\r\n",
    )
    .await;
    assert_eq!(out.matches("250 2.0.0 Queued").count(), 2, "{out}");
    let messages = handler.messages.lock().expect("lock");
    let bodies: Vec<&[u8]> = messages.iter().map(|(_, body)| body.as_slice()).collect();
    assert_eq!(bodies, [&b""[..], b".first\r\n"]);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_reading_lets_go_of_its_slot() {
    let handler = Recorder::default();
    let (mut client, server) = tokio::io::duplex(64);
    let config = config(Protocol::Smtp);
    let started = tokio::time::Instant::now();
    let session = run_session(server, &handler, &config);
    let flood = async {
        // Commands that are answered, but the answers are never read.
        let _ = client.write_all(&b"NOOP\r\n".repeat(1000)).await;
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = session => {}
        () = flood => unreachable!("the flood never ends"),
    }
    let waited = started.elapsed();
    assert!(waited >= config.write_timeout, "{waited:?}");
    assert!(waited < config.write_timeout * 2, "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_session_ends_at_its_deadline_however_busy() {
    let handler = Recorder::default();
    let (client, server) = tokio::io::duplex(1 << 16);
    let config = config(Protocol::Smtp);
    let started = tokio::time::Instant::now();
    let session = async {
        run_session(server, &handler, &config).await;
        started.elapsed()
    };
    let talk = async {
        let (read, mut write) = tokio::io::split(client);
        let mut read = tokio::io::BufReader::new(read);
        let mut last = String::new();
        loop {
            let mut line = String::new();
            match tokio::io::AsyncBufReadExt::read_line(&mut read, &mut line).await {
                Ok(0) | Err(_) => return last,
                Ok(_) => last = line,
            }
            // Just within the command timeout, every time.
            tokio::time::sleep(config.command_timeout - Duration::from_secs(1)).await;
            let _ = write.write_all(b"NOOP\r\n").await;
        }
    };
    let (lasted, last) = tokio::join!(session, talk);
    assert_eq!(last, "421 4.4.2 Session too long, closing connection\r\n");
    assert!(lasted >= config.session_deadline, "{lasted:?}");
    assert!(
        lasted < config.session_deadline + config.command_timeout,
        "{lasted:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn message_bytes_stay_within_the_daemons_budget() {
    let handler = Recorder {
        slow: true,
        ..Recorder::default()
    };
    let mut config = SessionConfig::new(Protocol::Smtp, "filter.test", 1 << 20);
    config.budget = chatmail_daemon::MessageBudget::with_wait(128 * 1024, Duration::from_secs(5));
    let message = |size: usize| {
        let mut input = b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', size));
        input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        input
    };
    // The first message is held by a slow check; the second waits for
    // the budget, then gets a 4xx; the client may try again later.
    let input = message(100 * 1024);
    let first = transcript(&handler, &config, &input);
    let second = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        transcript(&handler, &config, &input).await
    };
    let (first, second) = tokio::join!(first, second);
    assert!(first.contains("451 4.4.7"), "{first}");
    assert!(
        second.contains("452 4.3.1 Insufficient system storage"),
        "{second}"
    );
    assert_eq!(config.budget.in_use(), 0, "all given back");
}

/// A declared size reserves nothing: only the bytes that arrive are
/// held, so a peer announcing much and sending little holds little.
#[tokio::test(start_paused = true)]
async fn a_declared_size_reserves_nothing() {
    let handler = Recorder::default();
    let mut config = SessionConfig::new(Protocol::Smtp, "filter.test", 1 << 20);
    config.budget = chatmail_daemon::MessageBudget::with_wait(128 * 1024, Duration::from_secs(5));
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let session = run_session(server, &handler, &config);
    let talk = async {
        client
            .write_all(b"EHLO x\r\nMAIL FROM:<a@b.c> SIZE=1000000\r\nRCPT TO:<d@e.f>\r\nDATA\r\nab")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let held = config.budget.in_use();
        client.write_all(b"\r\n.\r\nQUIT\r\n").await.expect("write");
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.expect("read");
        (held, String::from_utf8(out).expect("utf8"))
    };
    let ((), (held, out)) = tokio::join!(session, talk);
    assert!(out.contains("354"), "{out}");
    assert!(out.contains("250 2.0.0 Queued"), "{out}");
    assert!(
        held <= 64 * 1024,
        "one step for two bytes, not the SIZE: {held}"
    );
}

/// A body that averages less than the minimum rate after the grace
/// period is cut off with a 4xx, whatever the data timeout.
#[tokio::test(start_paused = true)]
async fn a_trickling_body_is_cut_off() {
    let handler = Recorder::default();
    let mut config = SessionConfig::new(Protocol::Smtp, "filter.test", 1 << 20);
    config.min_rate = chatmail_smtp::MinRate {
        bytes_per_second: 1024,
        grace: Duration::from_secs(10),
    };
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let session = run_session(server, &handler, &config);
    let talk = async {
        client
            .write_all(b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n")
            .await
            .expect("write");
        let started = tokio::time::Instant::now();
        // 2 KiB, then a byte every 5 s: within the rate for 12 s.
        client.write_all(&[b'x'; 2048]).await.expect("write");
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if client.write_all(b"x").await.is_err() {
                break;
            }
        }
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        (started.elapsed(), String::from_utf8(out).expect("utf8"))
    };
    let ((), (took, out)) = tokio::join!(session, talk);
    assert!(
        out.contains("451 4.4.2 Message data arrives too slowly"),
        "{out}"
    );
    assert!(handler.messages.lock().expect("lock").is_empty());
    assert!(took < Duration::from_secs(60), "{took:?}");
    // A fast body is not cut off however long the grace.
    let out = transcript(
        &handler,
        &config,
        b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
    )
    .await;
    assert!(out.contains("250 2.0.0 Queued"), "{out}");
}

/// Postfix names the client with XFORWARD; its messages together hold
/// at most the client's share of the budget, other clients keep theirs.
#[tokio::test(start_paused = true)]
async fn xforward_names_the_client_whose_share_a_message_counts_against() {
    let handler = Recorder {
        slow: true,
        ..Recorder::default()
    };
    let mut config = SessionConfig::new(Protocol::Smtp, "filter.test", 1 << 20);
    config.budget = chatmail_daemon::MessageBudget::fairly_shared(512 * 1024, 128 * 1024);
    let message = |client: &str| {
        let mut input = format!(
            "EHLO x\r\nXFORWARD NAME=spamhost ADDR={client} PROTO=ESMTP\r\n\
             MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n"
        )
        .into_bytes();
        input.extend(std::iter::repeat_n(b'x', 100 * 1024));
        input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        input
    };
    // The slow check holds each message's bytes; the same client's second
    // message does not fit its share, another client's does.
    let (same, other) = (message("192.0.2.1"), message("192.0.2.2"));
    let first = transcript(&handler, &config, &same);
    let later = |input: Vec<u8>| {
        let (handler, config) = (&handler, &config);
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            transcript(handler, config, &input).await
        }
    };
    let (first, second, third) = tokio::join!(first, later(same.clone()), later(other));
    assert!(
        first.contains("250 2.0.0 OK\r\n250 2.1.0"),
        "XFORWARD answered: {first}"
    );
    assert!(second.contains("452 4.3.1"), "{second}");
    assert!(!third.contains("452"), "{third}");
    assert_eq!(config.budget.in_use(), 0, "all given back");
}
