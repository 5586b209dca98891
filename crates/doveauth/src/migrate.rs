//! One-time migration from the legacy sqlite passdb (a `users` table of
//! address, password hash and last login) into mailbox directories.

use std::fs;
use std::path::{Path, PathBuf};

use chatmail_config::Mailboxes;
use rusqlite::{Connection, OpenFlags};

/// Test and CI accounts of the old relay are not carried over.
const SKIPPED_PREFIXES: [&str; 2] = ["ci-", "ac_"];

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("reading legacy passdb {path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("migrating {addr} from the legacy passdb: {source}")]
    Account {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("renaming the legacy passdb {path}: {source}")]
    Rename {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a migration did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub migrated: usize,
    pub skipped: usize,
    pub renamed_to: PathBuf,
}

/// Migrates `passdb_path` into `mailboxes` if it exists, then renames it
/// to `<name>.old` and removes its `-wal`/`-shm`/`-journal` companions.
/// Returns `Ok(None)` when there is nothing to migrate. Accounts that
/// already have a mailbox keep their current password.
pub fn migrate_legacy_passdb(
    passdb_path: &Path,
    mailboxes: &Mailboxes,
) -> Result<Option<MigrationReport>, MigrationError> {
    if !passdb_path.exists() {
        return Ok(None);
    }
    let db_error = |source| MigrationError::Database {
        path: passdb_path.to_owned(),
        source,
    };
    let connection = Connection::open_with_flags(passdb_path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(db_error)?;
    let mut statement = connection
        .prepare("SELECT * FROM users")
        .map_err(db_error)?;
    let has_last_login = statement.column_count() >= 3;
    let mut rows = statement.query([]).map_err(db_error)?;
    let mut report = MigrationReport::default();
    while let Some(row) = rows.next().map_err(db_error)? {
        let addr: String = row.get(0).map_err(db_error)?;
        let hash: Option<String> = row.get(1).map_err(db_error)?;
        let last_login: Option<i64> = if has_last_login {
            row.get(2).map_err(db_error)?
        } else {
            None
        };
        let skip_prefix = SKIPPED_PREFIXES
            .iter()
            .any(|prefix| addr.starts_with(prefix));
        let (Some(hash), false, Ok(mailbox)) = (hash, skip_prefix, mailboxes.mailbox(&addr)) else {
            report.skipped += 1;
            continue;
        };
        let account_error = |source| MigrationError::Account {
            addr: addr.clone(),
            source,
        };
        if mailbox.password_hash().map_err(account_error)?.is_none() {
            mailbox.write_password_hash(&hash).map_err(account_error)?;
        }
        if let Some(last_login) = last_login.and_then(|ts| u64::try_from(ts).ok()) {
            mailbox.record_login(last_login).map_err(account_error)?;
        }
        report.migrated += 1;
    }
    drop(rows);
    drop(statement);
    drop(connection);

    let mut old_name = passdb_path.as_os_str().to_owned();
    old_name.push(".old");
    report.renamed_to = PathBuf::from(old_name);
    fs::rename(passdb_path, &report.renamed_to).map_err(|source| MigrationError::Rename {
        path: passdb_path.to_owned(),
        source,
    })?;
    remove_companions(passdb_path);
    Ok(Some(report))
}

/// sqlite's `-wal`, `-shm` and `-journal` files belong to the renamed
/// database and would confuse a later one at the old path.
fn remove_companions(passdb_path: &Path) {
    let (Some(dir), Some(name)) = (passdb_path.parent(), passdb_path.file_name()) else {
        return;
    };
    let prefix = format!("{}-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(entry.path());
        }
    }
}
