//! Byte sizes as operators write them in chatmail.ini: `500M`, `1G`, `200MB`,
//! `31457280`. Suffixes are binary (K = 1024), as in Dovecot's quota settings.

/// Parses a size with an optional K/M/G/T suffix and an optional trailing B,
/// case-insensitive. Returns `None` for anything else, including overflow.
#[must_use]
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text.strip_suffix(['B', 'b']).unwrap_or(text);
    let (digits, multiplier) = match text.char_indices().last() {
        Some((at, unit)) if unit.is_ascii_alphabetic() => {
            let shift = match unit.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return None,
            };
            (text.get(..at)?, 1u64 << shift)
        }
        _ => (text, 1),
    };
    let digits = digits.trim_end();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn plain_bytes() {
        assert_eq!(parse_size("31457280"), Some(31_457_280));
        assert_eq!(parse_size(" 0 "), Some(0));
    }

    #[test]
    fn binary_suffixes_with_optional_b() {
        assert_eq!(parse_size("500M"), Some(500 << 20));
        assert_eq!(parse_size("500MB"), Some(500 << 20));
        assert_eq!(parse_size("500mb"), Some(500 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("2 G"), Some(2 << 30));
        assert_eq!(parse_size("12B"), Some(12));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "M",
            "-1",
            "1.5G",
            "10X",
            "ten",
            "1GG",
            "99999999999999999999",
            "16777216T",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
