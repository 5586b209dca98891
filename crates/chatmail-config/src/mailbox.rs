//! One directory per address under `mailboxes_dir`, holding the password
//! hash, flag files and the Maildir. The layout is shared with Dovecot and
//! with the relay we replace, so names and formats here are fixed.

use std::fs::{self, File, FileTimes};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::address::EnvelopeAddress;
use crate::error::AddressError;

const PASSWORD_FILE: &str = "password";
const ENFORCE_E2EE_FILE: &str = "enforceE2EEincoming";
const DISABLED_FILE: &str = "DISABLED";
const SECONDS_PER_DAY: u64 = 86_400;
/// Linux NAME_MAX: an address longer than this cannot be a directory.
const MAX_ADDRESS_BYTES: usize = 255;

/// The directory that holds every mailbox.
#[derive(Debug, Clone)]
pub struct Mailboxes {
    root: PathBuf,
}

impl Mailboxes {
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The mailbox of `addr`, if `addr` is safe to use as a single directory
    /// name below the root. Nothing is touched on disk.
    pub fn mailbox(&self, addr: &str) -> Result<Mailbox, AddressError> {
        check_address(addr)?;
        Ok(Mailbox {
            dir: self.root.join(addr),
            addr: addr.to_owned(),
        })
    }

    /// The mailbox of a local account; `None` for remote addresses.
    #[must_use]
    pub fn account(&self, address: &EnvelopeAddress) -> Option<Mailbox> {
        match address {
            EnvelopeAddress::Local(account) => self.mailbox(account).ok(),
            EnvelopeAddress::Remote(_) => None,
        }
    }

    /// Every address that has a mailbox directory, in directory order.
    /// Entries without `@` (such as `pending_notifications`) and anything
    /// that is not a real directory are skipped.
    pub fn addresses(&self) -> io::Result<impl Iterator<Item = io::Result<String>> + use<>> {
        let entries = fs::read_dir(&self.root)?;
        Ok(entries.filter_map(|entry| {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => return Some(Err(err)),
            };
            let name = entry.file_name().into_string().ok()?;
            let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
            (is_dir && check_address(&name).is_ok()).then_some(Ok(name))
        }))
    }
}

fn check_address(addr: &str) -> Result<(), AddressError> {
    if addr.is_empty() {
        return Err(AddressError::Empty);
    }
    if !addr.contains('@') {
        return Err(AddressError::NoAt);
    }
    if addr
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(AddressError::UnsafeCharacter);
    }
    if addr.contains("..") {
        return Err(AddressError::DotDot);
    }
    if addr.len() > MAX_ADDRESS_BYTES {
        return Err(AddressError::TooLong);
    }
    Ok(())
}

/// One address's directory. Holding a `Mailbox` proves the address was
/// checked; the directory itself may not exist yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    addr: String,
    dir: PathBuf,
}

impl Mailbox {
    #[must_use]
    pub fn address(&self) -> &str {
        &self.addr
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    #[must_use]
    pub fn password_path(&self) -> PathBuf {
        self.dir.join(PASSWORD_FILE)
    }

    /// The stored Dovecot password hash (`{SHA512-CRYPT}$6$...`), or `None`
    /// when the account does not exist.
    pub fn password_hash(&self) -> io::Result<Option<String>> {
        match fs::read_to_string(self.password_path()) {
            Ok(text) => Ok(Some(text.trim_end().to_owned())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Stores the password hash atomically, creating the directory. A
    /// reader sees the old hash or the new one, never a partial file.
    pub fn write_password_hash(&self, hash: &str) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        write_atomic(&self.password_path(), hash.as_bytes())
    }

    /// Creates the account with `hash` unless it exists already, and marks
    /// it as refusing cleartext mail. Safe against concurrent creators,
    /// in this process or another: the password file appears atomically
    /// and is never replaced, so exactly one caller gets `Ok(true)`.
    pub fn create_account(&self, hash: &str) -> io::Result<bool> {
        fs::create_dir_all(&self.dir)?;
        // The flag exists before the account does, so no reader ever sees
        // a new account that accepts cleartext.
        self.set_enforce_e2ee_incoming()?;
        let mut temp = tempfile::Builder::new()
            .prefix(".tmp-password-")
            .tempfile_in(&self.dir)?;
        temp.write_all(hash.as_bytes())?;
        temp.as_file().sync_all()?;
        match temp.persist_noclobber(self.password_path()) {
            Ok(_) => Ok(true),
            Err(err) if err.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(err.error),
        }
    }

    /// Whether cleartext mail to this address is refused.
    pub fn enforces_e2ee_incoming(&self) -> io::Result<bool> {
        self.dir.join(ENFORCE_E2EE_FILE).try_exists()
    }

    pub fn set_enforce_e2ee_incoming(&self) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        File::create(self.dir.join(ENFORCE_E2EE_FILE)).map(drop)
    }

    /// Whether the address is switched off by the operator.
    pub fn is_disabled(&self) -> io::Result<bool> {
        self.dir.join(DISABLED_FILE).try_exists()
    }

    /// The start (UTC midnight, seconds since the epoch) of the day of the
    /// last login, or `None` when the account does not exist.
    pub fn last_login(&self) -> io::Result<Option<u64>> {
        match fs::metadata(self.password_path()) {
            Ok(meta) => Ok(Some(day_start(unix_seconds(meta.modified()?)))),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Records a login at `unix_time` with day granularity (so the file
    /// system leaks no more than the day). Returns whether anything was
    /// written: nothing is when the day is already recorded.
    pub fn record_login(&self, unix_time: u64) -> io::Result<bool> {
        let day = day_start(unix_time);
        let path = self.password_path();
        let file = File::options().write(true).open(&path)?;
        let current = unix_seconds(file.metadata()?.modified()?);
        if current == day {
            return Ok(false);
        }
        let when = UNIX_EPOCH
            .checked_add(Duration::from_secs(day))
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "login time out of range")
            })?;
        file.set_times(FileTimes::new().set_accessed(when).set_modified(when))?;
        Ok(true)
    }
}

/// Seconds since the epoch, clamping times before 1970 to zero.
fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The UTC midnight that starts the day of `unix_time`.
#[must_use]
pub fn day_start(unix_time: u64) -> u64 {
    unix_time - unix_time % SECONDS_PER_DAY
}

/// Writes `data` to a temporary file next to `path`, flushes it to disk and
/// renames it over `path`, so that readers never see a partial file.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut temp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    temp.write_all(data)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|err| err.error)?;
    Ok(())
}
