//! Server metadata Delta Chat reads with GETMETADATA on the empty mailbox
//! name (`/shared/vendor/deltachat/<key>`): the iroh relay URL, TURN
//! credentials, the recipient limit and the current app versions.

use std::path::PathBuf;
use std::time::Duration;

use chatmail_config::Config;
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, BufReader};
use tokio::net::UnixStream;

/// Dovecot's key prefix for server attributes.
const PREFIX: &str = "vendor/vendor.dovecot/pvt/server/vendor/deltachat/";
const TURN_PORT: u16 = 3478;
const TURN_TIMEOUT: Duration = Duration::from_secs(5);
/// Postfix's default smtpd_recipient_limit.
const MAX_SMTP_RECIPIENTS: &str = "1000";
const MAX_APPVERSIONS_BYTES: u64 = 64 * 1024;

pub struct ServerKeys {
    iroh_relay: String,
    turn_host: String,
    turn_socket: PathBuf,
    appversions_file: PathBuf,
}

impl ServerKeys {
    #[must_use]
    pub fn new(config: &Config) -> Self {
        Self {
            iroh_relay: config.iroh_relay.clone(),
            turn_host: config.mail_domain.to_string(),
            turn_socket: config.turn_socket_path.clone(),
            appversions_file: config.appversions_file.clone(),
        }
    }

    /// The value of server key `name` (the part after `shared/<guid>/`),
    /// `None` for unknown keys and values that cannot be had right now.
    pub async fn lookup(&self, name: &str) -> Option<String> {
        match name.strip_prefix(PREFIX)? {
            "irohrelay" => Some(self.iroh_relay.clone()),
            "turn" => self.turn().await,
            "maxsmtprecipients" => Some(MAX_SMTP_RECIPIENTS.to_owned()),
            "appversions" => self.appversions().await,
            _ => None,
        }
    }

    /// `host:3478:<credentials>`, the credentials being one line from the
    /// TURN server's unix socket.
    async fn turn(&self) -> Option<String> {
        let read = async {
            let stream = UnixStream::connect(&self.turn_socket).await?;
            let mut line = String::new();
            BufReader::new(stream)
                .take(4096)
                .read_line(&mut line)
                .await?;
            Ok::<_, std::io::Error>(line)
        };
        match tokio::time::timeout(TURN_TIMEOUT, read).await {
            Ok(Ok(line)) if !line.trim().is_empty() => {
                Some(format!("{}:{TURN_PORT}:{}", self.turn_host, line.trim()))
            }
            Ok(Ok(_)) => {
                tracing::warn!("the TURN server sent no credentials");
                None
            }
            Ok(Err(error)) => {
                tracing::warn!(socket = %self.turn_socket.display(), %error, "no TURN credentials");
                None
            }
            Err(_) => {
                tracing::warn!("the TURN server did not answer in time");
                None
            }
        }
    }

    /// The appversions file as one line of JSON.
    async fn appversions(&self) -> Option<String> {
        let text = match tokio::fs::read(&self.appversions_file).await {
            Ok(text) if text.len() as u64 <= MAX_APPVERSIONS_BYTES => text,
            Ok(_) => {
                tracing::warn!(file = %self.appversions_file.display(), "appversions file too large");
                return None;
            }
            Err(error) => {
                tracing::warn!(file = %self.appversions_file.display(), %error, "no appversions");
                return None;
            }
        };
        match serde_json::from_slice::<serde_json::Value>(&text) {
            Ok(value) => Some(value.to_string()),
            Err(error) => {
                tracing::warn!(file = %self.appversions_file.display(), %error, "appversions is not JSON");
                None
            }
        }
    }
}
