//! The Debian package that the test command builds (target/debian): its
//! files, lintian without errors, and dpkg installing and removing it on
//! this machine.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use relay_tests::repo_root;

const BINARIES: &[&str] = &[
    "chatmail-configure",
    "doveauth",
    "lastlogin",
    "chatmail-metadata",
    "chatmail-newemail",
    "filtermail",
    "filtermail-outgoing",
    "filtermail-incoming",
    "filtermail-transport",
    "chatmail-expire",
    "chatmail-quota-expire",
    "chatmail-fsreport",
    "iroh-relay",
    "chatmail-turn",
];

fn package() -> Result<PathBuf> {
    let dir = repo_root().join("target/debian");
    let found = fs::read_dir(&dir)
        .with_context(|| {
            format!(
                "{} is missing: build the package first (tests/run does: \
                 cargo deb -p chatmail-relay --profile dev -- --workspace --bins)",
                dir.display()
            )
        })?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("chatmail-relay_"))
        });
    found.context("no chatmail-relay_*.deb in target/debian")
}

fn run(command: &mut Command) -> Result<String> {
    let output = command.output().with_context(|| format!("{command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Every file the package must install (paths without the leading /).
fn expected_files() -> Result<Vec<String>> {
    let mut files: Vec<String> = BINARIES
        .iter()
        .map(|bin| format!("usr/bin/{bin}"))
        .collect();
    for entry in fs::read_dir(repo_root().join("systemd"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        files.push(format!("lib/systemd/system/{name}"));
    }
    for dir in [
        "postfix",
        "dovecot",
        "nginx",
        "www",
        "opendkim",
        "iroh-relay",
    ] {
        for entry in fs::read_dir(repo_root().join(dir))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            files.push(format!("usr/share/chatmail-relay/templates/{dir}/{name}"));
        }
    }
    // journald: the template of chatmail-configure's override, and the
    // package's own drop-in (logs in memory, 3 days).
    files.push("usr/share/chatmail-relay/templates/journald/chatmail.conf".into());
    files.push("usr/lib/systemd/journald.conf.d/chatmail.conf".into());
    files.push("usr/share/chatmail-relay/appversions.json".into());
    files.push("usr/share/doc/chatmail-relay/examples/chatmail.ini".into());
    files.push("usr/share/doc/chatmail-relay/copyright".into());
    Ok(files)
}

#[test]
fn the_package_holds_every_daemon_unit_and_template() -> Result<()> {
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(package()?))?;
    for file in expected_files()? {
        assert!(
            listing.contains(&format!("./{file}\n")),
            "{file} missing in\n{listing}"
        );
    }
    let info = run(Command::new("dpkg-deb").arg("--info").arg(package()?))?;
    for dependency in [
        "postfix",
        "dovecot-core",
        "dovecot-imapd",
        "dovecot-lmtpd",
        "adduser",
        "nginx",
        "libnginx-mod-stream",
        "fcgiwrap",
    ] {
        assert!(info.contains(dependency), "{dependency} missing in\n{info}");
    }
    Ok(())
}

#[test]
fn lintian_finds_no_errors() -> Result<()> {
    let output = Command::new("lintian")
        .args(["--fail-on", "error"])
        .arg(package()?)
        .output()
        .context("running lintian (package lintian)")?;
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(
        !report.lines().any(|line| line.starts_with("E:")),
        "{report}"
    );
    Ok(())
}

#[test]
fn dpkg_installs_and_removes_the_package() -> Result<()> {
    let deb = package()?;
    run(Command::new("dpkg").arg("--install").arg(&deb))?;
    let installed = expected_files()?;
    let missing: Vec<&String> = installed
        .iter()
        .filter(|file| !Path::new("/").join(file).exists())
        .collect();
    // The installed chatmail-configure works with its own templates.
    let dir = tempfile::tempdir()?;
    let ini = dir.path().join("chatmail.ini");
    fs::write(&ini, "[params]\nmail_domain = example.org\n")?;
    let rendered = run(Command::new("/usr/bin/chatmail-configure")
        .arg(&ini)
        .arg("--output")
        .arg(dir.path())
        .arg("--no-check"));
    let vmail = nix::unistd::User::from_name("vmail")?;
    let mail_dir = Path::new("/home/vmail/mail").is_dir();

    run(Command::new("dpkg").arg("--remove").arg("chatmail-relay"))?;
    assert!(missing.is_empty(), "not installed: {missing:?}");
    assert!(rendered.is_ok(), "{rendered:?}");
    assert!(vmail.is_some(), "postinst did not create vmail");
    assert!(mail_dir, "postinst did not create /home/vmail/mail");
    let left: Vec<&String> = installed
        .iter()
        .filter(|file| !file.starts_with("usr/share/doc/"))
        .filter(|file| Path::new("/").join(file).exists())
        .collect();
    assert!(left.is_empty(), "left after removal: {left:?}");
    Ok(())
}
