//! The shared secret TURN credentials are signed with: made by
//! chatmail-configure when the relay is configured, or here at the first
//! start when it was not (see [`chatmail_config::ensure_secret`]), and
//! refused when others may read it.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use anyhow::{Context as _, Result, bail};

/// Reads the secret at `path`, making it first when there is none.
pub fn load_or_create(path: &Path) -> Result<String> {
    if chatmail_config::ensure_secret(path, None)
        .with_context(|| format!("creating {}", path.display()))?
    {
        tracing::info!(path = %path.display(), "created the TURN secret");
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    check(path, text)
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
    fn made_when_missing_then_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("turn").join("secret");
        let first = load_or_create(&path).expect("created");
        assert_eq!(first.len(), 64, "the hex, without its line end");
        assert_eq!(load_or_create(&path).expect("read"), first);
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
