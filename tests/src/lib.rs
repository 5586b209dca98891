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

/// The root of this repository, for reading the integration files we ship.
#[must_use]
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| ".".into(), std::path::Path::to_path_buf)
}
