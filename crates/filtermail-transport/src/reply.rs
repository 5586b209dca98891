//! Remote answers made into replies we can pass to Postfix: whatever a
//! remote server or relay sent, each recipient gets one well-formed,
//! single-line LMTP reply with a 2xx, 4xx or 5xx code.

use chatmail_smtp::Reply;

const MAX_TEXT: usize = 300;

/// A reply from the first line of `text` (`550 5.1.1 No such user`),
/// `None` when it does not start with a reply code.
#[must_use]
pub fn parse_reply_text(text: &str) -> Option<Reply> {
    let line = text.lines().next()?.trim();
    let code: u16 = line.get(..3)?.parse().ok()?;
    if !(200..600).contains(&code)
        || line
            .as_bytes()
            .get(3)
            .is_some_and(|b| *b != b' ' && *b != b'-')
    {
        return None;
    }
    let rest = line.get(4..).unwrap_or_default().trim();
    let (enhanced, text) = match rest.split_once(' ') {
        Some((first, text)) if is_enhanced(first) => (first, text),
        _ if is_enhanced(rest) => (rest, ""),
        _ => ("", rest),
    };
    Some(sanitize(&Reply::owned(code, enhanced, text)))
}

fn is_enhanced(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|part| {
            !part.is_empty() && part.len() <= 3 && part.bytes().all(|b| b.is_ascii_digit())
        })
}

/// `reply` as one clean line: a code outside 2xx/4xx/5xx becomes a
/// temporary failure, control characters and line breaks become spaces,
/// long texts are cut.
#[must_use]
pub fn sanitize(reply: &Reply) -> Reply {
    let code = match reply.code {
        200..=299 | 400..=599 => reply.code,
        _ => 451,
    };
    let clean = |text: &str| -> String {
        let text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        text
    };
    let enhanced = if code == reply.code && is_enhanced(&reply.enhanced) {
        reply.enhanced.to_string()
    } else {
        String::new()
    };
    let mut text = clean(&reply.text);
    if text.is_empty() {
        text = "No text from the remote server".into();
    }
    Reply::owned(code, enhanced, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_from_text() {
        let reply = parse_reply_text("550 5.1.1 No such user\r\nmore").unwrap();
        assert_eq!(
            (reply.code, &*reply.enhanced, &*reply.text),
            (550, "5.1.1", "No such user")
        );
        let reply = parse_reply_text("523 Encryption Needed: Invalid Unencrypted Mail").unwrap();
        assert_eq!((reply.code, &*reply.enhanced), (523, ""));
        assert!(parse_reply_text("<html>").is_none());
        assert!(parse_reply_text("999 what").is_none());
        assert!(parse_reply_text("2500 no").is_none());
    }

    #[test]
    fn remote_texts_become_one_clean_line() {
        let reply = sanitize(&Reply::owned(554, "5.7.1", "line one\r\nline\ttwo\u{0}"));
        let mut wire = Vec::new();
        reply.write_to(&mut wire);
        assert_eq!(wire, b"554 5.7.1 line one line two\r\n");
        assert_eq!(sanitize(&Reply::owned(354, "", "go on")).code, 451);
        assert_eq!(sanitize(&Reply::owned(250, "9.9", "x")).enhanced, "");
        assert!(
            sanitize(&Reply::owned(550, "", "x".repeat(1000)))
                .text
                .len()
                <= MAX_TEXT
        );
    }
}
