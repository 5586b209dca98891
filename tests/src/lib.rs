//! A harness for tests against the real mail servers of Debian 12: it runs
//! private Postfix and Dovecot instances as subprocesses under a temporary
//! directory, on loopback ports picked at random, and never touches a
//! system-wide instance. Every instance stops when its handle is dropped
//! (also when a test panics), and then prints its log if the test failed.
//!
//! Instances are independent, so tests using them run in parallel.
//! Starting them needs root, as Postfix and Dovecot switch users.

mod daemon;
mod dkim;
mod dns;
mod dovecot;
mod generated;
mod http;
mod imap;
mod maildir;
mod metrics;
mod postfix;
mod process;
mod push;
mod recorder;
mod relay;
mod smtp;
mod starttls_sink;
mod tls;
mod transport;
mod turn_client;
mod workdir;

pub use daemon::{Daemon, Ready, daemon_binary, workspace_binary};
pub use dkim::DkimKey;
pub use dns::{DnsMode, DnsServer};
pub use dovecot::{Dovecot, DovecotOptions};
pub use generated::encrypted_message;
pub use http::{HttpAnswer, HttpVersion, http_request, post_mxdeliv};
pub use imap::ImapClient;
pub use maildir::{is_gzip, read_message};
pub use metrics::{Scrape, metrics_ini_values};
pub use postfix::{Postfix, PostfixOptions};
pub use process::{
    assert_held_one_copy, free_port, proc_status_kib, raise_fd_limit, wait_for_files,
    wait_for_path, wait_for_port,
};
pub use push::{PushServer, Recorded};
pub use recorder::Recorder;
pub use relay::{Relay, RelayOptions};
pub use smtp::{SmtpClient, SmtpReply, send_mail};
pub use starttls_sink::StarttlsSink;
pub use tls::{SelfSignedCert, TestCa};
pub use transport::{TransportDaemon, TransportSetup, black_hole};
pub use turn_client::turn_client;
pub use workdir::{VmailUser, WorkDir};

/// A shared test mail (`tests/data/mail/NAME`) from `from` to `to`, its
/// `{subject}` filled in, with CRLF line endings.
#[must_use]
pub fn test_mail(name: &str, from: &str, to: &str) -> String {
    let path = repo_root().join("tests/data/mail").join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    text.replace("{subject}", "Hi")
        .replacen("From: one@example.org", &format!("From: <{from}>"), 1)
        .replacen("From: <one@example.org>", &format!("From: <{from}>"), 1)
        .replacen("To: two@example.org", &format!("To: <{to}>"), 1)
        .replacen("To: <two@example.org>", &format!("To: <{to}>"), 1)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
}

/// Cleartext dressed as the shared encrypted mail from `from` to `to`:
/// each reads as PGP/MIME to a parser that takes the last of several
/// headers, or overlooks a malformed one, and as something else to Delta
/// Chat's parser, which takes the first. Each is named for the messages.
#[must_use]
pub fn mails_read_two_ways(from: &str, to: &str) -> Vec<(&'static str, String)> {
    let encrypted = test_mail("encrypted.eml", from, to);
    let root_type = "Content-Type: multipart/encrypted;";
    let payload_type = "Content-Type: application/octet-stream";
    let variants = [
        (
            "Content-Type twice at the root",
            encrypted.replacen(
                root_type,
                &format!("Content-Type: text/plain\r\n{root_type}"),
                1,
            ),
        ),
        (
            "Content-Type twice in the payload part",
            encrypted.replacen(
                payload_type,
                &format!("Content-Type: text/plain\r\n{payload_type}"),
                1,
            ),
        ),
        (
            "Content-Transfer-Encoding twice in the payload part",
            encrypted.replacen(
                payload_type,
                &format!(
                    "Content-Transfer-Encoding: base64\r\nContent-Transfer-Encoding: 7bit\r\n{payload_type}"
                ),
                1,
            ),
        ),
        (
            "boundary twice",
            encrypted.replacen("boundary=", "boundary=\"other\"; boundary=", 1),
        ),
        (
            "space before the colon of Content-Type",
            encrypted.replacen(root_type, "Content-Type : multipart/encrypted;", 1),
        ),
    ];
    for (what, variant) in &variants {
        assert_ne!(variant, &encrypted, "{what}: the mail changed");
    }
    variants.into()
}

/// Cleartext dressed as a bounce from `from` to `to`: multipart/report
/// from a mailer-daemon, but no delivery status notification.
#[must_use]
pub fn forged_bounces(from: &str, to: &str) -> Vec<(&'static str, String)> {
    let report =
        test_mail("mailer-daemon.eml", "", to).replacen("MAILER-DAEMON@example.org", from, 1);
    let variants = [
        (
            "no delivery-status part",
            report.replacen(
                "content-type: message/delivery-status",
                "content-type: text/plain",
                1,
            ),
        ),
        (
            "another report type",
            report.replacen("report-type=delivery-status", "report-type=spam", 1),
        ),
        (
            "an HTML part",
            report.replacen(
                "content-type: text/plain; charset=us-ascii",
                "content-type: text/html",
                1,
            ),
        ),
    ];
    for (what, variant) in &variants {
        assert_ne!(variant, &report, "{what}: the mail changed");
    }
    variants.into()
}

/// The root of this repository, for reading the integration files we ship.
#[must_use]
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| ".".into(), std::path::Path::to_path_buf)
}
