//! Credentials for chatmail-metadata, which hands them to Delta Chat as
//! the `turn` METADATA key: one `username:password` line per connection
//! on `turn_socket_path`. The username is the time they expire (seconds
//! since the epoch, five days ahead), the password the base64 HMAC-SHA1
//! of the username under the secret (the "TURN REST API" scheme that
//! coturn and the relay we replace use), so the server checks them with
//! the secret alone and keeps no list.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

/// How long handed-out credentials are valid (as the relay we replace).
pub const VALIDITY: Duration = Duration::from_secs(5 * 24 * 3600);
/// Connections answered at once; each gets one line.
const MAX_CONCURRENT: usize = 64;
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A fresh `(username, password)`, valid for [`VALIDITY`].
pub fn mint(secret: &str) -> anyhow::Result<(String, String)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|err| anyhow::anyhow!("the clock is before 1970: {err}"))?;
    Ok(expiring_at(secret, (now + VALIDITY).as_secs()))
}

/// The credentials that expire at `expiry` (seconds since the epoch).
#[must_use]
pub fn expiring_at(secret: &str, expiry: u64) -> (String, String) {
    use base64::Engine as _;
    let username = expiry.to_string();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, password)
}

/// Answers every connection with one credentials line, until the
/// listener fails.
pub async fn serve(listener: UnixListener, secret: Arc<str>) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accepting on the credentials socket");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let secret = Arc::clone(&secret);
        tokio::spawn(async move {
            let line = match mint(&secret) {
                Ok((username, password)) => format!("{username}:{password}\n"),
                Err(error) => {
                    tracing::error!(%error, "no credentials to hand out");
                    return;
                }
            };
            let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(line.as_bytes())).await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_accepts_what_is_minted_until_it_expires() {
        use turn::auth::{AuthHandler as _, LongTermAuthHandler};
        let handler = LongTermAuthHandler::new("s3cret-of-this-relay".into());
        let peer = "127.0.0.1:9".parse().expect("address");
        let (username, password) = mint("s3cret-of-this-relay").expect("minted");
        let key = handler
            .auth_handle(&username, "relay.test", peer)
            .expect("accepted");
        assert_eq!(
            key,
            turn::auth::generate_auth_key(&username, "relay.test", &password)
        );
        let (expired, _) = expiring_at("s3cret-of-this-relay", 1_000_000_000);
        assert!(handler.auth_handle(&expired, "relay.test", peer).is_err());
    }

    #[test]
    fn credentials_expire_in_five_days_and_depend_on_the_secret() {
        let (username, password) = mint("one secret").expect("minted");
        let expiry: u64 = username.parse().expect("a time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!((expiry - now).abs_diff(VALIDITY.as_secs()) < 5);
        assert_eq!(password.len(), 28, "base64 of 20 bytes");
        let (same_username, other) = expiring_at("another secret", expiry);
        assert_eq!(same_username, username);
        assert_ne!(other, password, "another secret, another password");
    }
}
