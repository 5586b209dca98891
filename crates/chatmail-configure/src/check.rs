//! Asks the real Postfix and Dovecot tools whether a rendered
//! configuration is valid, before any server reads it.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

fn run(command: &mut Command, what: &str) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {what}; is it installed?"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("{what} failed ({}):\n{stderr}{stdout}", output.status);
    }
    // Both tools report bad settings as warnings and still succeed.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("warning") || line.contains("Warning"))
        .collect();
    if !warnings.is_empty() {
        bail!("{what} warns:\n{}", warnings.join("\n"));
    }
    Ok(stdout)
}

/// `postconf -n` and `postconf -M` on the directory: every main.cf
/// setting and master.cf service must parse without a warning.
pub fn postfix(config_dir: &Path) -> Result<()> {
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

/// `postfix check`, which also checks the queue directory's owners and
/// modes (so it needs the queue to exist, and root).
pub fn postfix_queue(config_dir: &Path) -> Result<()> {
    run(
        Command::new("postfix")
            .arg("-c")
            .arg(config_dir)
            .arg("check"),
        "postfix check",
    )
    .map(drop)
}

/// `doveconf -n` on dovecot.conf: Dovecot parses it (and its includes)
/// as the server would.
pub fn dovecot(config_file: &Path) -> Result<String> {
    run(
        Command::new("doveconf")
            .arg("-c")
            .arg(config_file)
            .arg("-n"),
        "doveconf -n",
    )
}
