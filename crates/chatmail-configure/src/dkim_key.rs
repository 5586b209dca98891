//! The relay's DKIM signing key: created once (RSA 2048, by openssl),
//! readable by OpenDKIM only, and its public half as the DNS record
//! other relays verify with.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use crate::check::run;
use crate::error::ConfigureError;
use crate::layout::OpenDkimLayout;

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ConfigureError {
    let path = path.to_owned();
    move |source| ConfigureError::Io {
        action,
        path,
        source,
    }
}

/// Creates the key of `selector` unless it exists; returns whether it
/// was created. An existing key is never replaced: its public half is in
/// DNS.
pub fn ensure_key(opendkim: &OpenDkimLayout, selector: &str) -> Result<bool, ConfigureError> {
    let key = opendkim.key_file(selector);
    if key.exists() {
        return Ok(false);
    }
    let dir = &opendkim.key_dir;
    fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io_error("restricting", dir))?;
    // Written beside the key and renamed: a key is there whole or not.
    let partial = dir.join(format!(".{selector}.private.new"));
    run(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .arg("-out")
            .arg(&partial),
        "openssl genpkey",
    )?;
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o600))
        .map_err(io_error("restricting", &partial))?;
    if let Some(user) = &opendkim.user {
        let owner = nix::unistd::User::from_name(user)
            .map_err(ConfigureError::UserLookup)?
            .ok_or_else(|| ConfigureError::NoUser(user.clone()))?;
        for path in [dir.as_path(), partial.as_path()] {
            nix::unistd::chown(path, Some(owner.uid), Some(owner.gid))
                .map_err(|errno| io_error("changing the owner of", path)(errno.into()))?;
        }
    }
    fs::rename(&partial, &key).map_err(io_error("writing", &key))?;
    Ok(true)
}

/// The TXT record at `<selector>._domainkey.<domain>` for `key_file`:
/// `v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo, base64>`. The PEM form of
/// the public key is that base64 between its armor lines.
pub fn dns_record(key_file: &Path) -> Result<String, ConfigureError> {
    let pem = run(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(key_file),
        "openssl pkey",
    )?;
    let public: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .map(str::trim)
        .collect();
    if public.is_empty() {
        return Err(ConfigureError::ToolGaveNothing {
            tool: "openssl pkey",
            missing: format!("public key for {}", key_file.display()),
        });
    }
    Ok(format!("v=DKIM1; k=rsa; p={public}"))
}
