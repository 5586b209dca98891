//! Dovecot's generic tab-escaping: `\x01` starts an escape; `0` is NUL,
//! `1` is `\x01`, `t` is TAB, `r` is CR, `n` is LF (lib/strescape.c).

const ESCAPE: char = '\u{1}';

/// Escapes a field so that it contains no TAB, CR, LF, NUL or bare `\x01`.
#[must_use]
pub fn escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    escape_into(field, &mut out);
    out
}

/// Appends the escaped form of `field` to `out`.
pub fn escape_into(field: &str, out: &mut String) {
    for c in field.chars() {
        match c {
            '\0' => out.push_str("\u{1}0"),
            ESCAPE => out.push_str("\u{1}1"),
            '\t' => out.push_str("\u{1}t"),
            '\r' => out.push_str("\u{1}r"),
            '\n' => out.push_str("\u{1}n"),
            other => out.push(other),
        }
    }
}

/// A `\x01` at the end of a field, with nothing to escape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("escape character at the end of a field")]
pub struct DanglingEscape;

/// Reverses [`escape`]. An unknown escape letter stands for itself, as in
/// Dovecot; a trailing lone `\x01` is an error.
pub fn unescape(field: &str) -> Result<String, DanglingEscape> {
    if !field.contains(ESCAPE) {
        return Ok(field.to_owned());
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != ESCAPE {
            out.push(c);
            continue;
        }
        match chars.next().ok_or(DanglingEscape)? {
            '0' => out.push('\0'),
            '1' => out.push(ESCAPE),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'n' => out.push('\n'),
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Splits a line's arguments at TABs and unescapes each field.
pub fn split_fields(args: &str) -> Result<Vec<String>, DanglingEscape> {
    args.split('\t').map(unescape).collect()
}

#[cfg(test)]
mod tests {
    use super::{DanglingEscape, escape, split_fields, unescape};

    #[test]
    fn round_trips_every_special_character() {
        let raw = "a\tb\nc\rd\0e\u{1}f\\g\"h ü";
        let escaped = escape(raw);
        assert!(!escaped.contains(['\t', '\n', '\r', '\0']));
        assert_eq!(escaped, "a\u{1}tb\u{1}nc\u{1}rd\u{1}0e\u{1}1f\\g\"h ü");
        assert_eq!(unescape(&escaped), Ok(raw.to_owned()));
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(escape("shared/passdb/x"), "shared/passdb/x");
        assert_eq!(unescape("shared/passdb/x"), Ok("shared/passdb/x".into()));
    }

    #[test]
    fn unknown_escape_stands_for_itself() {
        assert_eq!(unescape("a\u{1}xb"), Ok("axb".into()));
    }

    #[test]
    fn dangling_escape_is_an_error() {
        assert_eq!(unescape("abc\u{1}"), Err(DanglingEscape));
    }

    #[test]
    fn splits_and_unescapes_fields() {
        assert_eq!(
            split_fields("1\tkey\u{1}tpart\tvalue"),
            Ok(vec!["1".into(), "key\tpart".into(), "value".into()])
        );
        assert_eq!(split_fields(""), Ok(vec![String::new()]));
    }
}
