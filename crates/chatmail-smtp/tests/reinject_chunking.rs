//! The reinjection client against a server offering CHUNKING (RFC 3030),
//! as Postfix's smtpd does: what goes over the wire, and what comes back.

use std::sync::{Arc, Mutex, PoisonError};

use chatmail_smtp::Reinjector;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted server read: every command line, and every message
/// (BDAT chunk or DATA text) it accepted.
#[derive(Default)]
struct Transcript {
    commands: Vec<String>,
    messages: Vec<Vec<u8>>,
    connections: usize,
}

type Shared = Arc<Mutex<Transcript>>;

fn lock(transcript: &Shared) -> std::sync::MutexGuard<'_, Transcript> {
    transcript.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A server offering PIPELINING and CHUNKING that refuses the recipient
/// `gone@example.org`, as Postfix would, and drains a refused chunk. With
/// `one_transaction`, it hangs up after each transaction, as an idle
/// timeout would.
async fn start(one_transaction: bool) -> (String, Shared) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let transcript = Shared::default();
    let shared = Arc::clone(&transcript);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            lock(&shared).connections += 1;
            tokio::spawn(serve(stream, Arc::clone(&shared), one_transaction));
        }
    });
    (addr, transcript)
}

async fn serve(stream: TcpStream, transcript: Shared, one_transaction: bool) {
    let mut stream = BufReader::new(stream);
    let _ = stream.get_mut().write_all(b"220 scripted\r\n").await;
    let mut recipients = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end().to_owned();
        lock(&transcript).commands.push(command.clone());
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-scripted\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
        } else if upper.starts_with("MAIL") {
            recipients = 0;
            b"250 2.1.0 Ok\r\n"
        } else if upper.starts_with("RCPT") {
            if upper.contains("GONE@") {
                b"550 5.1.1 User unknown\r\n"
            } else {
                recipients += 1;
                b"250 2.1.5 Ok\r\n"
            }
        } else if let Some(size) = upper
            .strip_prefix("BDAT ")
            .and_then(|rest| rest.strip_suffix(" LAST"))
        {
            let size: usize = size.parse().expect("chunk size");
            let mut chunk = vec![0; size];
            if stream.read_exact(&mut chunk).await.is_err() {
                return;
            }
            if recipients == 0 {
                b"554 5.5.1 Error: no valid recipients\r\n"
            } else {
                lock(&transcript).messages.push(chunk);
                b"250 2.0.0 Ok: queued as CHUNK1\r\n"
            }
        } else if upper == "DATA" {
            let _ = stream.get_mut().write_all(b"354 go ahead\r\n").await;
            let mut text = Vec::new();
            while !text.ends_with(b"\r\n.\r\n") {
                if stream.read_until(b'\n', &mut text).await.unwrap_or(0) == 0 {
                    return;
                }
            }
            lock(&transcript).messages.push(text);
            b"250 2.0.0 Ok: queued as DATA1\r\n"
        } else if upper == "RSET" {
            b"250 2.0.0 Ok\r\n"
        } else {
            b"221 2.0.0 Bye\r\n"
        };
        if stream.get_mut().write_all(reply).await.is_err() {
            return;
        }
        let ended = upper.starts_with("BDAT") || upper == "DATA";
        if one_transaction && ended {
            return;
        }
    }
}

fn one(rcpt: &str) -> Vec<String> {
    vec![rcpt.to_owned()]
}

#[tokio::test]
async fn one_recipient_goes_as_one_chunk_without_dot_stuffing() {
    let (addr, transcript) = start(false).await;
    let reinjector = Reinjector::new(addr, "filter.test", 4);
    let message = b"Subject: x\r\n\r\n.leading dot\r\n.\r\nno line end";
    let reply = reinjector
        .send("s@example.org", &one("a@example.org"), message)
        .await;
    assert_eq!(reply.to_string(), "250 2.0.0 Ok: queued as CHUNK1");
    let transcript = lock(&transcript);
    let expected = [message.as_slice(), b"\r\n"].concat();
    assert_eq!(transcript.messages, std::slice::from_ref(&expected));
    assert_eq!(
        transcript.commands[1..],
        [
            "MAIL FROM:<s@example.org> BODY=8BITMIME".to_owned(),
            "RCPT TO:<a@example.org>".to_owned(),
            format!("BDAT {} LAST", expected.len()),
        ]
    );
}

#[tokio::test]
async fn a_refused_recipient_is_answered_and_the_connection_stays_in_step() {
    let (addr, transcript) = start(false).await;
    let reinjector = Reinjector::new(addr, "filter.test", 1);
    let reply = reinjector
        .send("s@example.org", &one("gone@example.org"), b"x\r\n")
        .await;
    assert_eq!(reply.to_string(), "550 5.1.1 User unknown");
    // A large message, written in pieces, on the same connection.
    let large = b"line of a large message\r\n".repeat(10_000);
    let reply = reinjector
        .send("s@example.org", &one("a@example.org"), &large)
        .await;
    assert!(reply.is_positive(), "{reply}");
    let transcript = lock(&transcript);
    assert_eq!(transcript.messages, [large]);
    assert_eq!(transcript.connections, 1);
}

#[tokio::test]
async fn several_recipients_go_by_data_so_a_refusal_stops_all() {
    let (addr, transcript) = start(false).await;
    let reinjector = Reinjector::new(addr, "filter.test", 4);
    let both = vec!["a@example.org".to_owned(), "gone@example.org".to_owned()];
    let reply = reinjector.send("s@example.org", &both, b"x\r\n").await;
    assert_eq!(reply.to_string(), "550 5.1.1 User unknown");
    let good = vec!["a@example.org".to_owned(), "b@example.org".to_owned()];
    let reply = reinjector.send("s@example.org", &good, b".x\r\n").await;
    assert_eq!(reply.to_string(), "250 2.0.0 Ok: queued as DATA1");
    let transcript = lock(&transcript);
    assert_eq!(transcript.messages, [b"..x\r\n.\r\n".to_vec()]);
    assert!(
        !transcript
            .commands
            .iter()
            .any(|command| command.starts_with("BDAT")),
        "{:?}",
        transcript.commands
    );
}

#[tokio::test]
async fn a_pooled_connection_closed_while_idle_is_replaced() {
    let (addr, transcript) = start(true).await;
    let reinjector = Reinjector::new(addr, "filter.test", 4);
    for _ in 0..3 {
        let reply = reinjector
            .send("s@example.org", &one("a@example.org"), b"x\r\n")
            .await;
        assert!(reply.is_positive(), "{reply}");
    }
    let transcript = lock(&transcript);
    assert_eq!(transcript.messages.len(), 3);
    assert_eq!(transcript.connections, 3);
}
