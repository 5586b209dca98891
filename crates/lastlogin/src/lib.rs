//! lastlogin: the dict behind Dovecot's last_login plugin. Each login sets
//! `shared/last-login/<addr>` to a unix time; we keep only the day, as the
//! mtime of the account's password file, which is what expiry reads.

use chatmail_config::Mailboxes;
use dovecot_dict::{Change, DictError, DictHandler, Transaction};

pub struct LastLoginDict {
    mailboxes: Mailboxes,
}

impl LastLoginDict {
    #[must_use]
    pub fn new(mailboxes: Mailboxes) -> Self {
        Self { mailboxes }
    }

    fn record(&self, addr: &str, value: &str) -> Result<(), DictError> {
        let Ok(unix_time) = value.trim().parse::<u64>() else {
            tracing::warn!("last-login value is not a unix time");
            return Err(DictError::new("last-login value is not a unix time"));
        };
        // Dovecot sends the time of the login: a day in the future is a
        // wrong clock or a wrong value, and would keep the account from
        // ever expiring.
        if unix_time > now().saturating_add(LOGIN_CLOCK_SKEW) {
            tracing::warn!("last-login time lies in the future");
            return Err(DictError::new("last-login time lies in the future"));
        }
        let mailbox = match self.mailboxes.mailbox(addr) {
            Ok(mailbox) => mailbox,
            Err(err) => {
                tracing::debug!(addr, %err, "ignoring last login of an unusable address");
                return Ok(());
            }
        };
        match mailbox.record_login(unix_time) {
            Ok(_) => Ok(()),
            // The account may have been expired meanwhile: nothing to record.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(addr, "last login of an account without a password file");
                Ok(())
            }
            Err(err) => {
                tracing::error!(%err, "cannot record last login");
                Err(DictError::new("cannot record last login"))
            }
        }
    }
}

/// How far ahead of our clock a login time may be.
const LOGIN_CLOCK_SKEW: u64 = 86_400;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The address in a last_login key (`shared/last-login/<addr>`).
fn last_login_address(key: &str) -> Option<&str> {
    key.strip_prefix("shared/")
        .unwrap_or(key)
        .strip_prefix("last-login/")
}

impl DictHandler for LastLoginDict {
    async fn lookup(&self, _key: &str, _user: &str) -> Result<Option<String>, DictError> {
        Ok(None)
    }

    async fn commit(&self, transaction: Transaction) -> Result<(), DictError> {
        for change in &transaction.changes {
            match change {
                Change::Set { key, value } => match last_login_address(key) {
                    Some(addr) => self.record(addr, value)?,
                    None => tracing::debug!(key, "ignoring a key that is not a last login"),
                },
                other => tracing::debug!(?other, "ignoring a change other than a set"),
            }
        }
        Ok(())
    }
}
