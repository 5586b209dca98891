//! Keeping refused messages for an operator who is debugging delivery
//! problems. Off unless `filtermail_refused_mail_dir` is set: by default
//! no private data stays at rest.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chatmail_smtp::Reply;

/// Files kept at most; further refusals are not stored, so a flood of
/// bad mail cannot fill the disk.
const MAX_FILES: usize = 1000;

pub struct RefusedMail {
    dir: PathBuf,
}

impl RefusedMail {
    #[must_use]
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Stores `message` with the reply it got as its first line.
    pub async fn keep(&self, reply: &Reply, message: Arc<Vec<u8>>) {
        let dir = self.dir.clone();
        let header = format!("X-Filtermail-Refused: {reply}\r\n");
        let stored = tokio::task::spawn_blocking(move || store(&dir, &header, &message)).await;
        match stored {
            Ok(Ok(Some(path))) => tracing::info!(path = %path.display(), "kept refused message"),
            Ok(Ok(None)) => tracing::warn!(
                dir = %self.dir.display(),
                "refused-mail directory is full ({MAX_FILES} files); not keeping this one"
            ),
            Ok(Err(error)) => tracing::error!(
                dir = %self.dir.display(),
                %error,
                "cannot keep refused message"
            ),
            Err(error) => tracing::error!(%error, "keeping a refused message failed"),
        }
    }
}

fn store(dir: &std::path::Path, header: &str, message: &[u8]) -> io::Result<Option<PathBuf>> {
    fs::create_dir_all(dir)?;
    if fs::read_dir(dir)?.take(MAX_FILES).count() >= MAX_FILES {
        return Ok(None);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let path = dir.join(format!(
        "{}.{:09}.{}.eml",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id()
    ));
    // Only the daemon's user may read what strangers sent.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(header.as_bytes())?;
    file.write_all(message)?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_with_reply_and_stops_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = store(
            dir.path(),
            "X-Filtermail-Refused: 523 no\r\n",
            b"Subject: a\r\n\r\nb",
        )
        .unwrap()
        .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("X-Filtermail-Refused: 523 no\r\nSubject: a"));
        for n in 1..MAX_FILES {
            fs::write(dir.path().join(n.to_string()), "").unwrap();
        }
        assert_eq!(store(dir.path(), "", b"x").unwrap(), None);
    }
}
