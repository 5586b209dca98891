//! `filtermail CONFIG MODE`, the command line of the program we replace:
//! every mode starts the daemon it names on the configured ports.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use anyhow::Result;
use relay_tests::{Daemon, Ready, daemon_binary, free_port, wait_for_port};

#[test]
fn every_mode_starts_its_daemon() -> Result<()> {
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let (outgoing, incoming, http, transport) =
        (free_port()?, free_port()?, free_port()?, free_port()?);
    let ini = dir.path().join("chatmail.ini");
    fs::write(
        &ini,
        format!(
            "[params]\nmail_domain = 127.0.0.1\nmailboxes_dir = {}\n\
             filtermail_smtp_port = {outgoing}\nfiltermail_smtp_port_incoming = {incoming}\n\
             filtermail_http_port_incoming = {http}\nfiltermail_lmtp_port_transport = {transport}\n\
             dns_resolver = 127.0.0.1:{}\n",
            dir.path().join("mail").display(),
            free_port()?,
        ),
    )?;
    for (mode, port) in [
        ("outgoing", outgoing),
        ("incoming", incoming),
        ("transport", transport),
    ] {
        let daemon = Daemon::start(
            "filtermail",
            &[ini.as_os_str(), mode.as_ref()],
            Ready::Port(port),
            dir.path(),
        )?;
        if mode == "incoming" {
            wait_for_port(http, Duration::from_secs(5))?;
        }
        daemon.stop();
    }
    let output = std::process::Command::new(daemon_binary("filtermail")?)
        .arg(&ini)
        .arg("sideways")
        .output()?;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("sideways"));
    Ok(())
}
