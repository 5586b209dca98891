//! SMTP to another relay's port 25: STARTTLS is mandatory (a server
//! without it gets nothing), the certificate is verified, the envelope is
//! pipelined when offered (with a small message as one BDAT chunk when
//! CHUNKING is offered too), and every recipient gets the server's own
//! answer. Connections are kept for reuse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chatmail_smtp::{ClientError, Reply, read_reply, write_command, write_data};
use rustls::ClientConfig;
use smtp_proto::{EXT_CHUNKING, EXT_PIPELINING, EXT_START_TLS, EhloResponse};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Idle connections kept in all (each holds TLS buffers, some 40 KiB),
/// and how long.
const MAX_IDLE: usize = 256;
const IDLE_FOR: Duration = Duration::from_secs(60);
/// The whole message must be taken within this (Postfix allows 180 s
/// without progress, smtp_data_xfer_timeout).
const DATA_TIMEOUT: Duration = Duration::from_secs(180);
/// Messages up to this size go in the same write as their envelope, as
/// one BDAT chunk (RFC 3030), saving the round trip of waiting for 354.
/// A larger one waits for the envelope's answers (by DATA), so that a
/// refused recipient does not cost its whole transfer.
const PIPELINED_CHUNK_MAX: usize = 64 * 1024;

/// Why a host could not take the message at all: the caller may try the
/// next host. A server's reply is never one of these.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("{0}")]
    Connect(String),
    #[error("STARTTLS is not offered")]
    NoStartTls,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Protocol(#[from] ClientError),
    #[error("the server refused the session: {0}")]
    Refused(Reply),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct SmtpConnection {
    stream: BufReader<TlsStream<TcpStream>>,
    pipelining: bool,
    chunking: bool,
    idle_since: Instant,
}

/// The outcome of one transaction: a reply per recipient, in order.
pub struct Delivered {
    pub replies: Vec<Reply>,
    /// The connection may carry another message.
    pub reusable: bool,
}

impl SmtpConnection {
    /// Connects over `tcp`: greeting, EHLO, STARTTLS, TLS, EHLO again.
    pub async fn open(
        tcp: TcpStream,
        helo: &str,
        tls: Arc<ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> Result<Self, ConnectionError> {
        let mut plain = BufReader::new(tcp);
        let (greeting, _) = read_reply(&mut plain).await?;
        if greeting.code != 220 {
            return Err(ConnectionError::Refused(greeting));
        }
        let offered = ehlo(&mut plain, helo).await?;
        if offered & EXT_START_TLS == 0 {
            return Err(ConnectionError::NoStartTls);
        }
        write(&mut plain, b"STARTTLS\r\n").await?;
        let (ready, _) = read_reply(&mut plain).await?;
        if ready.code != 220 {
            return Err(ConnectionError::Refused(ready));
        }
        let tcp = plain.into_inner();
        let stream = tokio::time::timeout(
            crate::connect::CONNECT_TIMEOUT,
            TlsConnector::from(tls).connect(server_name, tcp),
        )
        .await
        .map_err(|_| ConnectionError::Tls("handshake timed out".into()))?
        .map_err(|error| ConnectionError::Tls(error.to_string()))?;
        let mut stream = BufReader::new(stream);
        let capabilities = ehlo(&mut stream, helo).await?;
        Ok(Self {
            stream,
            pipelining: capabilities & EXT_PIPELINING != 0,
            chunking: capabilities & EXT_CHUNKING != 0,
            idle_since: Instant::now(),
        })
    }

    /// Sends one message. `Err` only for connection trouble before the
    /// message was committed (the caller may retry elsewhere); afterwards
    /// trouble is a 4xx for the recipients the server had accepted.
    pub async fn send(
        &mut self,
        mail_from: &str,
        rcpt_to: &[String],
        message: &[u8],
    ) -> Result<Delivered, ConnectionError> {
        let mail = format!("MAIL FROM:<{mail_from}> BODY=8BITMIME\r\n");
        let rcpts: Vec<String> = rcpt_to
            .iter()
            .map(|rcpt| format!("RCPT TO:<{rcpt}>\r\n"))
            .collect();
        if self.pipelining && self.chunking && message.len() <= PIPELINED_CHUNK_MAX {
            return self.send_chunk(mail, &rcpts, message).await;
        }
        let (mail_reply, rcpt_replies, data) = if self.pipelining {
            // MAIL, RCPT and DATA in one write (RFC 2920: DATA may end a
            // pipelined group); the server refuses DATA itself when no
            // recipient was accepted.
            let mut batch = mail.into_bytes();
            for rcpt in &rcpts {
                batch.extend_from_slice(rcpt.as_bytes());
            }
            batch.extend_from_slice(b"DATA\r\n");
            write(&mut self.stream, &batch).await?;
            let (mail_reply, _) = read_reply(&mut self.stream).await?;
            let mut replies = Vec::with_capacity(rcpts.len());
            for _ in &rcpts {
                replies.push(read_reply(&mut self.stream).await?.0);
            }
            let (data, _) = read_reply(&mut self.stream).await?;
            (mail_reply, replies, Some(data))
        } else {
            write(&mut self.stream, mail.as_bytes()).await?;
            let (mail_reply, _) = read_reply(&mut self.stream).await?;
            let mut replies = Vec::with_capacity(rcpts.len());
            if mail_reply.is_positive() {
                for rcpt in &rcpts {
                    write(&mut self.stream, rcpt.as_bytes()).await?;
                    replies.push(read_reply(&mut self.stream).await?.0);
                }
            }
            (mail_reply, replies, None)
        };
        let refused = !mail_reply.is_positive() || !rcpt_replies.iter().any(Reply::is_positive);
        if refused && data.as_ref().is_some_and(|data| data.code == 354) {
            // A server that opens DATA for nobody: this connection is in
            // a state we will not feed; it is closed.
            let replies = if mail_reply.is_positive() {
                rcpt_replies
            } else {
                vec![mail_reply; rcpt_to.len()]
            };
            return Ok(Delivered {
                replies,
                reusable: false,
            });
        }
        if !mail_reply.is_positive() {
            let reusable = mail_reply.code != 421 && self.reset().await.is_ok();
            return Ok(Delivered {
                replies: vec![mail_reply; rcpt_to.len()],
                reusable,
            });
        }
        if !rcpt_replies.iter().any(Reply::is_positive) {
            let reusable = self.reset().await.is_ok();
            return Ok(Delivered {
                replies: rcpt_replies,
                reusable,
            });
        }
        let data = match data {
            Some(data) => data,
            None => {
                write(&mut self.stream, b"DATA\r\n").await?;
                read_reply(&mut self.stream).await?.0
            }
        };
        if data.code != 354 {
            let reusable = self.reset().await.is_ok();
            return Ok(Delivered {
                replies: merge(&rcpt_replies, &data),
                reusable,
            });
        }
        // From here on the message may have been taken: never an Err.
        let sent = async {
            tokio::time::timeout(DATA_TIMEOUT, write_data(self.stream.get_mut(), message))
                .await
                .map_err(|_| ClientError::Timeout)??;
            read_reply(&mut self.stream).await.map(|(reply, _)| reply)
        };
        let (final_reply, reusable) = match sent.await {
            // 421: the server is closing the connection.
            Ok(reply) => {
                let reusable = reply.code != 421;
                (reply, reusable)
            }
            Err(error) => (lost(&error), false),
        };
        self.idle_since = Instant::now();
        Ok(Delivered {
            replies: merge(&rcpt_replies, &final_reply),
            reusable,
        })
    }

    /// MAIL, RCPT and `BDAT n LAST` with the message, in one write. The
    /// server answers BDAT too when it accepted no recipient (RFC 3030
    /// has it read the chunk and refuse), so the connection stays in step
    /// whatever the answers.
    async fn send_chunk(
        &mut self,
        mail: String,
        rcpts: &[String],
        message: &[u8],
    ) -> Result<Delivered, ConnectionError> {
        let line_end: &[u8] = if message.ends_with(b"\r\n") || message.is_empty() {
            b""
        } else {
            b"\r\n"
        };
        let size = message.len() + line_end.len();
        let mut batch = mail.into_bytes();
        for rcpt in rcpts {
            batch.extend_from_slice(rcpt.as_bytes());
        }
        batch.extend_from_slice(format!("BDAT {size} LAST\r\n").as_bytes());
        batch.extend_from_slice(message);
        batch.extend_from_slice(line_end);
        write(&mut self.stream, &batch).await?;
        // No answer at all is most likely a pooled connection the server
        // had closed: the caller may try again (at worst the message
        // arrives twice, as when a final reply is lost; never not at all).
        let (mail_reply, _) = read_reply(&mut self.stream).await?;
        let mut rcpt_replies = Vec::with_capacity(rcpts.len());
        let mut outcome = None;
        for _ in rcpts {
            match read_reply(&mut self.stream).await {
                Ok((reply, _)) => rcpt_replies.push(reply),
                Err(error) => {
                    outcome = Some(lost(&error));
                    break;
                }
            }
        }
        let outcome = match outcome {
            Some(lost) => Err(lost),
            None => read_reply(&mut self.stream)
                .await
                .map(|(reply, _)| reply)
                .map_err(|error| lost(&error)),
        };
        self.idle_since = Instant::now();
        // 421: the server is closing the connection.
        let closing = std::iter::once(&mail_reply)
            .chain(&rcpt_replies)
            .chain(outcome.as_ref().ok())
            .any(|reply| reply.code == 421);
        let reusable = outcome.is_ok() && !closing;
        let replies = if !mail_reply.is_positive() {
            vec![mail_reply; rcpts.len()]
        } else {
            // Recipients without an answer yet get the connection's loss.
            let chunk = outcome.unwrap_or_else(|lost| lost);
            rcpt_replies.resize(rcpts.len(), chunk.clone());
            merge(&rcpt_replies, &chunk)
        };
        Ok(Delivered { replies, reusable })
    }

    async fn reset(&mut self) -> Result<(), ClientError> {
        write(&mut self.stream, b"RSET\r\n").await?;
        read_reply(&mut self.stream).await.map(drop)
    }
}

/// The answer for recipients whose message may or may not have been
/// taken: Postfix keeps it and tries again.
fn lost(error: &ClientError) -> Reply {
    Reply::owned(
        451,
        "4.4.2",
        format!("Connection lost after the message: {error}"),
    )
}

/// Each accepted recipient gets `outcome`; refused ones keep their reply.
fn merge(rcpt_replies: &[Reply], outcome: &Reply) -> Vec<Reply> {
    rcpt_replies
        .iter()
        .map(|reply| {
            if reply.is_positive() {
                outcome.clone()
            } else {
                reply.clone()
            }
        })
        .collect()
}

async fn write<S: Io>(stream: &mut BufReader<S>, bytes: &[u8]) -> Result<(), ClientError> {
    write_command(stream.get_mut(), bytes).await
}

/// Sends EHLO; returns the capability flags.
async fn ehlo<S: Io>(stream: &mut BufReader<S>, helo: &str) -> Result<u32, ConnectionError> {
    write(stream, format!("EHLO {helo}\r\n").as_bytes()).await?;
    let (reply, raw) = read_reply(stream).await?;
    if reply.code != 250 {
        return Err(ConnectionError::Refused(reply));
    }
    Ok(EhloResponse::parse(&mut raw.iter()).map_or(0, |response| response.capabilities))
}

/// Idle connections by host: as many per host as may be busy towards it
/// at once (the destination bound), so a steady stream to one relay
/// reuses its sessions instead of a TLS handshake per message.
pub struct SmtpPool {
    per_host: usize,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    by_host: HashMap<String, Vec<SmtpConnection>>,
    total: usize,
}

impl SmtpPool {
    pub fn new(per_host: usize) -> Self {
        Self {
            per_host,
            idle: Mutex::default(),
        }
    }

    pub fn take(&self, host: &str) -> Option<SmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let Idle { by_host, total } = &mut *idle;
        let connections = by_host.get_mut(host)?;
        while let Some(connection) = connections.pop() {
            *total -= 1;
            if connection.idle_since.elapsed() < IDLE_FOR {
                return Some(connection);
            }
        }
        by_host.remove(host);
        None
    }

    pub fn put(&self, host: &str, connection: SmtpConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let Idle { by_host, total } = &mut *idle;
        if *total >= MAX_IDLE {
            // Full: forget the stale ones; if none, this one is dropped.
            by_host.retain(|_, connections| {
                connections.retain(|c| c.idle_since.elapsed() < IDLE_FOR);
                !connections.is_empty()
            });
            *total = by_host.values().map(Vec::len).sum();
            if *total >= MAX_IDLE {
                return;
            }
        }
        let connections = by_host.entry(host.to_owned()).or_default();
        if connections.len() < self.per_host {
            connections.push(connection);
            *total += 1;
        }
    }
}
