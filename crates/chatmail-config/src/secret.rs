//! Secrets the relay makes for itself (chatmail-turn's credentials key):
//! random (256 bits, hex), written once with mode 0600 and never
//! replaced, so that what was signed with them stays valid across
//! restarts, upgrades and configuration runs.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Random bytes of a new secret.
const SECRET_BYTES: usize = 32;

/// Makes the secret at `path` unless there is one, owned by `owner`
/// (uid, gid) when given, its directory too; whether it was made now.
pub fn ensure_secret(path: &Path, owner: Option<(u32, u32)>) -> io::Result<bool> {
    if fs::symlink_metadata(path).is_ok() {
        return Ok(false);
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        }
    }
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|err| io::Error::other(format!("no randomness: {err}")))?;
    let secret: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file,
        // Made meanwhile by another process: that one stays.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(err) => return Err(err),
    };
    file.write_all(format!("{secret}\n").as_bytes())?;
    file.sync_all()?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::ensure_secret;

    #[test]
    fn made_once_random_and_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("turn").join("secret");
        assert!(ensure_secret(&path, None).expect("made"));
        let first = std::fs::read_to_string(&path).expect("read");
        assert_eq!(first.trim().len(), 64);
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!ensure_secret(&path, None).expect("kept"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), first);
        let other = dir.path().join("other");
        ensure_secret(&other, None).expect("made");
        assert_ne!(std::fs::read_to_string(&other).expect("read"), first);
    }
}
