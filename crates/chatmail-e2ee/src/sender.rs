//! The From header's address, as mail-parser reads it.

use mail_parser::{HeaderName, Message, MessageParser};

/// The single address in the single From header, or `None` when there is
/// no From header, there are several (a client may show another one than
/// the filter checked), it does not parse, or it names several addresses.
#[must_use]
pub fn from_header_address(message: &[u8]) -> Option<String> {
    from_address(&MessageParser::new().parse_headers(message)?)
}

/// [`from_header_address`] of a parsed message.
pub(crate) fn from_address(parsed: &Message<'_>) -> Option<String> {
    let from_headers = parsed
        .headers()
        .iter()
        .filter(|header| header.name == HeaderName::From)
        .count();
    if from_headers != 1 {
        return None;
    }
    let from = parsed.from()?;
    let mut addresses = from.iter();
    let first = addresses.next()?.address()?.to_owned();
    if addresses.next().is_some() {
        return None;
    }
    Some(first)
}

#[cfg(test)]
mod tests {
    use super::from_header_address;

    #[test]
    fn forms_of_from() {
        let cases: [(&[u8], Option<&str>); 9] = [
            (b"From: <a@example.org>\r\n\r\n", Some("a@example.org")),
            (
                b"From: Alice <a@example.org>\r\n\r\n",
                Some("a@example.org"),
            ),
            (b"From: a@example.org\r\n\r\n", Some("a@example.org")),
            (
                b"From: \"x\" <a@[127.0.0.1]>\r\n\r\n",
                Some("a@[127.0.0.1]"),
            ),
            (b"From: a@example.org, b@example.org\r\n\r\n", None),
            (b"Subject: none\r\n\r\n", None),
            (
                b"From: <a@example.org>\r\nFrom: <b@example.org>\r\n\r\n",
                None,
            ),
            (
                b"From: <a@example.org>\r\nSubject: x\r\nfrom: <a@example.org>\r\n\r\n",
                None,
            ),
            (b"From: team: a@example.org, b@example.org;\r\n\r\n", None),
        ];
        for (message, expected) in cases {
            assert_eq!(from_header_address(message).as_deref(), expected);
        }
    }
}
