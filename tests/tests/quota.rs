//! Dovecot's quota plugin with the shipped fragment: passing 75% of the
//! quota makes Dovecot run chatmail-quota-expire, which trims the mailbox
//! to 70%, oldest messages first.

use std::fs::{self, File};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, bail};
use relay_tests::{Relay, RelayOptions, send_mail, wait_for_files};

const USER: &str = "quotauser@[127.0.0.1]";
const PASSWORD: &str = "right-password-1";
const QUOTA_MB: u64 = 10;

fn message(n: usize) -> String {
    // About 1,000,000 bytes: 12,500 lines of 78 characters and CRLF.
    let line = "x".repeat(78);
    let body = vec![line.as_str(); 12_500].join("\r\n");
    format!("From: <sender@[127.0.0.1]>\r\nTo: <{USER}>\r\nSubject: {n}\r\n\r\n{body}\r\n")
}

fn message_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for part in ["cur", "new"] {
        for entry in fs::read_dir(dir.join(part))? {
            total += entry?.metadata()?.len();
        }
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_75_percent_trims_the_mailbox_below_70() -> Result<()> {
    let relay = Relay::start(&RelayOptions {
        ini: vec![("max_mailbox_size".into(), format!("{QUOTA_MB}M"))],
        quota: true,
        ..RelayOptions::default()
    })?;
    assert!(relay.login(USER, PASSWORD).await?);
    let mailbox = relay.mail().join(USER);
    let port = relay.postfix.smtp_port();

    // Four messages from two days ago...
    for n in 0..4 {
        send_mail(port, "sender@[127.0.0.1]", &[USER], &message(n)).await?;
    }
    let old = wait_for_files(&mailbox.join("new"), 4, Duration::from_secs(20))?;
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
    for path in &old {
        File::options()
            .write(true)
            .open(path)?
            .set_modified(two_days_ago)?;
    }
    // ...then fresh ones until the mailbox passes 75% of the quota.
    for n in 4..8 {
        send_mail(port, "sender@[127.0.0.1]", &[USER], &message(n)).await?;
    }
    let quota = QUOTA_MB * 1024 * 1024;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let files: Vec<_> = ["cur", "new"]
            .iter()
            .filter_map(|part| fs::read_dir(mailbox.join(part)).ok())
            .flatten()
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .collect();
        let fresh = files.iter().filter(|path| !old.contains(path)).count();
        let bytes = message_bytes(&mailbox)?;
        // All fresh messages arrived, and old ones went until the mailbox
        // was under 70% of the quota.
        if fresh == 4 && files.len() < 8 && bytes <= quota * 70 / 100 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} messages ({fresh} fresh), {bytes} bytes: never trimmed under 70% of {quota}",
                files.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
