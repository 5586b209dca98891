//! The dict Dovecot uses as `mail_attribute_dict`: IMAP METADATA of
//! accounts (device tokens, the new-message signal of the Lua push
//! script) and of the server (the keys Delta Chat reads).

use std::sync::Arc;

use dovecot_dict::{Change, DictError, DictHandler, Transaction};

use crate::metrics::MetadataMetrics;
use crate::notifier::{Notifier, now_secs};
use crate::server_keys::ServerKeys;
use crate::store::TokenStore;

const DEVICE_TOKEN: &str = "devicetoken";
const MESSAGE_NEW: &str = "messagenew";
/// The dict name Dovecot's LMTP service uses (metadata.conf.ext): only
/// its writes of `messagenew` come from a delivery. IMAP clients could set
/// the same attribute through the `metadata` dict to trigger pushes.
pub const DELIVERY_DICT: &str = "metadata-delivery";
/// Real push tokens are a few hundred bytes.
const MAX_TOKEN_BYTES: usize = 4096;

pub struct MetadataDict {
    store: Arc<TokenStore>,
    notifier: Notifier,
    server: ServerKeys,
    metrics: MetadataMetrics,
}

/// A key split as Dovecot sends it: `priv/<mailbox guid>/<name>` or
/// `shared/<mailbox guid>/<name>`.
fn split_key(key: &str) -> Option<(&str, &str)> {
    let (scope, rest) = key.split_once('/')?;
    let (_guid, name) = rest.split_once('/')?;
    Some((scope, name))
}

/// Tokens are stored in a JSON file, joined by spaces in lookups and
/// written into line-based queue files: none of that may be broken.
fn check_token(token: &str) -> Result<(), DictError> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(DictError::new(
            "device token empty or longer than 4096 bytes",
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DictError::new(
            "device token contains whitespace or control characters",
        ));
    }
    Ok(())
}

impl MetadataDict {
    #[must_use]
    pub fn new(
        store: Arc<TokenStore>,
        notifier: Notifier,
        server: ServerKeys,
        metrics: MetadataMetrics,
    ) -> Self {
        Self {
            store,
            notifier,
            server,
            metrics,
        }
    }

    async fn tokens(&self, user: &str) -> Result<Vec<String>, DictError> {
        let store = Arc::clone(&self.store);
        let user = user.to_owned();
        tokio::task::spawn_blocking(move || store.tokens(&user, now_secs()))
            .await
            .map_err(|error| DictError::new(error.to_string()))?
            .map_err(|error| DictError::new(format!("reading device tokens: {error}")))
    }

    async fn add_token(&self, user: &str, token: &str) -> Result<(), DictError> {
        check_token(token)?;
        let store = Arc::clone(&self.store);
        let (user, token) = (user.to_owned(), token.to_owned());
        tokio::task::spawn_blocking(move || store.add(&user, &token, now_secs()))
            .await
            .map_err(|error| DictError::new(error.to_string()))?
            .map_err(|error| DictError::new(format!("storing a device token: {error}")))?;
        self.metrics.tokens_registered.inc();
        Ok(())
    }

    async fn message_new(&self, user: &str) -> Result<(), DictError> {
        let tokens = self.tokens(user).await?;
        if tokens.is_empty() {
            return Ok(());
        }
        self.notifier
            .notify(user, tokens)
            .await
            .map_err(|error| DictError::new(format!("queueing notifications: {error}")))
    }
}

impl DictHandler for MetadataDict {
    async fn lookup(&self, key: &str, user: &str) -> Result<Option<String>, DictError> {
        match split_key(key) {
            Some(("priv", DEVICE_TOKEN)) => Ok(Some(self.tokens(user).await?.join(" "))),
            Some(("shared", name)) => Ok(self.server.lookup(name).await),
            _ => {
                tracing::debug!(key, "lookup of an unknown key");
                Ok(None)
            }
        }
    }

    async fn commit(&self, transaction: Transaction) -> Result<(), DictError> {
        for change in &transaction.changes {
            match change {
                Change::Set { key, value } => match split_key(key) {
                    Some(("priv", DEVICE_TOKEN)) => {
                        self.add_token(&transaction.user, value).await?;
                    }
                    Some(("priv", MESSAGE_NEW)) if transaction.dict_name == DELIVERY_DICT => {
                        self.message_new(&transaction.user).await?;
                    }
                    Some(("priv", MESSAGE_NEW)) => {
                        tracing::info!("ignoring a new-message signal that no delivery sent");
                    }
                    _ => tracing::debug!(key, "ignoring a set of an unknown key"),
                },
                other => tracing::debug!(?other, "ignoring an unsupported change"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_tokens() {
        assert_eq!(
            split_key("priv/43f5f508a7ea0366dff30200c15250e3/devicetoken"),
            Some(("priv", "devicetoken"))
        );
        assert_eq!(
            split_key("shared/g/vendor/vendor.dovecot/pvt/server/vendor/deltachat/turn"),
            Some((
                "shared",
                "vendor/vendor.dovecot/pvt/server/vendor/deltachat/turn"
            ))
        );
        assert_eq!(split_key("devicetoken"), None);
        assert!(check_token("abc:DEF-123_").is_ok());
        assert!(check_token("").is_err());
        assert!(check_token("a\nb").is_err());
        assert!(check_token("a b").is_err());
        assert!(check_token(&"x".repeat(4097)).is_err());
        assert!(check_token(&"x".repeat(4096)).is_ok());
    }
}
