//! A large message's MIME structure without reading all of its payload.
//!
//! mail-parser finds where a part ends by looking at every byte, and on a
//! 20 MB PGP/MIME message that scan was a third of the filter's CPU. The
//! scan acts on two things only: a line end, and `--` followed by the
//! boundary. The base64 of an armored payload holds no `-`, so whole
//! lines without one can be cut out of the message before it is parsed:
//! the parse of the rest finds the same parts, provided that the cut lies
//! inside the contents of the part being scanned (not at its first or
//! last octet) and that the boundary holds no line end, so no match can
//! span the cut. The caller checks both on the parsed rest, and parses
//! the whole message when they do not hold; [`Elided::restore`] then
//! gives the part's contents in the whole message, for the armor check.

use std::ops::Range;

/// The most of a message that is copied to be parsed without the cut. A
/// PGP/MIME message around its payload is headers and a version part, a
/// few KB; a message built to have a short run and much else would
/// otherwise cost a second copy of itself, outside the message budget.
const MAX_REST_LEN: usize = 256 * 1024;

/// A message with a run of whole lines cut out.
pub struct Elided {
    /// The message without the run.
    pub text: Vec<u8>,
    /// Where the run was, in the whole message; it started at `cut.start`
    /// in `text` too.
    cut: Range<usize>,
}

impl Elided {
    /// `raw` without its longest run of whole lines that hold no `-`,
    /// if that run is at least `min_len` octets long.
    pub fn new(raw: &[u8], min_len: usize) -> Option<Self> {
        if raw.len() < min_len {
            return None;
        }
        let cut = longest_dashless_lines(raw)?;
        if cut.len() < min_len.max(1) || raw.len() - cut.len() > MAX_REST_LEN {
            return None;
        }
        let mut text = Vec::with_capacity(raw.len() - cut.len());
        text.extend_from_slice(raw.get(..cut.start)?);
        text.extend_from_slice(raw.get(cut.end..)?);
        Some(Self { text, cut })
    }

    /// The octets of `raw` (the whole message) that `contents`, a slice
    /// of [`Self::text`], stands for, when the cut lies strictly inside
    /// it; `None` otherwise.
    pub fn restore<'x>(&self, raw: &'x [u8], contents: &[u8]) -> Option<&'x [u8]> {
        let start = (contents.as_ptr() as usize).checked_sub(self.text.as_ptr() as usize)?;
        let end = start.checked_add(contents.len())?;
        let same = self
            .text
            .get(start..end)
            .is_some_and(|slice| std::ptr::eq(slice, contents));
        // Strictly inside: the part's first and last octets read in the
        // parse of the rest are the ones the whole message has there.
        let inside = start < self.cut.start && self.cut.start < end;
        if !(same && inside) {
            return None;
        }
        raw.get(start..end + self.cut.len())
    }
}

/// The longest run of whole lines in `raw` without a `-`, less its
/// first line: the gaps between dashes, each shrunk to the lines it
/// holds whole.
fn longest_dashless_lines(raw: &[u8]) -> Option<Range<usize>> {
    let dashes = memchr::memchr_iter(b'-', raw).chain(std::iter::once(raw.len()));
    let mut gap_start = 0;
    let mut longest: Option<Range<usize>> = None;
    for dash in dashes {
        if longest
            .as_ref()
            .is_none_or(|run| dash - gap_start > run.len())
            && let Some(run) = whole_lines(raw, gap_start..dash)
            && longest
                .as_ref()
                .is_none_or(|longest| run.len() > longest.len())
        {
            longest = Some(run);
        }
        gap_start = dash + 1;
    }
    longest
}

/// The whole lines inside `gap` after the first one that starts in it:
/// from the second line start in the gap to the last one.
fn whole_lines(raw: &[u8], gap: Range<usize>) -> Option<Range<usize>> {
    let inside = raw.get(gap.clone())?;
    let first_end = memchr::memchr(b'\n', inside)?;
    let second_end = first_end + 1 + memchr::memchr(b'\n', inside.get(first_end + 1..)?)?;
    let last_end = memchr::memrchr(b'\n', inside)?;
    let run = gap.start + second_end + 1..gap.start + last_end + 1;
    (!run.is_empty()).then_some(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_is_whole_lines_without_dashes() {
        let raw = b"a-b\nfirst\nsecond\nthird\nlast-x\n";
        let elided = Elided::new(raw, 1).expect("a run");
        // "first" starts the gap's lines and stays; "last-x" holds a dash.
        assert_eq!(elided.text, b"a-b\nfirst\nlast-x\n");
        assert_eq!(raw.get(elided.cut.clone()), Some(&b"second\nthird\n"[..]));
        // A line that ends right before a dash is whole, and goes too.
        let elided = Elided::new(b"a-b\nfirst\nsecond\n-", 1).expect("a run");
        assert_eq!(elided.text, b"a-b\nfirst\n-");
    }

    #[test]
    fn short_runs_are_not_cut() {
        let raw = b"a-b\nfirst\nsecond\nthird\nlast-x\n";
        assert!(Elided::new(raw, 14).is_none());
        assert!(Elided::new(b"no\nline\nends-", 1).is_none());
        assert!(Elided::new(b"", 1).is_none());
    }

    #[test]
    fn a_long_rest_is_not_copied() {
        let run = "AAAA\n".repeat(1000);
        let within = format!("-\n{run}{}", "-\n".repeat(MAX_REST_LEN / 2 - 10));
        assert!(Elided::new(within.as_bytes(), 1).is_some());
        let beyond = format!("-\n{run}{}", "-\n".repeat(MAX_REST_LEN / 2 + 10));
        assert!(Elided::new(beyond.as_bytes(), 1).is_none());
    }

    #[test]
    fn contents_are_restored_only_across_the_cut() {
        let raw = b"h-\none\ntwo\nthree\nfour-\nx";
        let elided = Elided::new(raw, 1).expect("a run");
        assert_eq!(elided.text, b"h-\none\nfour-\nx");
        let text = &elided.text;
        let restored = |range: Range<usize>| elided.restore(raw, &text[range]);
        // "one\nfour" in the rest is "one\ntwo\nthree\nfour" whole.
        assert_eq!(restored(3..11), Some(&b"one\ntwo\nthree\nfour"[..]));
        // Contents ending at the cut, or starting at it, are not restored.
        assert_eq!(restored(3..7), None);
        assert_eq!(restored(7..11), None);
        // Nor a copy of the same octets.
        let copy = text[3..11].to_vec();
        assert_eq!(elided.restore(raw, &copy), None);
    }
}
