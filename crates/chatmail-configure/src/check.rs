//! Asks the real Postfix, Dovecot and nginx tools whether a rendered
//! configuration is valid, before any server reads it.

use std::path::Path;
use std::process::Command;

use crate::error::ConfigureError;

pub(crate) fn run(command: &mut Command, tool: &'static str) -> Result<String, ConfigureError> {
    let output = command
        .output()
        .map_err(|source| ConfigureError::ToolMissing { tool, source })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(ConfigureError::ToolFailed {
            tool,
            status: output.status,
            output: format!("{stderr}{stdout}"),
        });
    }
    // The tools report bad settings as warnings and still succeed
    // (postconf and doveconf say "warning", nginx "[warn]").
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| {
            line.contains("warning") || line.contains("Warning") || line.contains("[warn]")
        })
        .collect();
    if !warnings.is_empty() {
        return Err(ConfigureError::ToolWarned {
            tool,
            warnings: warnings.join("\n"),
        });
    }
    Ok(stdout)
}

/// `postconf -n` and `postconf -M` on the directory: every main.cf
/// setting and master.cf service must parse without a warning.
pub fn postfix(config_dir: &Path) -> Result<(), ConfigureError> {
    run(
        Command::new("postconf").arg("-c").arg(config_dir).arg("-n"),
        "postconf -n",
    )?;
    run(
        Command::new("postconf").arg("-c").arg(config_dir).arg("-M"),
        "postconf -M",
    )?;
    Ok(())
}

/// `doveconf -n` on dovecot.conf: Dovecot parses it (and its includes)
/// as the server would.
pub fn dovecot(config_file: &Path) -> Result<String, ConfigureError> {
    run(
        Command::new("doveconf")
            .arg("-c")
            .arg(config_file)
            .arg("-n"),
        "doveconf -n",
    )
}

/// `nginx -t` on a complete nginx.conf, with nginx's own start-up log in
/// `error_log` (the default one may not be writable).
pub fn nginx(config_file: &Path, error_log: &Path) -> Result<(), ConfigureError> {
    run(
        Command::new("nginx")
            .arg("-t")
            .arg("-q")
            .arg("-c")
            .arg(config_file)
            .arg("-e")
            .arg(error_log),
        "nginx -t",
    )
    .map(drop)
}

/// Checks a rendered main nginx.conf (which includes the site), with
/// nginx's start-up log in `scratch`.
pub fn nginx_site(nginx_conf: &Path, scratch: &Path) -> Result<(), ConfigureError> {
    std::fs::create_dir_all(scratch).map_err(|source| ConfigureError::Io {
        action: "writing",
        path: scratch.to_owned(),
        source,
    })?;
    nginx(nginx_conf, &scratch.join("error.log"))
}

/// `opendkim -n`: OpenDKIM parses the configuration (and opens its key
/// and signing tables) and reports what it cannot use.
pub fn opendkim(conf: &Path) -> Result<(), ConfigureError> {
    run(
        Command::new("opendkim").arg("-n").arg("-x").arg(conf),
        "opendkim -n",
    )
    .map(drop)
}
