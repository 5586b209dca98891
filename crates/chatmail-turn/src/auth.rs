//! Checks credentials the way the TURN server asks: the key of a
//! username that has not expired, under the shared secret.

use std::net::SocketAddr;

use turn::auth::{AuthHandler, LongTermAuthHandler};

use crate::metrics::{Refused, TurnMetrics};

pub struct Auth {
    inner: LongTermAuthHandler,
    metrics: TurnMetrics,
}

impl Auth {
    #[must_use]
    pub fn new(secret: &str, metrics: TurnMetrics) -> Self {
        Self {
            inner: LongTermAuthHandler::new(secret.to_owned()),
            metrics,
        }
    }

    /// The long-term key of `username` (RFC 5389 15.4), if its
    /// credentials are ours and not expired.
    pub fn key(&self, username: &str, realm: &str, src_addr: SocketAddr) -> Option<Vec<u8>> {
        self.inner.auth_handle(username, realm, src_addr).ok()
    }
}

impl AuthHandler for Auth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        let key = self.inner.auth_handle(username, realm, src_addr);
        if key.is_err() {
            // The server answers 401; with expired credentials the
            // client fetches new ones from the relay.
            tracing::debug!(%src_addr, "TURN credentials refused");
            self.metrics.refused(Refused::Credentials);
        }
        key
    }
}
