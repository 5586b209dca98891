//! Messages as stored in a relay's maildirs: Dovecot writes them
//! gzip-compressed (zlib_save = gz) and reads plain ones too.

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use flate2::read::MultiGzDecoder;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether the file at `path` is gzip-compressed.
pub fn is_gzip(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 2];
    let read = std::fs::File::open(path)
        .and_then(|mut file| file.read(&mut magic))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(read == magic.len() && magic == GZIP_MAGIC)
}

/// The message text of a maildir file, compressed or not.
pub fn read_message(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if !bytes.starts_with(&GZIP_MAGIC) {
        return String::from_utf8(bytes)
            .with_context(|| format!("{} is not UTF-8", path.display()));
    }
    let mut text = String::new();
    MultiGzDecoder::new(bytes.as_slice())
        .read_to_string(&mut text)
        .with_context(|| format!("decompressing {}", path.display()))?;
    Ok(text)
}
