//! Per-connection protocol state: the hello, and the transactions opened
//! with `B` and not yet committed or rolled back. Transaction ids belong to
//! one connection only.

use std::collections::HashMap;

use crate::command::{Command, CommandError, IterateFlags};
use crate::handler::{Change, DictHandler, Transaction};
use crate::reply::Reply;

/// Protocol major versions whose line formats we speak (Dovecot 2.3 sends
/// 3, Dovecot 2.4 sends 4 with compatible lines).
const SUPPORTED_MAJOR: std::ops::RangeInclusive<u32> = 2..=4;

/// Bounds on what one connection may hold open.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub max_open_transactions: usize,
    pub max_changes_per_transaction: usize,
    /// Bytes of keys and values held in all open transactions of one
    /// connection; beyond it a transaction's changes are dropped and its
    /// commit fails (Dovecot's own transactions hold a few KiB).
    pub max_transaction_bytes: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_open_transactions: 128,
            max_changes_per_transaction: 10_000,
            max_transaction_bytes: 1 << 20,
        }
    }
}

/// What the connection should do after a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// Drop the connection; the reason is for the log.
    Close(String),
}

struct OpenTransaction {
    transaction: Transaction,
    /// Bytes of keys and values in `transaction`.
    bytes: usize,
    /// Set when the client sent more changes than we keep; the commit
    /// then fails instead of applying a truncated transaction.
    overflowed: bool,
}

pub struct Session {
    user: String,
    dict_name: String,
    limits: SessionLimits,
    open: HashMap<u32, OpenTransaction>,
    /// Bytes held in all open transactions.
    held_bytes: usize,
}

