//! A fast SMTP sink with STARTTLS: the remote relay for benchmarks of
//! filtermail-transport, which insists on STARTTLS (Postfix's smtp-sink
//! does not offer it). Accepts every message and counts it; replies to a
//! pipelined batch go out in one write. It may offer CHUNKING (BDAT), as
//! Postfix does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::tls::TestCa;

/// The sink; stops when dropped.
pub struct StarttlsSink {
    port: u16,
    messages: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl StarttlsSink {
    /// Listens on 127.0.0.1 with the certificate `ca` issued; offers
    /// CHUNKING if `chunking`.
    pub async fn start(ca: &TestCa, chunking: bool) -> Result<Self> {
        let acceptor = TlsAcceptor::from(Arc::new(ca.server_config()?));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let messages = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&messages);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    // A client that goes away mid-session is no concern here.
                    let _ = session(tcp, acceptor, &counted, chunking).await;
                });
            }
        });
        Ok(Self {
            port,
            messages,
            task,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }
}

impl Drop for StarttlsSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(
    mut tcp: TcpStream,
    acceptor: TlsAcceptor,
    messages: &AtomicU64,
    chunking: bool,
) -> Result<()> {
    tcp.write_all(b"220 sink ESMTP\r\n").await?;
    let mut plain = BufReader::new(tcp);
    let mut line = Vec::new();
    loop {
        line.clear();
        if plain.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
        match verb.as_slice() {
            b"EHLO" => {
                plain
                    .get_mut()
                    .write_all(b"250-sink\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
                    .await?
            }
            b"STAR" => {
                plain.get_mut().write_all(b"220 2.0.0 Go ahead\r\n").await?;
                break;
            }
            b"QUIT" => return Ok(()),
            _ => {
                plain
                    .get_mut()
                    .write_all(b"503 5.5.1 TLS first\r\n")
                    .await?
            }
        }
    }
    let tls = acceptor.accept(plain.into_inner()).await?;
    commands(BufReader::new(tls), messages, chunking).await
}

/// The largest BDAT chunk the sink reads.
const MAX_CHUNK: usize = 64 << 20;

async fn commands<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: BufReader<S>,
    messages: &AtomicU64,
    chunking: bool,
) -> Result<()> {
    let ehlo: &[u8] = if chunking {
        b"250-sink\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
    } else {
        b"250-sink\r\n250 PIPELINING\r\n"
    };
    let mut line = Vec::new();
    let mut replies = Vec::new();
    let mut in_data = false;
    loop {
        line.clear();
        if stream.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if in_data {
            if line == b".\r\n" {
                in_data = false;
                messages.fetch_add(1, Ordering::Relaxed);
                replies.extend_from_slice(b"250 2.0.0 Ok: queued\r\n");
            }
        } else {
            let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
            match verb.as_slice() {
                b"EHLO" => replies.extend_from_slice(ehlo),
                b"BDAT" if chunking => {
                    let text = String::from_utf8_lossy(&line);
                    let mut words = text.split_whitespace().skip(1);
                    let size: usize = words.next().and_then(|size| size.parse().ok()).unwrap_or(0);
                    anyhow::ensure!(size <= MAX_CHUNK, "chunk too large");
                    let mut chunk = vec![0; size];
                    stream.read_exact(&mut chunk).await?;
                    if words
                        .next()
                        .is_some_and(|last| last.eq_ignore_ascii_case("LAST"))
                    {
                        messages.fetch_add(1, Ordering::Relaxed);
                        replies.extend_from_slice(b"250 2.0.0 Ok: queued\r\n");
                    } else {
                        replies.extend_from_slice(b"250 2.0.0 Ok: chunk received\r\n");
                    }
                }
                b"DATA" => {
                    in_data = true;
                    replies.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                }
                b"QUIT" => {
                    replies.extend_from_slice(b"221 2.0.0 Bye\r\n");
                    stream.get_mut().write_all(&replies).await?;
                    return Ok(());
                }
                _ => replies.extend_from_slice(b"250 2.0.0 Ok\r\n"),
            }
        }
        // The replies to a pipelined batch leave together.
        if !replies.is_empty() && stream.buffer().is_empty() {
            stream.get_mut().write_all(&replies).await?;
            stream.get_mut().flush().await?;
            replies.clear();
        }
    }
}
