//! Reads a DATA section: dot-unstuffing and end detection by smtp-proto,
//! plus the two defences the engine adds. The size limit is enforced
//! while reading (what is over the limit is discarded, not buffered), and
//! bare CR or LF anywhere is flagged, as Postfix's
//! smtpd_forbid_bare_newline does, so that a smuggled "end of data"
//! cannot split one message into two.

use smtp_proto::request::receiver::DataReceiver;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    TooBig,
    BareNewline,
    /// The daemon's message budget could not hold it now.
    NoMemory,
}

pub struct DataReader {
    receiver: DataReceiver,
    message: Vec<u8>,
    limit: usize,
    received: usize,
    previous: u8,
    error: Option<DataError>,
}

impl DataReader {
    #[must_use]
    pub fn new(limit: usize) -> Self {
        // smtp-proto's receiver starts as if in the middle of a line, so a
        // first line "." would not end the data nor a first ".." be
        // unstuffed; the CRLF that ended the DATA command starts it right.
        let mut receiver = DataReceiver::new();
        let mut primed = Vec::with_capacity(2);
        receiver.ingest(&mut b"\r\n".iter(), &mut primed);
        Self {
            receiver,
            message: Vec::new(),
            limit,
            received: 0,
            // DATA's own line ended in CRLF.
            previous: b'\n',
            error: None,
        }
    }

    /// Whether the data read so far is still kept (no error yet).
    #[must_use]
    pub fn is_storing(&self) -> bool {
        self.error.is_none()
    }

    /// Bytes of message kept so far.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.message.len()
    }

    /// Refuses the message: the rest of the data is read but not kept,
    /// and the end of data reports `error`.
    pub fn refuse(&mut self, error: DataError) {
        self.error.get_or_insert(error);
        self.message = Vec::new();
    }

    /// Consumes bytes from `input`; returns `Some` once the terminating
    /// `.` line has been read, leaving any pipelined bytes after it.
    pub fn ingest(
        &mut self,
        input: &mut std::slice::Iter<'_, u8>,
    ) -> Option<Result<Vec<u8>, DataError>> {
        let before = input.as_slice();
        if self.error.is_none() {
            // The receiver appends byte by byte: room for the whole read
            // at once saves a reallocation at every doubling.
            self.message.reserve(before.len());
        }
        let done = self.receiver.ingest(input, &mut self.message);
        let consumed = before
            .get(..before.len() - input.as_slice().len())
            .unwrap_or_default();
        self.scan(consumed);
        self.received += consumed.len();
        if self.received > self.limit.saturating_add(5) {
            self.error.get_or_insert(DataError::TooBig);
        }
        if self.error.is_some() {
            // Keep reading to the end, but nothing more is stored.
            self.message.clear();
        }
        if !done {
            return None;
        }
        let message = std::mem::take(&mut self.message);
        Some(match self.error {
            Some(error) => Err(error),
            None if message.len() > self.limit => Err(DataError::TooBig),
            None => Ok(message),
        })
    }

    fn scan(&mut self, bytes: &[u8]) {
        let Some(&last) = bytes.last() else {
            return;
        };
        // A CR must be followed by LF and an LF preceded by CR: in every
        // pair of neighbours, "is CR" and "is LF next" agree. Folded
        // without an early exit, the compiler checks many pairs at once.
        let first_pair = (self.previous == b'\r') != (bytes.first() == Some(&b'\n'));
        let bare = bytes
            .iter()
            .zip(bytes.iter().skip(1))
            .fold(first_pair, |bare, (&byte, &next)| {
                bare | ((byte == b'\r') != (next == b'\n'))
            });
        if bare {
            self.error.get_or_insert(DataError::BareNewline);
        }
        self.previous = last;
    }
}

#[cfg(test)]
mod tests {
    use super::{DataError, DataReader};

    fn read(limit: usize, chunks: &[&[u8]]) -> (Option<Result<Vec<u8>, DataError>>, Vec<u8>) {
        let mut reader = DataReader::new(limit);
        let mut rest = Vec::new();
        for chunk in chunks {
            let mut input = chunk.iter();
            if let Some(result) = reader.ingest(&mut input) {
                rest.extend_from_slice(input.as_slice());
                return (Some(result), rest);
            }
        }
        (None, rest)
    }

