//! An SMTP or LMTP server on loopback that accepts everything and records
//! what it was offered: a stand-in for the world outside a relay, to show
//! that nothing reached it.

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;
use chatmail_smtp::{DataOutcome, Envelope, Protocol, Reply, SessionConfig, SmtpHandler};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the recorder saw: every recipient offered at RCPT, and every
/// message with its envelope.
#[derive(Default)]
struct Seen {
    recipients: Mutex<Vec<String>>,
    messages: Mutex<Vec<(Envelope, Vec<u8>)>>,
}

impl SmtpHandler for Seen {
    async fn rcpt_to(&self, _envelope: &Envelope, recipient: &str) -> Result<String, Reply> {
        self.recipients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(recipient.to_owned());
        Ok(recipient.to_owned())
    }

    async fn data(&self, envelope: Envelope, message: Vec<u8>) -> DataOutcome {
        self.messages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((envelope, message));
        DataOutcome::Message(Reply::new(250, "2.0.0", "Recorded"))
    }
}

/// A recording server; stops when dropped.
pub struct Recorder {
    port: u16,
    seen: Arc<Seen>,
    stop: CancellationToken,
}

impl Recorder {
    /// Listens on 127.0.0.1 at a free port. Must be called inside a tokio
    /// runtime.
    pub async fn start(protocol: Protocol) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", crate::free_port()?)).await?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Seen::default());
        let stop = CancellationToken::new();
        let config = SessionConfig::new(protocol, "recorder.test", 64 << 20);
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(chatmail_smtp::serve(
            listener,
            Arc::clone(&seen),
            config,
            100,
            shutdown,
        ));
        Ok(Self { port, seen, stop })
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every recipient offered so far, accepted or not by a later stage.
    #[must_use]
    pub fn recipients(&self) -> Vec<String> {
        self.seen
            .recipients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The messages received so far, as they arrived.
    #[must_use]
    pub fn message_texts(&self) -> Vec<Vec<u8>> {
        self.seen
            .messages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(_, message)| message.clone())
            .collect()
    }

    /// The number of messages received so far.
    #[must_use]
    pub fn messages(&self) -> usize {
        self.seen
            .messages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
