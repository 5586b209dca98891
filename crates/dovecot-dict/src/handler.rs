use std::future::Future;

use crate::command::IterateFlags;

/// A failure inside a handler. The dict client sees `F` (and Dovecot logs
/// the reason), so the reason must not carry secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DictError {
    reason: String,
}

impl DictError {
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// One change inside a transaction, in the order the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set { key: String, value: String },
    Unset { key: String },
    Append { key: String, value: String },
    AtomicInc { key: String, diff: i64 },
}

/// A committed transaction: everything between `B` and `C`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transaction {
    pub id: u32,
    /// The user named in `B`, or in the connection's hello.
    pub user: String,
    /// The dict name of the connection's hello (`proxy:<socket>:<name>`
    /// in Dovecot's configuration): tells which Dovecot service wrote.
    pub dict_name: String,
    pub changes: Vec<Change>,
}

/// What a dict server does with requests. Keys arrive as Dovecot sends
/// them, with their `shared/` or `priv/` prefix. One connection's requests
/// are handled one at a time; connections run concurrently.
pub trait DictHandler: Send + Sync + 'static {
    /// `Ok(None)` answers `N` ("no such key"): Dovecot may cache it, so a
    /// handler that cannot tell must return an error instead.
    fn lookup(
        &self,
        key: &str,
        user: &str,
    ) -> impl Future<Output = Result<Option<String>, DictError>> + Send;

    /// All `(key, value)` pairs below `path`.
    fn iterate(
        &self,
        path: &str,
        flags: IterateFlags,
        user: &str,
    ) -> impl Future<Output = Result<Vec<(String, String)>, DictError>> + Send {
        let _ = (path, flags, user);
        async { Err(DictError::new("iteration is not supported")) }
    }

    /// Applies a transaction. Called only for transactions that stayed
    /// within the server's limits.
    fn commit(
        &self,
        transaction: Transaction,
    ) -> impl Future<Output = Result<(), DictError>> + Send {
        let _ = transaction;
        async { Err(DictError::new("this dict is read-only")) }
    }
}
