//! The persistent queue: one file per pending notification in
//! `<mailboxes_dir>/pending_notifications/`, holding `addr\nstart_ts\ntoken`
//! as the daemon we replace writes it, created under a `.tmp` name and
//! renamed into place, so a crash leaves either nothing or a whole file.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

pub const QUEUE_DIR: &str = "pending_notifications";
const TEMP_SUFFIX: &str = ".tmp";

/// One notification as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub addr: String,
    /// When it was first queued, in milliseconds since the epoch (stored
    /// as whole seconds; fractional ones, as older daemons wrote them, are
    /// read too).
    pub start_ms: i64,
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
}

impl Queue {
    /// The queue under `mailboxes_dir`, created if missing.
    pub fn open(mailboxes_dir: &Path) -> io::Result<Self> {
        let dir = mailboxes_dir.join(QUEUE_DIR);
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Stores `pending` durably; returns its id (the file name).
    pub fn store(&self, pending: &Pending) -> io::Result<String> {
        let mut ids = self.store_all(std::slice::from_ref(pending))?;
        ids.pop().ok_or_else(|| io::Error::other("nothing stored"))
    }

    /// Stores every notification durably: files and directory entries
    /// are on disk when it returns (the delivery that queued them is
    /// confirmed after this), with one directory flush for all. Returns
    /// the ids (file names) in order.
    pub fn store_all(&self, pending: &[Pending]) -> io::Result<Vec<String>> {
        let mut ids = Vec::with_capacity(pending.len());
        for one in pending {
            let id = new_id()?;
            let temp = self.dir.join(format!("{id}{TEMP_SUFFIX}"));
            // Whole seconds: the relay we replace reads an integer, so a
            // rollback to it keeps what is queued.
            let seconds = one.start_ms.div_euclid(1000);
            let mut file = fs::File::create(&temp)?;
            file.write_all(format!("{}\n{seconds}\n{}", one.addr, one.token).as_bytes())?;
            file.sync_all()?;
            fs::rename(&temp, self.dir.join(&id))?;
            ids.push(id);
        }
        fs::File::open(&self.dir)?.sync_all()?;
        Ok(ids)
    }

    /// Reads a stored notification; `Ok(None)` when it is gone.
    pub fn load(&self, id: &str) -> io::Result<Option<Pending>> {
        let text = match fs::read_to_string(self.dir.join(id)) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut fields = text.splitn(3, '\n');
        let (Some(addr), Some(start), Some(token)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a queue file",
            ));
        };
        let start = start
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|start| start.is_finite())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad start time"))?;
        Ok(Some(Pending {
            addr: addr.to_owned(),
            start_ms: (start * 1000.0) as i64,
            token: token.trim_end_matches('\n').to_owned(),
        }))
    }

    pub fn remove(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.dir.join(id)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// The ids of every stored notification, after removing the temp
    /// files a crash may have left.
    pub fn recover(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(TEMP_SUFFIX) {
                self.remove(&name)?;
            } else if entry.file_type()?.is_file() {
                ids.push(name);
            }
        }
        Ok(ids)
    }
}

/// 32 random hex digits, like the uuid4 hex names of the Python daemon.
fn new_id() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|error| io::Error::other(error.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_remove_recover() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let pending = Pending {
            addr: "a@x.org".into(),
            start_ms: 1_800_000_000_123,
            token: "tok".into(),
        };
        let id = queue.store(&pending).unwrap();
        assert_eq!(id.len(), 32);
        let stored = fs::read_to_string(dir.path().join(QUEUE_DIR).join(&id)).unwrap();
        assert_eq!(stored, "a@x.org\n1800000000\ntok", "an integer start time");
        let loaded = queue.load(&id).unwrap().unwrap();
        assert_eq!(loaded.start_ms, 1_800_000_000_000, "whole seconds kept");
        assert_eq!((loaded.addr, loaded.token), (pending.addr, pending.token));
        let queue_dir = dir.path().join(QUEUE_DIR);
        fs::write(queue_dir.join("abc.tmp"), "half").unwrap();
        fs::write(queue_dir.join("fromPython"), "b@x.org\n1800000000.25\ntok2").unwrap();
        let mut ids = queue.recover().unwrap();
        ids.sort();
        assert_eq!(ids.len(), 2);
        assert!(!queue_dir.join("abc.tmp").exists());
        assert_eq!(
            queue.load("fromPython").unwrap().unwrap().start_ms,
            1_800_000_000_250
        );
        queue.remove(&id).unwrap();
        queue.remove(&id).unwrap();
        assert_eq!(queue.load(&id).unwrap(), None);
    }
}
