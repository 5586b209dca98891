//! The filters' reinjection client against a real Postfix smtpd, which
//! offers CHUNKING: one-recipient messages go as one pipelined BDAT, the
//! others by DATA, and a refusal delivers nothing either way.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use chatmail_smtp::{Protocol, Reinjector};
use relay_tests::{Postfix, PostfixOptions, Recorder};

fn message(subject: &str, body: &[u8]) -> Vec<u8> {
    // With Date, From and Message-ID present, Postfix adds only its
    // Received line, so what arrives must end with exactly these bytes.
    [
        format!(
            "Date: Mon, 30 Nov 2026 03:00:00 +0000\r\nFrom: <s@example.org>\r\n\
             Message-ID: <{subject}@example.org>\r\nSubject: {subject}\r\n\r\n"
        )
        .as_bytes(),
        body,
    ]
    .concat()
}

fn rcpts(addresses: &[&str]) -> Vec<String> {
    addresses
        .iter()
        .map(|&address| address.to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_postfix_takes_chunks_and_refuses_without_delivering() -> Result<()> {
    let outside = Recorder::start(Protocol::Lmtp).await?;
    let postfix = Postfix::start(&PostfixOptions {
        main_cf: format!(
            "default_transport = lmtp:inet:127.0.0.1:{}\n\
             smtpd_recipient_restrictions = \
             check_recipient_access inline:{{gone@remote.test=REJECT}}\n",
            outside.port()
        ),
        ..PostfixOptions::default()
    })?;
    // One pooled connection: every message after a refusal goes over the
    // connection that carried it, so a refused chunk must have been read.
    let reinjector = Reinjector::new(
        format!("127.0.0.1:{}", postfix.smtp_port()),
        "filter.test",
        1,
    );
    let sender = "s@example.org";

    let refused = reinjector
        .send(
            sender,
            &rcpts(&["gone@remote.test"]),
            &message("refused", b"x\r\n"),
        )
        .await;
    ensure!(refused.code == 554, "{refused}");
    let dots = message("dots", b".leading dot\r\n.\r\n..two\r\nlast line");
    let large = message("large", &b"a line of a large message\r\n".repeat(40_000));
    let both = message("both", b".x\r\n");
    for (to, text) in [
        (rcpts(&["a@remote.test"]), &dots),
        (rcpts(&["a@remote.test"]), &large),
        (rcpts(&["a@remote.test", "b@remote.test"]), &both),
    ] {
        let reply = reinjector.send(sender, &to, text).await;
        ensure!(reply.is_positive(), "{reply}");
    }
    // Last: the client hangs up on the server's 354 rather than deliver
    // to the recipient that was accepted.
    let refused_one_of_two = reinjector
        .send(
            sender,
            &rcpts(&["a@remote.test", "gone@remote.test"]),
            &message("refused2", b"x\r\n"),
        )
        .await;
    ensure!(refused_one_of_two.code == 554, "{refused_one_of_two}");
    drop(reinjector);

    let deadline = Instant::now() + Duration::from_secs(30);
    while outside.messages() < 3 {
        ensure!(
            Instant::now() < deadline,
            "{} delivered",
            outside.messages()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The refused ones would have had time to follow.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrived = outside.message_texts();
    ensure!(arrived.len() == 3, "{} delivered", arrived.len());
    let without_line_end = dots.len() - b"last line".len();
    for sent in [
        [&dots[..without_line_end], b"last line\r\n"].concat(),
        large,
        both,
    ] {
        ensure!(
            arrived.iter().any(|text| text.ends_with(&sent)),
            "not delivered intact: {}",
            String::from_utf8_lossy(&sent[..200.min(sent.len())])
        );
    }
    ensure!(
        !outside
            .recipients()
            .iter()
            .any(|rcpt| rcpt.contains("gone")),
        "{:?}",
        outside.recipients()
    );

    // Postfix counts each command kind of a session when it ends: the
    // one-recipient messages went as BDAT, the others as DATA, all on
    // one connection.
    let session = postfix.first_session_counters().await?;
    ensure!(
        session.contains(" mail=5 ")
            && session.contains(" bdat=2/3 ")
            && session.contains(" data=1/2 "),
        "{session}"
    );
    Ok(())
}
