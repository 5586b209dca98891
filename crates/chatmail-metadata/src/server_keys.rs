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
const TURN_TIMEOUT: Duration = Duration::from_secs(5);
/// Postfix's default smtpd_recipient_limit.
const MAX_SMTP_RECIPIENTS: &str = "1000";
const MAX_APPVERSIONS_BYTES: u64 = 64 * 1024;

pub struct ServerKeys {
    iroh_relay: String,
    turn_host: String,
    turn_port: u16,
    turn_socket: PathBuf,
    appversions_file: PathBuf,
}

impl ServerKeys {
    #[must_use]
    pub fn new(config: &Config) -> Self {
        Self {
            iroh_relay: config.iroh_relay.clone(),
            // `example.org`, or `1.2.3.4` on IP-only relays: Delta Chat
            // resolves the host with getaddrinfo, which takes no
            // `[1.2.3.4]` (the relay we replace serves that, and its
            // IP-only relays give their users no TURN server at all).
            turn_host: config.mail_domain.to_string(),
            turn_port: config.turn.port,
            turn_socket: config.turn_socket_path.clone(),
            appversions_file: config.appversions_file.clone(),
        }
    }

    /// The value of server key `name` (the part after `shared/<guid>/`),
    /// `None` for unknown keys and values that cannot be had right now.
    pub async fn lookup(&self, name: &str) -> Option<String> {
        match name.strip_prefix(PREFIX)? {
            // Set but empty: no iroh relay, so the key is not found.
            "irohrelay" => (!self.iroh_relay.is_empty()).then(|| self.iroh_relay.clone()),
            "turn" => self.turn().await,
            "maxsmtprecipients" => Some(MAX_SMTP_RECIPIENTS.to_owned()),
            "appversions" => self.appversions().await,
            _ => None,
        }
    }

    /// `host:port:<credentials>`, the credentials being one line from the
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
            Ok(Ok(line)) if !line.trim().is_empty() => Some(format!(
                "{}:{}:{}",
                self.turn_host,
                self.turn_port,
                line.trim()
            )),
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

    /// The appversions file as one line of JSON; without a usable file,
    /// the default compiled in (a daemon run from a build tree, without
    /// the package's file, still serves it).
    async fn appversions(&self) -> Option<String> {
        let file = &self.appversions_file;
        let text = match tokio::fs::read(file).await {
            Ok(text) if text.len() as u64 <= MAX_APPVERSIONS_BYTES => text,
            Ok(_) => {
                tracing::warn!(file = %file.display(), "appversions file too large; serving the default");
                DEFAULT_APPVERSIONS.as_bytes().to_vec()
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(file = %file.display(), "no appversions file; serving the default");
                DEFAULT_APPVERSIONS.as_bytes().to_vec()
            }
            Err(error) => {
                tracing::warn!(file = %file.display(), %error, "appversions unreadable; serving the default");
                DEFAULT_APPVERSIONS.as_bytes().to_vec()
            }
        };
        let parsed = serde_json::from_slice::<serde_json::Value>(&text).or_else(|error| {
            tracing::warn!(file = %file.display(), %error, "appversions is not JSON; serving the default");
            serde_json::from_str::<serde_json::Value>(DEFAULT_APPVERSIONS)
        });
        parsed.ok().map(|value| value.to_string())
    }
}

/// The app versions shipped with this release (the package installs the
/// same file as /usr/share/chatmail-relay/appversions.json).
const DEFAULT_APPVERSIONS: &str = include_str!("../appversions.json");

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chatmail_config::Config;

    use super::{DEFAULT_APPVERSIONS, PREFIX, ServerKeys};

    fn keys(extra: &str) -> ServerKeys {
        let ini = format!(
            "[params]\nmail_domain = 1.2.3.4\nappversions_file = /nonexistent/appversions.json\n{extra}"
        );
        ServerKeys::new(&Config::from_ini_str(&ini, Path::new("test.ini")).expect("valid"))
    }

    #[tokio::test]
    async fn meanings_as_in_the_relay_we_replace() {
        let keys_with_empty_iroh = keys("iroh_relay =\n");
        assert_eq!(
            keys_with_empty_iroh
                .lookup(&format!("{PREFIX}irohrelay"))
                .await,
            None,
            "set but empty: not found"
        );
        let defaults = keys("");
        assert_eq!(
            defaults
                .lookup(&format!("{PREFIX}irohrelay"))
                .await
                .as_deref(),
            Some("http://1.2.3.4"),
            "an IP-only relay's own iroh relay, over plain HTTP"
        );
        // Without the package's file, the compiled-in default.
        let served = defaults
            .lookup(&format!("{PREFIX}appversions"))
            .await
            .expect("served");
        let shipped: serde_json::Value =
            serde_json::from_str(DEFAULT_APPVERSIONS).expect("shipped JSON");
        assert_eq!(served, shipped.to_string());
        assert_eq!(
            defaults.turn_host, "1.2.3.4",
            "a bare address, which getaddrinfo resolves"
        );
    }
}
