//! `filtermail CONFIG MODE`, the command line of the program we replace:
//! every mode starts the daemon it names on the configured ports, with
//! its metrics endpoint.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use anyhow::Result;
use relay_tests::{Daemon, Ready, Scrape, daemon_binary, free_port, wait_for_port};

#[tokio::test]
async fn every_mode_starts_its_daemon_and_its_metrics() -> Result<()> {
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let (outgoing, incoming, http, transport) =
        (free_port()?, free_port()?, free_port()?, free_port()?);
    let metrics = [free_port()?, free_port()?, free_port()?];
    let ini = dir.path().join("chatmail.ini");
    fs::write(
        &ini,
        format!(
            "[params]\nmail_domain = 127.0.0.1\nmailboxes_dir = {}\n\
             filtermail_smtp_port = {outgoing}\nfiltermail_smtp_port_incoming = {incoming}\n\
             filtermail_http_port_incoming = {http}\nfiltermail_lmtp_port_transport = {transport}\n\
             metrics_listen_filtermail_outgoing = 127.0.0.1:{}\n\
             metrics_listen_filtermail_incoming = 127.0.0.1:{}\n\
             metrics_listen_filtermail_transport = 127.0.0.1:{}\n\
             dns_resolver = 127.0.0.1:{}\n",
            dir.path().join("mail").display(),
            metrics[0],
            metrics[1],
            metrics[2],
            free_port()?,
        ),
    )?;
    let modes = [
        (
            "outgoing",
            outgoing,
            metrics[0],
            "filtermail_messages_total",
        ),
        (
            "incoming",
            incoming,
            metrics[1],
            "filtermail_messages_total",
        ),
        (
            "transport",
            transport,
            metrics[2],
            "filtermail_transport_deliveries_total",
        ),
    ];
    for (mode, port, metrics_port, family) in modes {
        let daemon = Daemon::start(
            "filtermail",
            &[ini.as_os_str(), mode.as_ref()],
            Ready::Port(port),
            dir.path(),
        )?;
        if mode == "incoming" {
            wait_for_port(http, Duration::from_secs(5))?;
        }
        // Each mode serves its own families, and the process's figures.
        let scrape = Scrape::fetch(metrics_port).await?;
        assert!(scrape.text.contains(family), "{mode}: {}", scrape.text);
        assert!(scrape.value("process_resident_memory_bytes")? > 1e6);
        assert!(scrape.value("process_open_fds")? >= 3.0);
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

/// A metrics address that is taken stops the daemon at start, naming the
/// key.
#[test]
fn a_taken_metrics_address_is_an_error_naming_the_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let smtp = free_port()?;
    let ini = dir.path().join("chatmail.ini");
    fs::write(
        &ini,
        format!(
            "[params]\nmail_domain = 127.0.0.1\nmailboxes_dir = {}\n\
             filtermail_smtp_port = {smtp}\n\
             metrics_listen_filtermail_outgoing = {}\n",
            dir.path().join("mail").display(),
            taken.local_addr()?,
        ),
    )?;
    let output = std::process::Command::new(daemon_binary("filtermail-outgoing")?)
        .arg(&ini)
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("metrics_listen_filtermail_outgoing"),
        "{stderr}"
    );
    Ok(())
}
