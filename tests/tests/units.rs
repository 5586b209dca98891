//! The systemd units we ship: `systemd-analyze verify` finds nothing to
//! complain about, and each service stays well sandboxed.

use std::fs;
use std::process::Command;

use anyhow::{Context, Result};
use relay_tests::{repo_root, workspace_binary};

/// `systemd-analyze security` rates exposure from 0 (locked down) to 10.
const MAX_EXPOSURE: f64 = 2.0;

#[test]
fn units_verify_cleanly_and_are_sandboxed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bin_dir = workspace_binary("doveauth")?
        .parent()
        .context("binary directory")?
        .to_owned();
    let mut units = Vec::new();
    for entry in fs::read_dir(repo_root().join("systemd"))? {
        let path = entry?.path();
        // The daemons are checked where cargo built them.
        let text =
            fs::read_to_string(&path)?.replace("/usr/bin/", &format!("{}/", bin_dir.display()));
        let copy = dir.path().join(path.file_name().context("unit name")?);
        fs::write(&copy, text)?;
        units.push(copy);
    }
    assert!(units.len() >= 10, "{units:?}");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .context("running systemd-analyze")?;
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );

    for unit in units
        .iter()
        .filter(|unit| unit.extension().is_some_and(|e| e == "service"))
    {
        let output = Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(unit)
            .output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let exposure: f64 = text
            .lines()
            .find_map(|line| line.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .with_context(|| format!("no exposure for {}: {text}", unit.display()))?;
        assert!(exposure <= MAX_EXPOSURE, "{}: {exposure}", unit.display());
    }
    Ok(())
}
