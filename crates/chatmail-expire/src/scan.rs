//! Reading one mailbox: its password file (the last login), its message
//! files in `cur/`, `new/` and `tmp/` of the inbox and of every IMAP
//! subfolder (`.Name/`), and the size of everything else at the top.
//! Symbolic links are never followed: a link is neither entered nor
//! counted, so nothing outside the mailbox is ever looked at or removed.

use std::fs::{self, DirEntry};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::problems::Problems;

/// The maildir directory a message is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Cur,
    New,
    Tmp,
}

impl Part {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "cur" => Some(Self::Cur),
            "new" => Some(Self::New),
            "tmp" => Some(Self::Tmp),
            _ => None,
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Cur => "cur",
            Self::New => "new",
            Self::Tmp => "tmp",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Message {
    pub path: PathBuf,
    /// Modification time, seconds since the epoch: Dovecot keeps it at
    /// the time the message arrived.
    pub mtime: i64,
    /// The size Dovecot's quota counts: `,S=` of the file name, else the
    /// file's size.
    pub size: u64,
    pub part: Part,
}

impl Message {
    /// In `cur/`: the client has seen it.
    #[must_use]
    pub fn is_seen(&self) -> bool {
        self.part == Part::Cur
    }
}

#[derive(Debug, Clone)]
pub struct Mailbox {
    pub dir: PathBuf,
    /// The directory name: the address.
    pub name: String,
    /// The password file's mtime (the day of the last login); `None`
    /// when there is no password file.
    pub last_login: Option<i64>,
    /// The mailbox directory's own mtime.
    pub dir_mtime: i64,
    pub messages: Vec<Message>,
    /// Bytes in regular files at the top of the mailbox (password,
    /// Dovecot indexes, metadata).
    pub extra_bytes: u64,
}

impl Mailbox {
    #[must_use]
    pub fn message_bytes(&self) -> u64 {
        self.messages.iter().map(|message| message.size).sum()
    }
}

/// The size Dovecot put in a maildir file name (`...,S=1234,W=...:2,S`).
#[must_use]
pub fn size_from_name(name: &str) -> Option<u64> {
    let base = name.split_once(':').map_or(name, |(base, _)| base);
    base.split(',')
        .find_map(|field| field.strip_prefix("S="))
        .and_then(|digits| digits.parse().ok())
}

/// Scans the mailbox at `dir`; `None` when it cannot be read at all (it
/// vanished, or permissions forbid it), which `problems` records.
pub fn scan_mailbox(dir: &Path, problems: &Problems) -> Option<Mailbox> {
    let metadata = fs::symlink_metadata(dir)
        .map_err(|error| problems.note(dir, &error))
        .ok()?;
    let entries = fs::read_dir(dir)
        .map_err(|error| problems.note(dir, &error))
        .ok()?;
    let mut mailbox = Mailbox {
        dir: dir.to_owned(),
        name: dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        last_login: None,
        dir_mtime: metadata.mtime(),
        messages: Vec::new(),
        extra_bytes: 0,
    };
    for entry in entries {
        let Some((entry, file_type)) = typed(entry, dir, problems) else {
            continue;
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if file_type.is_dir() {
            if let Some(part) = Part::from_name(&name) {
                scan_part(&entry.path(), part, &mut mailbox.messages, problems);
            } else if name.starts_with('.') {
                scan_subfolder(&entry.path(), &mut mailbox.messages, problems);
            }
        } else if file_type.is_file() {
            match entry.metadata() {
                Ok(metadata) => {
                    mailbox.extra_bytes += metadata.len();
                    if name == "password" {
                        mailbox.last_login = Some(metadata.mtime());
                    }
                }
                Err(error) => problems.note(&entry.path(), &error),
            }
        }
    }
    Some(mailbox)
}

/// An entry with its type as the directory listing gives it (no stat,
/// and a symbolic link is reported as such, not as its target).
fn typed(
    entry: std::io::Result<DirEntry>,
    dir: &Path,
    problems: &Problems,
) -> Option<(DirEntry, fs::FileType)> {
    let entry = entry.map_err(|error| problems.note(dir, &error)).ok()?;
    match entry.file_type() {
        Ok(file_type) => Some((entry, file_type)),
        Err(error) => {
            problems.note(&entry.path(), &error);
            None
        }
    }
}

/// An IMAP subfolder (`.Sent`, `.Archive.2024`): its own cur/new/tmp.
fn scan_subfolder(dir: &Path, messages: &mut Vec<Message>, problems: &Problems) {
    let Ok(entries) = fs::read_dir(dir).map_err(|error| problems.note(dir, &error)) else {
        return;
    };
    for entry in entries {
        let Some((entry, file_type)) = typed(entry, dir, problems) else {
            continue;
        };
        if !file_type.is_dir() {
            continue;
        }
        if let Some(part) = Part::from_name(&entry.file_name().to_string_lossy()) {
            scan_part(&entry.path(), part, messages, problems);
        }
    }
}

fn scan_part(dir: &Path, part: Part, messages: &mut Vec<Message>, problems: &Problems) {
    let Ok(entries) = fs::read_dir(dir).map_err(|error| problems.note(dir, &error)) else {
        return;
    };
    for entry in entries {
        let Some((entry, file_type)) = typed(entry, dir, problems) else {
            continue;
        };
        if !file_type.is_file() {
            continue;
        }
        // DirEntry::metadata does not follow links (fstatat with
        // AT_SYMLINK_NOFOLLOW), and only regular files get here.
        let metadata = match entry.metadata() {
            Ok(metadata) => metadata,
            Err(error) => {
                problems.note(&entry.path(), &error);
                continue;
            }
        };
        let size = size_from_name(&entry.file_name().to_string_lossy()).unwrap_or(metadata.len());
        messages.push(Message {
            path: entry.path(),
            mtime: metadata.mtime(),
            size,
            part,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::size_from_name;

    #[test]
    fn sizes_in_dovecot_names() {
        assert_eq!(
            size_from_name("1700000000.M1P2.host,S=1234,W=1260:2,S"),
            Some(1234)
        );
        assert_eq!(size_from_name("1700000000.M1P2.host,S=77"), Some(77));
        assert_eq!(size_from_name("1700000000.M1P2.host:2,S"), None);
        assert_eq!(size_from_name("x,S=abc"), None);
    }
}
