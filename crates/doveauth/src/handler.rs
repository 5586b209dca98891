//! The dict handler: userdb and passdb lookups, account creation, and the
//! listing of all accounts.

use std::path::PathBuf;
use std::sync::Arc;

use chatmail_config::{Config, Mailbox, Mailboxes};
use dovecot_dict::{DictError, DictHandler, IterateFlags};

use crate::key::{AuthKey, is_userdb_listing};
use crate::metrics::AuthMetrics;
use crate::password::hash_password;
use crate::policy::CreationRules;
use crate::system::read_capacity;

/// The user and group that own mailboxes, as Dovecot should run for them.
const MAIL_USER: &str = "vmail";

pub struct AuthDict {
    inner: Arc<Inner>,
}

struct Inner {
    mailboxes: Mailboxes,
    rules: CreationRules,
    nocreate_file: PathBuf,
    metrics: AuthMetrics,
}

impl AuthDict {
    #[must_use]
    pub fn new(config: &Config, metrics: AuthMetrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                mailboxes: config.mailboxes(),
                rules: CreationRules::from(config),
                nocreate_file: config.nocreate_file.clone(),
                metrics,
            }),
        }
    }
}

/// I/O errors become `F`: an `N` would be cached by Dovecot and lock the
/// user out for the cache's lifetime.
fn internal(context: &str, err: impl std::fmt::Display) -> DictError {
    tracing::error!(%err, "{context}");
    DictError::new(format!("{context}: internal error"))
}

/// The JSON object Dovecot reads as userdb (and passdb) fields.
fn account_json(mailbox: &Mailbox, password_hash: &str) -> String {
    serde_json::json!({
        "home": mailbox.dir(),
        "uid": MAIL_USER,
        "gid": MAIL_USER,
        "addr": mailbox.address(),
        "password": password_hash,
    })
    .to_string()
}

impl Inner {
    /// The mailbox for `user`, or `None` (answered `N`) when the name is
    /// unusable as an address.
    fn mailbox(&self, user: &str) -> Option<Mailbox> {
        match self.mailboxes.mailbox(user) {
            Ok(mailbox) => Some(mailbox),
            Err(err) => {
                tracing::debug!(user, %err, "not a usable address");
                None
            }
        }
    }

    fn existing_account(&self, mailbox: &Mailbox) -> Result<Option<String>, DictError> {
        let hash = mailbox
            .password_hash()
            .map_err(|err| internal("reading password file", err))?;
        Ok(hash.map(|hash| account_json(mailbox, &hash)))
    }

    /// Creates the account if every rule allows it. `Ok(None)` means a
    /// refusal; the rule is logged, the password never is.
    fn create_account(
        &self,
        mailbox: &Mailbox,
        password: &str,
    ) -> Result<Option<String>, DictError> {
        let refusal = match self.nocreate_file.try_exists() {
            Ok(true) => Some(crate::policy::Refusal::NoCreateFile),
            Ok(false) => self
                .rules
                .check_credentials(mailbox.address(), password)
                .err(),
            Err(err) => return Err(internal("checking the nocreate file", err)),
        };
        let refusal = match refusal {
            Some(refusal) => Some(refusal),
            None => {
                let capacity = read_capacity(self.mailboxes.root())
                    .map_err(|err| internal("reading system load", err))?;
                self.rules.check_capacity(&capacity).err()
            }
        };
        if let Some(refusal) = refusal {
            // The line existing dashboards (mtail) count, without the
            // address: addresses are logged at debug level only.
            tracing::info!("registration rejected: {refusal}");
            tracing::debug!(addr = mailbox.address(), "refused address");
            self.metrics.refused(&refusal);
            return Ok(None);
        }
        let hash = hash_password(password).map_err(|err| internal("hashing", err))?;
        let created = mailbox
            .create_account(&hash)
            .map_err(|err| internal("creating account", err))?;
        if created {
            self.metrics.accounts_created.inc();
            // Counted by existing dashboards (mtail); the address itself
            // only at debug level.
            tracing::info!("Created address: {}", redacted(mailbox.address()));
            tracing::debug!(addr = mailbox.address(), "created address");
        }
        // A concurrent login may have won the race: serve whatever hash is
        // on disk now, and let Dovecot check the password against it.
        self.existing_account(mailbox)
    }

    fn list_accounts(&self, path: &str) -> Result<Vec<(String, String)>, DictError> {
        let addresses = match self.mailboxes.addresses() {
            Ok(addresses) => addresses,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(internal("listing mailboxes", err)),
        };
        let mut rows = Vec::new();
        for addr in addresses {
            let addr = addr.map_err(|err| internal("listing mailboxes", err))?;
            rows.push((format!("{path}{addr}"), String::new()));
        }
        Ok(rows)
    }
}

impl AuthDict {
    async fn answer(&self, key: &str) -> Result<Option<String>, DictError> {
        let metrics = &self.inner.metrics;
        match AuthKey::parse(key) {
            // Reading one small file is cheaper than a hop to the blocking
            // pool; it is served from the page cache on a busy relay.
            Some(AuthKey::Userdb { user }) => {
                metrics.lookup("userdb");
                self.userdb(&user)
            }
            Some(AuthKey::Passdb { password, user }) => {
                metrics.lookup("passdb");
                self.passdb(&user, password).await
            }
            None => {
                metrics.lookup("other");
                tracing::debug!("lookup of a key that is not ours");
                Ok(None)
            }
        }
    }

    fn userdb(&self, user: &str) -> Result<Option<String>, DictError> {
        match self.inner.mailbox(user) {
            Some(mailbox) => self.inner.existing_account(&mailbox),
            None => Ok(None),
        }
    }

    async fn passdb(&self, user: &str, password: String) -> Result<Option<String>, DictError> {
        let Some(mailbox) = self.inner.mailbox(user) else {
            return Ok(None);
        };
        if let Some(json) = self.inner.existing_account(&mailbox)? {
            return Ok(Some(json));
        }
        // Creation hashes (milliseconds of CPU) and fsyncs.
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.create_account(&mailbox, &password))
            .await
            .map_err(|err| internal("account creation task", err))?
    }
}

impl DictHandler for AuthDict {
    async fn lookup(&self, key: &str, _user: &str) -> Result<Option<String>, DictError> {
        let answer = self.answer(key).await;
        if answer.is_err() {
            self.inner.metrics.internal_errors.inc();
        }
        answer
    }

    async fn iterate(
        &self,
        path: &str,
        _flags: IterateFlags,
        _user: &str,
    ) -> Result<Vec<(String, String)>, DictError> {
        if !is_userdb_listing(path) {
            return Ok(Vec::new());
        }
        let inner = Arc::clone(&self.inner);
        let path = path.to_owned();
        let listed = tokio::task::spawn_blocking(move || inner.list_accounts(&path))
            .await
            .map_err(|err| internal("listing task", err))
            .flatten();
        if listed.is_err() {
            self.inner.metrics.internal_errors.inc();
        }
        listed
    }
}

/// `user@domain` as `*@domain`: what a log line at info level may say
/// about an account.
fn redacted(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((_, domain)) => format!("*@{domain}"),
        None => "*".to_owned(),
    }
}