    #[test]
    fn unstuffs_and_stops_at_the_end_marker() {
        let (result, rest) = read(1000, &[b"a\r\n..b\r\n", b".\r\nQUIT\r\n"]);
        assert_eq!(result, Some(Ok(b"a\r\n.b\r\n".to_vec())));
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn the_first_line_is_a_line_too() {
        // RFC 5321 4.1.1.4 and 4.5.2: the end marker and dot-stuffing
        // apply from the very first line of the data.
        let (result, rest) = read(1000, &[b".\r\nQUIT\r\n"]);
        assert_eq!(result, Some(Ok(Vec::new())), "an empty message");
        assert_eq!(rest, b"QUIT\r\n");
        let (result, _) = read(1000, &[b"..leading\r\nnext\r\n.\r\n"]);
        assert_eq!(result, Some(Ok(b".leading\r\nnext\r\n".to_vec())));
        let (result, _) = read(1000, &[b".", b".x\r\n.\r\n"]);
        assert_eq!(result, Some(Ok(b".x\r\n".to_vec())), "split after the dot");
    }

    #[test]
    fn end_marker_split_across_reads() {
        let (result, _) = read(1000, &[b"hello\r", b"\n.", b"\r", b"\n"]);
        assert_eq!(result, Some(Ok(b"hello\r\n".to_vec())));
    }

    #[test]
    fn bare_lf_smuggling_is_refused_as_one_message() {
        let smuggled: &[u8] =
            b"a\r\n\n.\r\nMAIL FROM:<x@y>\r\nRCPT TO:<z@y>\r\nDATA\r\nevil\r\n.\r\n";
        let (result, rest) = read(1000, &[smuggled]);
        assert_eq!(result, Some(Err(DataError::BareNewline)));
        assert!(rest.is_empty(), "nothing after the real end: {rest:?}");
        let (result, _) = read(1000, &[b"a\rb\r\n.\r\n"]);
        assert_eq!(result, Some(Err(DataError::BareNewline)));
        let (result, _) = read(1000, &[b"a\nb\r\n.\r\n"]);
        assert_eq!(result, Some(Err(DataError::BareNewline)));
    }

    /// Every string of up to seven CR, LF and other octets, read in one
    /// piece and split in two at every point: flagged exactly when a CR
    /// or LF stands without its partner, as a byte-by-byte reading sees it.
    #[test]
    fn bare_newlines_are_found_however_the_reads_fall() {
        fn bare_one_by_one(text: &[u8]) -> bool {
            // DATA's own line ended in CRLF.
            let mut previous = b'\n';
            let mut bare = false;
            for &byte in text {
                bare |= previous == b'\r' && byte != b'\n';
                bare |= byte == b'\n' && previous != b'\r';
                previous = byte;
            }
            bare
        }
        for len in 0..=7u32 {
            for code in 0..3usize.pow(len) {
                let text: Vec<u8> = (0..len)
                    .map(|digit| b"\r\nx"[code / 3usize.pow(digit) % 3])
                    .collect();
                for split in 0..=text.len() {
                    let (head, tail) = text.split_at(split);
                    let mut reader = DataReader::new(1000);
                    reader.scan(head);
                    reader.scan(tail);
                    let flagged = reader.error == Some(DataError::BareNewline);
                    assert_eq!(flagged, bare_one_by_one(&text), "{text:?} split at {split}");
                }
            }
        }
    }

    #[test]
    fn over_the_limit_is_refused_without_buffering() {
        let mut reader = DataReader::new(10);
        let big = vec![b'x'; 4096];
        for _ in 0..100 {
            assert!(reader.ingest(&mut big.iter()).is_none());
            assert!(reader.message.len() <= 4096);
        }
        assert_eq!(
            reader.ingest(&mut b"\r\n.\r\n".iter()),
            Some(Err(DataError::TooBig))
        );
        let (result, _) = read(7, &[b"1234567\r\n.\r\n"]);
        assert_eq!(result, Some(Err(DataError::TooBig)), "CRLF counts");
        let (result, _) = read(9, &[b"1234567\r\n.\r\n"]);
        assert_eq!(result, Some(Ok(b"1234567\r\n".to_vec())));
    }
}