impl Session {
    #[must_use]
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            user: String::new(),
            dict_name: String::new(),
            limits,
            open: HashMap::new(),
            held_bytes: 0,
        }
    }

    /// The dict name from the client's hello (`auth`, `metadata`, ...).
    #[must_use]
    pub fn dict_name(&self) -> &str {
        &self.dict_name
    }

    /// Handles one line (without LF), appending any reply to `out`.
    pub async fn handle_line<H: DictHandler>(
        &mut self,
        handler: &H,
        line: &[u8],
        out: &mut String,
    ) -> Outcome {
        let Ok(text) = std::str::from_utf8(line) else {
            let letter = line.first().map_or('\0', |&b| char::from(b));
            let error = CommandError::Malformed {
                command: letter,
                reason: "not UTF-8",
            };
            return refuse(&error, out);
        };
        match Command::parse(text) {
            Ok(command) => self.handle(handler, command, out).await,
            Err(error) => refuse(&error, out),
        }
    }

    /// Handles one decoded command, appending any reply to `out`.
    pub async fn handle<H: DictHandler>(
        &mut self,
        handler: &H,
        command: Command,
        out: &mut String,
    ) -> Outcome {
        match command {
            Command::Hello {
                major,
                minor: _,
                user,
                dict_name,
            } => {
                if !SUPPORTED_MAJOR.contains(&major) {
                    return Outcome::Close(format!("unsupported protocol version {major}"));
                }
                self.user = user;
                self.dict_name = dict_name;
            }
            Command::Lookup { key, user } => {
                let reply = match handler.lookup(&key, self.user_or(&user)).await {
                    Ok(Some(value)) => Reply::Value(value),
                    Ok(None) => Reply::NotFound,
                    Err(error) => Reply::Failed(error.to_string()),
                };
                reply.encode_into(out);
            }
            Command::Iterate {
                flags,
                max_rows,
                paths,
                user,
            } => {
                let user = self.user_or(&user).to_owned();
                self.iterate(handler, flags, max_rows, &paths, &user, out)
                    .await;
            }
            Command::Begin { id, user } => {
                if self.open.contains_key(&id) {
                    return Outcome::Close(format!("transaction {id} already exists"));
                }
                if self.open.len() >= self.limits.max_open_transactions {
                    return Outcome::Close("too many open transactions".into());
                }
                let user = self.user_or(&user).to_owned();
                self.open.insert(
                    id,
                    OpenTransaction {
                        transaction: Transaction {
                            id,
                            user,
                            dict_name: self.dict_name.clone(),
                            changes: Vec::new(),
                        },
                        bytes: 0,
                        overflowed: false,
                    },
                );
            }
            Command::Commit { id, asynchronous } => {
                let ok = match self.close_transaction(id) {
                    Some(open) if !open.overflowed => {
                        match handler.commit(open.transaction).await {
                            Ok(()) => true,
                            Err(error) => {
                                tracing::warn!(%error, "dict commit failed");
                                false
                            }
                        }
                    }
                    Some(_) => {
                        tracing::warn!(id, "dict transaction was too large");
                        false
                    }
                    None => {
                        tracing::warn!(id, "commit of unknown dict transaction");
                        false
                    }
                };
                Reply::Commit {
                    id,
                    ok,
                    asynchronous,
                }
                .encode_into(out);
            }
            Command::Rollback { id } => {
                if self.close_transaction(id).is_none() {
                    return Outcome::Close(format!("rollback of unknown transaction {id}"));
                }
            }
            Command::Set { id, key, value } => return self.record(id, Change::Set { key, value }),
            Command::Unset { id, key } => return self.record(id, Change::Unset { key }),
            Command::Append { id, key, value } => {
                return self.record(id, Change::Append { key, value });
            }
            Command::AtomicInc { id, key, diff } => {
                return self.record(id, Change::AtomicInc { key, diff });
            }
            Command::Timestamp { id, .. } | Command::HideLogValues { id, .. } => {
                if !self.open.contains_key(&id) {
                    return Outcome::Close(format!("unknown transaction {id}"));
                }
            }
        }
        Outcome::Continue
    }

    fn user_or<'a>(&'a self, user: &'a str) -> &'a str {
        if user.is_empty() { &self.user } else { user }
    }

    fn close_transaction(&mut self, id: u32) -> Option<OpenTransaction> {
        let open = self.open.remove(&id)?;
        self.held_bytes -= open.bytes;
        Some(open)
    }

    fn record(&mut self, id: u32, change: Change) -> Outcome {
        let Some(open) = self.open.get_mut(&id) else {
            return Outcome::Close(format!("change in unknown transaction {id}"));
        };
        if open.overflowed {
            return Outcome::Continue;
        }
        let size = change_bytes(&change);
        let too_many = open.transaction.changes.len() >= self.limits.max_changes_per_transaction;
        if too_many || self.held_bytes + size > self.limits.max_transaction_bytes {
            // The whole transaction fails at commit; nothing of it is kept.
            open.overflowed = true;
            open.transaction.changes = Vec::new();
            self.held_bytes -= open.bytes;
            open.bytes = 0;
        } else {
            open.transaction.changes.push(change);
            open.bytes += size;
            self.held_bytes += size;
        }
        Outcome::Continue
    }

    async fn iterate<H: DictHandler>(
        &self,
        handler: &H,
        flags: IterateFlags,
        max_rows: u64,
        paths: &[String],
        user: &str,
        out: &mut String,
    ) {
        let mut rows = Vec::new();
        for path in paths {
            match handler.iterate(path, flags, user).await {
                Ok(found) => rows.extend(found),
                Err(error) => {
                    tracing::warn!(%error, "dict iteration failed");
                    Reply::IterationFailed.encode_into(out);
                    return;
                }
            }
        }
        let limit = match usize::try_from(max_rows) {
            Ok(0) | Err(_) => usize::MAX,
            Ok(limit) => limit,
        };
        let without_values = flags.contains(IterateFlags::NO_VALUE);
        for (key, value) in rows.into_iter().take(limit) {
            let value = if without_values { String::new() } else { value };
            Reply::Row { key, value }.encode_into(out);
        }
        Reply::IterationDone.encode_into(out);
    }
}

/// Answers `F` where the client waits for a reply, else asks to close.
/// What a change holds in memory, near enough.
fn change_bytes(change: &Change) -> usize {
    match change {
        Change::Set { key, value } | Change::Append { key, value } => key.len() + value.len(),
        Change::Unset { key } | Change::AtomicInc { key, .. } => key.len() + 8,
    }
}

fn refuse(error: &CommandError, out: &mut String) -> Outcome {
    if error.expects_reply() {
        tracing::warn!(%error, "refusing dict command");
        Reply::Failed(error.to_string()).encode_into(out);
        Outcome::Continue
    } else {
        Outcome::Close(error.to_string())
    }
}
