//! The shared secret TURN credentials are signed with: random, made once
//! (mode 0600) and kept across restarts and upgrades, so that credentials
//! handed out stay valid for their five days.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::{Context as _, Result, bail};

/// Random bytes of a new secret (256 bits).
const SECRET_BYTES: usize = 32;

/// Reads the secret at `path`, creating it first when there is none.
pub fn load_or_create(path: &Path) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(text) => return check(path, text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    let secret: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut file) => {
            file.write_all(format!("{secret}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "created the TURN secret");
            Ok(secret)
        }
        // Another start made it meanwhile: use that one.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            check(path, fs::read_to_string(path)?)
        }
        Err(err) => Err(err).with_context(|| format!("creating {}", path.display())),
    }
}

fn check(path: &Path, text: String) -> Result<String> {
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by others (mode {:o}): anyone who reads it can mint TURN credentials; chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    let secret = text.trim().to_owned();
    if secret.len() < 16 {
        bail!(
            "{} holds no usable secret (at least 16 characters)",
            path.display()
        );
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("turn").join("secret");
        let first = load_or_create(&path).expect("created");
        assert_eq!(first.len(), 64);
        let mode = fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&path).expect("read"), first);
        let other = load_or_create(&dir.path().join("other")).expect("created");
        assert_ne!(other, first, "random, never a constant");
    }

    #[test]
    fn a_secret_others_can_read_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secret");
        fs::write(&path, "0123456789abcdef0123\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = load_or_create(&path).expect_err("refused");
        assert!(error.to_string().contains("chmod 600"), "{error}");
    }
}
