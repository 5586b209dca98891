//! Command line framing with a hard length limit. A line over the limit
//! is discarded as it arrives (never buffered) and reported once, when its
//! end is seen, so the next command is read from the right place.

use std::borrow::Cow;
use std::slice::Iter;

/// RFC 5321 allows 512 octets; extensions make lines longer in practice.
pub const MAX_COMMAND_LINE: usize = 4096;

pub enum Line<'a> {
    Complete(Cow<'a, [u8]>),
    TooLong,
    NeedMore,
}

#[derive(Default)]
pub struct LineFramer {
    partial: Vec<u8>,
    skipping: bool,
}

impl LineFramer {
    pub fn next_line<'a>(&mut self, input: &mut Iter<'a, u8>) -> Line<'a> {
        let rest: &'a [u8] = input.as_slice();
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            *input = [].iter();
            if !self.skipping {
                if self.partial.len() + rest.len() > MAX_COMMAND_LINE {
                    self.skipping = true;
                    self.partial = Vec::new();
                } else {
                    self.partial.extend_from_slice(rest);
                }
            }
            return Line::NeedMore;
        };
        let (line, tail) = rest.split_at(end + 1);
        *input = tail.iter();
        if std::mem::take(&mut self.skipping)
            || self.partial.len() + line.len() > MAX_COMMAND_LINE + 2
        {
            self.partial.clear();
            return Line::TooLong;
        }
        if self.partial.is_empty() {
            Line::Complete(Cow::Borrowed(line))
        } else {
            let mut whole = std::mem::take(&mut self.partial);
            whole.extend_from_slice(line);
            Line::Complete(Cow::Owned(whole))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Line, LineFramer};

    fn feed(framer: &mut LineFramer, chunk: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut input = chunk.iter();
        loop {
            match framer.next_line(&mut input) {
                Line::NeedMore => return out,
                Line::TooLong => out.push("<too long>".into()),
                Line::Complete(line) => out.push(String::from_utf8_lossy(&line).into_owned()),
            }
        }
    }

    #[test]
    fn long_line_in_small_pieces() {
        let mut framer = LineFramer::default();
        let mut seen = feed(&mut framer, b"EHLO x\r\nNOOP ");
        for _ in 0..1000 {
            seen.extend(feed(&mut framer, &[b'b'; 100]));
        }
        seen.extend(feed(&mut framer, b"\r\nQU"));
        seen.extend(feed(&mut framer, b"IT\r\n"));
        assert_eq!(seen, ["EHLO x\r\n", "<too long>", "QUIT\r\n"]);
    }
}
