use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A temporary directory that the mail servers' unprivileged users can
/// traverse (tempfile makes 0700 directories).
pub struct WorkDir {
    dir: tempfile::TempDir,
}

impl WorkDir {
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("chatmail-test-")
            .tempdir()
            .context("creating a temporary directory")?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        Ok(Self { dir })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates (and returns) a subdirectory with the given mode.
    pub fn subdir(&self, name: &str, mode: u32) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(path)
    }
}

/// The unprivileged user that owns mailboxes, as on a real relay.
#[derive(Debug, Clone)]
pub struct VmailUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl VmailUser {
    /// Looks up `vmail`, which the test command creates.
    pub fn lookup() -> Result<Self> {
        let Some(user) = nix::unistd::User::from_name("vmail")? else {
            bail!("user vmail does not exist; run the README's test command, which creates it");
        };
        Ok(Self {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }

    /// Gives `path` to vmail, so Dovecot can create mailboxes below it.
    pub fn own(&self, path: &Path) -> Result<()> {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(self.uid)),
            Some(nix::unistd::Gid::from_raw(self.gid)),
        )
        .with_context(|| format!("chown vmail {}", path.display()))
    }
}
