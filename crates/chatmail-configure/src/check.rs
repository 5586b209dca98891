//! Asks the real Postfix and Dovecot tools whether a rendered
//! configuration is valid, before any server reads it.

use std::path::Path;
use std::process::Command;

use crate::error::ConfigureError;

fn run(command: &mut Command, tool: &'static str) -> Result<String, ConfigureError> {
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
    // Both tools report bad settings as warnings and still succeed.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("warning") || line.contains("Warning"))
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
