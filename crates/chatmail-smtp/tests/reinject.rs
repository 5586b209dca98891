//! The reinjection client against the engine itself acting as the server.

use std::sync::{Arc, Mutex};

use chatmail_smtp::{
    DataOutcome, Envelope, Protocol, Reinjector, Reply, SessionConfig, SmtpHandler, serve,
};
use tokio::net::TcpListener;

#[derive(Default)]
struct Queue {
    messages: Mutex<Vec<(Envelope, Vec<u8>)>>,
}

impl SmtpHandler for Queue {
    async fn rcpt_to(&self, _envelope: &Envelope, recipient: &str) -> Result<String, Reply> {
        match recipient {
            "full@example.org" => Err(Reply::new(452, "4.2.2", "Mailbox full")),
            "gone@example.org" => Err(Reply::new(550, "5.1.1", "User unknown")),
            _ => Ok(recipient.to_owned()),
        }
    }

    async fn data(&self, envelope: Envelope, message: Vec<u8>) -> DataOutcome {
        if let Ok(mut messages) = self.messages.lock() {
            messages.push((envelope, message));
        }
        DataOutcome::Message(Reply::new(250, "2.0.0", "Ok: queued as ABC123"))
    }
}

async fn start() -> (String, Arc<Queue>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let queue = Arc::new(Queue::default());
    let config = SessionConfig::new(Protocol::Smtp, "postfix.test", 1 << 20);
    tokio::spawn(serve(
        listener,
        Arc::clone(&queue),
        config,
        100,
        std::future::pending(),
    ));
    (addr, queue)
}

#[tokio::test]
async fn relays_the_exact_reply_and_bytes() {
    let (addr, queue) = start().await;
    let reinjector = Reinjector::new(addr, "filter.test", 4);
    let message = b"Subject: x\r\n\r\n.leading dot\r\n..two\r\nend\r\n";
    let rcpts = vec!["a@example.org".to_owned(), "b@example.org".to_owned()];
    for _ in 0..3 {
        let reply = reinjector.send("s@example.org", &rcpts, message).await;
        assert_eq!(reply.to_string(), "250 2.0.0 Ok: queued as ABC123");
    }
    let messages = queue.messages.lock().expect("lock");
    assert_eq!(messages.len(), 3);
    for (envelope, body) in messages.iter() {
        assert_eq!(envelope.sender(), "s@example.org");
        assert_eq!(envelope.rcpt_to, rcpts);
        assert_eq!(body.as_slice(), message);
    }
}

#[tokio::test]
async fn a_refused_recipient_refuses_the_whole_message() {
    let (addr, queue) = start().await;
    let reinjector = Reinjector::new(addr, "filter.test", 4);
    for (rcpt, expected) in [
        ("full@example.org", "452 4.2.2 Mailbox full"),
        ("gone@example.org", "550 5.1.1 User unknown"),
    ] {
        let rcpts = vec!["a@example.org".to_owned(), rcpt.to_owned()];
        let reply = reinjector.send("s@example.org", &rcpts, b"x\r\n").await;
        assert_eq!(reply.to_string(), expected);
    }
    assert!(
        queue.messages.lock().expect("lock").is_empty(),
        "nothing delivered"
    );
    // The connection is still good for the next message.
    let reply = reinjector
        .send("s@example.org", &["a@example.org".to_owned()], b"x\r\n")
        .await;
    assert!(reply.is_positive(), "{reply}");
}

#[tokio::test]
async fn unreachable_server_is_a_temporary_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let reply = Reinjector::new(addr, "filter.test", 4)
        .send("s@example.org", &["a@example.org".to_owned()], b"x\r\n")
        .await;
    assert!(reply.is_transient(), "{reply}");
}
