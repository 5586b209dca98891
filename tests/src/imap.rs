use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::tls::SelfSignedCert;

/// Just enough IMAP over implicit TLS to log in: the tests check what
/// the server answers, not a mail client's behaviour.
pub struct ImapClient {
    stream: BufReader<TlsStream<TcpStream>>,
    next_tag: u32,
}

impl ImapClient {
    /// Connects to 127.0.0.1:`port`, trusting only `cert`, and reads the
    /// greeting.
    pub async fn connect(port: u16, cert: &SelfSignedCert) -> Result<Self> {
        Self::connect_at(std::net::Ipv4Addr::LOCALHOST.into(), port, cert).await
    }

    /// As [`Self::connect`], to another loopback address.
    pub async fn connect_at(
        ip: std::net::IpAddr,
        port: u16,
        cert: &SelfSignedCert,
    ) -> Result<Self> {
        let connector = TlsConnector::from(Arc::new(cert.client_config()?));
        let tcp = TcpStream::connect((ip, port)).await?;
        let name = ServerName::try_from("localhost")?;
        let tls = connector
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let mut client = Self {
            stream: BufReader::new(tls),
            next_tag: 1,
        };
        let greeting = client.read_line().await?;
        if !greeting.starts_with("* OK") {
            bail!("unexpected IMAP greeting {greeting:?}");
        }
        Ok(client)
    }

    async fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            bail!("IMAP server closed the connection");
        }
        Ok(line)
    }

    /// Sends a command and returns the tagged status line (`OK ...`,
    /// `NO ...`, `BAD ...`) without the tag.
    pub async fn command(&mut self, command: &str) -> Result<String> {
        Ok(self.command_lines(command).await?.1)
    }

    /// Sends a command; returns its untagged responses (each with any
    /// literals inlined, CRLF removed) and the tagged status line.
    pub async fn command_lines(&mut self, command: &str) -> Result<(Vec<String>, String)> {
        use tokio::io::AsyncReadExt as _;
        let tag = format!("a{}", self.next_tag);
        self.next_tag += 1;
        let stream = self.stream.get_mut();
        stream
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .await?;
        // Over TLS, written bytes may wait in rustls's buffer until flushed.
        stream.flush().await?;
        let prefix = format!("{tag} ");
        let mut responses = Vec::new();
        let mut current = String::new();
        loop {
            let line = self.read_line().await?;
            let line = line.trim_end_matches(['\r', '\n']);
            // A literal `{N}` at the end of a line: N bytes follow.
            if let Some(size) = line
                .strip_suffix('}')
                .and_then(|rest| rest.rsplit_once('{'))
                .and_then(|(_, digits)| digits.parse::<usize>().ok())
            {
                let mut literal = vec![0; size];
                self.stream.read_exact(&mut literal).await?;
                current.push_str(line);
                current.push_str(&String::from_utf8_lossy(&literal));
                continue;
            }
            current.push_str(line);
            let complete = std::mem::take(&mut current);
            if let Some(status) = complete.strip_prefix(&prefix) {
                return Ok((responses, status.to_owned()));
            }
            responses.push(complete);
        }
    }

    /// Logs in; `Ok(true)` for OK, `Ok(false)` for NO.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<bool> {
        let status = self
            .command(&format!("LOGIN {} {}", quote(user), quote(password)))
            .await?;
        if status.starts_with("OK") {
            Ok(true)
        } else if status.starts_with("NO") {
            Ok(false)
        } else {
            bail!("unexpected LOGIN reply {status:?}")
        }
    }
}

/// An IMAP quoted string.
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
