use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;

use crate::tls::SelfSignedCert;

/// One SMTP reply: its code and full text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    pub text: String,
}

/// Just enough of an SMTP client to drive Postfix in tests.
pub struct SmtpClient<S> {
    stream: BufReader<S>,
}

impl SmtpClient<TcpStream> {
    /// Connects in cleartext and reads the greeting.
    pub async fn connect(port: u16) -> Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        Self::greet(stream).await
    }
}

impl SmtpClient<UnixStream> {
    /// Connects to a unix socket (Dovecot's LMTP listener) and reads the
    /// greeting.
    pub async fn connect_unix(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path)
            .await
            .with_context(|| format!("connecting to {}", path.display()))?;
        Self::greet(stream).await
    }
}

impl SmtpClient<tokio_rustls::client::TlsStream<TcpStream>> {
    /// Connects with implicit TLS (port 465 style), trusting only `cert`.
    pub async fn connect_tls(port: u16, cert: &SelfSignedCert) -> Result<Self> {
        Self::connect_tls_at(std::net::Ipv4Addr::LOCALHOST.into(), port, cert).await
    }

    /// Connects in cleartext, says EHLO and upgrades with STARTTLS (as
    /// relays do on port 25), trusting only `cert`; EHLO again is the
    /// caller's.
    pub async fn connect_starttls(port: u16, cert: &SelfSignedCert) -> Result<Self> {
        let mut plain = SmtpClient::connect(port).await?;
        plain.ehlo().await?;
        let reply = plain.command("STARTTLS").await?;
        if reply.code != 220 {
            bail!("STARTTLS refused: {:?}", reply.text);
        }
        // Nothing can be buffered: the server waits for the handshake.
        let tcp = plain.stream.into_inner();
        let connector = TlsConnector::from(Arc::new(cert.client_config()?));
        let tls = connector
            .connect(ServerName::try_from("localhost")?, tcp)
            .await
            .context("TLS handshake after STARTTLS")?;
        Ok(Self {
            stream: BufReader::new(tls),
        })
    }

    /// As [`Self::connect_tls`], to another loopback address.
    pub async fn connect_tls_at(
        ip: std::net::IpAddr,
        port: u16,
        cert: &SelfSignedCert,
    ) -> Result<Self> {
        let connector = TlsConnector::from(Arc::new(cert.client_config()?));
        let tcp = TcpStream::connect((ip, port)).await?;
        let tls = connector
            .connect(ServerName::try_from("localhost")?, tcp)
            .await
            .context("TLS handshake")?;
        Self::greet(tls).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpClient<S> {
    async fn greet(stream: S) -> Result<Self> {
        let mut client = Self {
            stream: BufReader::new(stream),
        };
        client.expect("greeting", 220).await?;
        Ok(client)
    }

    /// Reads the next reply (for replies to [`Self::write_raw`]).
    pub async fn read_reply(&mut self) -> Result<SmtpReply> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("connection closed; reply so far: {text:?}");
            }
            text.push_str(&line);
            let code = line
                .get(..3)
                .and_then(|code| code.parse::<u16>().ok())
                .with_context(|| format!("malformed SMTP reply line {line:?}"))?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(SmtpReply { code, text });
            }
        }
    }

    async fn expect(&mut self, step: &str, want: u16) -> Result<SmtpReply> {
        let reply = self.read_reply().await?;
        if reply.code != want {
            bail!("{step}: expected {want}, got {:?}", reply.text);
        }
        Ok(reply)
    }

    /// Sends one command line (CRLF added) and returns the reply.
    pub async fn command(&mut self, line: &str) -> Result<SmtpReply> {
        self.write_raw(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply().await
    }

    /// Writes bytes exactly as given (for protocol abuse tests too) and
    /// flushes them: over TLS, the last records of a write that found the
    /// socket full wait in rustls's buffer until a flush.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let stream = self.stream.get_mut();
        stream.write_all(bytes).await?;
        stream.flush().await?;
        Ok(())
    }

    pub async fn ehlo(&mut self) -> Result<SmtpReply> {
        let reply = self.command("EHLO test.localhost").await?;
        if reply.code != 250 {
            bail!("EHLO refused: {:?}", reply.text);
        }
        Ok(reply)
    }

    /// `AUTH PLAIN`; returns the server's reply (235 on success).
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<SmtpReply> {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.command(&format!("AUTH PLAIN {token}")).await
    }

    /// Sends one message. Returns the first refusal (of MAIL, RCPT or
    /// DATA) or the reply to the end of DATA. Lines of `message` may end
    /// in LF or CRLF; leading dots are stuffed.
    pub async fn send(&mut self, from: &str, to: &[&str], message: &str) -> Result<SmtpReply> {
        let mail = self.command(&format!("MAIL FROM:<{from}>")).await?;
        if mail.code != 250 {
            return Ok(mail);
        }
        for rcpt in to {
            let reply = self.command(&format!("RCPT TO:<{rcpt}>")).await?;
            if reply.code != 250 {
                return Ok(reply);
            }
        }
        let data = self.command("DATA").await?;
        if data.code != 354 {
            return Ok(data);
        }
        self.write_raw(data_block(message).as_bytes()).await?;
        self.read_reply().await
    }

    /// LMTP's greeting (RFC 2033).
    pub async fn lhlo(&mut self) -> Result<SmtpReply> {
        self.command("LHLO test.localhost").await
    }

    /// Sends one message over LMTP: a reply per recipient, in order; a
    /// recipient refused at RCPT keeps that refusal.
    pub async fn send_lmtp(
        &mut self,
        from: &str,
        to: &[&str],
        message: &str,
    ) -> Result<Vec<SmtpReply>> {
        let mail = self.command(&format!("MAIL FROM:<{from}>")).await?;
        if mail.code != 250 {
            return Ok(vec![mail; to.len()]);
        }
        let mut replies: Vec<Option<SmtpReply>> = Vec::with_capacity(to.len());
        for rcpt in to {
            let reply = self.command(&format!("RCPT TO:<{rcpt}>")).await?;
            replies.push((reply.code != 250).then_some(reply));
        }
        if replies.iter().all(Option::is_some) {
            let _ = self.command("RSET").await?;
            return Ok(replies.into_iter().flatten().collect());
        }
        let data = self.command("DATA").await?;
        if data.code != 354 {
            return Ok(vec![data; to.len()]);
        }
        self.write_raw(data_block(message).as_bytes()).await?;
        let mut out = Vec::with_capacity(to.len());
        for refused in replies {
            match refused {
                Some(reply) => out.push(reply),
                None => out.push(self.read_reply().await?),
            }
        }
        Ok(out)
    }

    pub async fn quit(mut self) {
        let _ = self.command("QUIT").await;
    }
}

/// `message` as DATA sends it: CRLF line ends, leading dots doubled, the
/// final dot line.
fn data_block(message: &str) -> String {
    let mut body = String::with_capacity(message.len() + 64);
    for line in message.lines() {
        if line.starts_with('.') {
            body.push('.');
        }
        body.push_str(line);
        body.push_str("\r\n");
    }
    body.push_str(".\r\n");
    body
}

/// Sends one message over cleartext SMTP to 127.0.0.1:`port` and returns
/// the reply text to the end of DATA, failing on anything but 250.
pub async fn send_mail(port: u16, from: &str, to: &[&str], message: &str) -> Result<String> {
    let mut client = SmtpClient::connect(port).await?;
    client.ehlo().await?;
    let reply = client.send(from, to, message).await?;
    if reply.code != 250 {
        bail!("end of DATA: {:?}", reply.text);
    }
    client.quit().await;
    Ok(reply.text)
}
