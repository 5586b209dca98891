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

/// Every daemon with a metrics endpoint may open a TCP socket: a unit
/// restricted to unix sockets would stop it at start.
#[test]
fn daemons_with_metrics_may_listen_on_tcp() -> Result<()> {
    for daemon in chatmail_config::MetricsDaemon::ALL {
        let key = daemon.config_key();
        let Some(name) = key.strip_prefix("metrics_listen_") else {
            anyhow::bail!("{key}");
        };
        // Dovecot's unit is Debian's own.
        if name == "dovecot" {
            continue;
        }
        let unit = repo_root()
            .join("systemd")
            .join(format!("{}.service", name.replace('_', "-")));
        let text = fs::read_to_string(&unit).with_context(|| unit.display().to_string())?;
        let families = text
            .lines()
            .find_map(|line| line.strip_prefix("RestrictAddressFamilies="))
            .with_context(|| format!("{}: no RestrictAddressFamilies", unit.display()))?;
        for family in ["AF_INET", "AF_INET6"] {
            assert!(
                families.split_whitespace().any(|each| each == family),
                "{}: {families}",
                unit.display()
            );
        }
    }
    Ok(())
}
