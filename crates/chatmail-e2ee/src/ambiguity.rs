//! MIME that another parser could read another way.
//!
//! The policy reads a message with mail-parser; a client reads it with its
//! own parser (Delta Chat: the `mailparse` crate). Where the two could
//! disagree on the parts the policy decides by, the message is refused: a
//! cleartext message that our parse takes for PGP/MIME would otherwise be
//! carried and shown. The checks read the raw octets of each such part,
//! independently of mail-parser's own reading, and hold them to one
//! strict form that every parser reads alike:
//!
//! - a header block of well-formed field lines (a name of printable ASCII
//!   without spaces, a colon), folded lines starting with a space or tab,
//!   ending at one empty line; no whitespace-only line, no lone CR;
//! - `Content-Type`, `Content-Transfer-Encoding` and `MIME-Version` at most
//!   once each;
//! - a Content-Type of `type/subtype` and `name=value` parameters, none
//!   given twice (in any RFC 2231 form), no comments, and the type and the
//!   boundary as mail-parser read them;
//! - a known Content-Transfer-Encoding, as a single word, that decodes;
//! - in a multipart body, `--boundary` nowhere but as a whole line: one
//!   delimiter line per part mail-parser found, then one closing line.
//!
//! The differential test (`tests/differential.rs`) holds these rules to
//! mailparse's reading of generated variants.

use mail_parser::{Message, MessagePart, MimeHeaders};

/// Why a message can be read two ways.
pub type Ambiguity = &'static str;

/// The transfer encodings both parsers decode.
const KNOWN_ENCODINGS: [&str; 5] = ["7bit", "8bit", "binary", "base64", "quoted-printable"];

/// Checks the header block of `part`, and its multipart body when it has
/// `children` (the parts mail-parser found in it).
pub fn check_part(
    message: &Message<'_>,
    part: &MessagePart<'_>,
    children: Option<usize>,
) -> Result<(), Ambiguity> {
    // mail-parser keeps the raw octets of a body that does not decode;
    // another parser decodes what it can. (A returned message that does
    // not parse is flagged too; the policy does not read it.)
    if part.is_encoding_problem && !part.is_content_type("message", "rfc822") {
        return Err("a body that does not decode as its transfer encoding says");
    }
    let raw = message.raw_message.as_ref();
    let header_block = raw
        .get(part.offset_header as usize..part.offset_body as usize)
        .ok_or("part offsets outside the message")?;
    let fields = HeaderFields::read(header_block)?;
    if let Some(value) = fields.content_type {
        let content_type = ContentType::read(value)?;
        content_type.agrees_with(part)?;
    }
    if let Some(value) = fields.transfer_encoding {
        let encoding = std::str::from_utf8(value)
            .map_err(|_| "Content-Transfer-Encoding is not ASCII")?
            .trim();
        if !KNOWN_ENCODINGS
            .iter()
            .any(|known| encoding.eq_ignore_ascii_case(known))
        {
            return Err("unknown or malformed Content-Transfer-Encoding");
        }
    }
    if let Some(parts) = children {
        let boundary = part
            .content_type()
            .and_then(|content_type| content_type.attribute("boundary"))
            .ok_or("multipart without a boundary")?;
        let body = raw
            .get(part.offset_body as usize..part.offset_end as usize)
            .ok_or("part offsets outside the message")?;
        check_delimiters(body, boundary.as_bytes(), parts)?;
    }
    Ok(())
}

/// The fields of one header block that the policy reads, as raw values
/// (folding included).
#[derive(Default)]
struct HeaderFields<'a> {
    content_type: Option<&'a [u8]>,
    transfer_encoding: Option<&'a [u8]>,
}

impl<'a> HeaderFields<'a> {
    fn read(block: &'a [u8]) -> Result<Self, Ambiguity> {
        let mut fields = Self::default();
        let mut mime_version_seen = false;
        // The value of the field being read: from after its colon to the
        // end of its last folded line.
        let mut current: Option<(&'a [u8], usize, usize)> = None;
        let mut start = 0;
        let mut ended = false;
        // Lines are found by memchr (this runs on every message). Every
        // CR must end a line: the CRs counted at once must be as many as
        // the lines that end in CRLF.
        let mut crlf_lines = 0;
        for line_end in memchr::memchr_iter(b'\n', block) {
            let line = block.get(start..line_end).unwrap_or_default();
            let line_start = std::mem::replace(&mut start, line_end + 1);
            if ended {
                return Err("header block goes on after its empty line");
            }
            let text = match line.strip_suffix(b"\r") {
                Some(text) => {
                    crlf_lines += 1;
                    text
                }
                None => line,
            };
            if text.is_empty() {
                ended = true;
                continue;
            }
            if matches!(text.first(), Some(b' ' | b'\t')) {
                if text.iter().all(|&byte| byte == b' ' || byte == b'\t') {
                    return Err("whitespace-only line in a header block");
                }
                let Some((name, value_start, _)) = current else {
                    return Err("header block starts with a folded line");
                };
                current = Some((name, value_start, start));
                continue;
            }
            if let Some(field) = current.take() {
                fields.keep(block, field, &mut mime_version_seen)?;
            }
            let colon = memchr::memchr(b':', text).ok_or("header line without a colon")?;
            let name = text.get(..colon).unwrap_or_default();
            if name.is_empty() || !name.iter().all(|&byte| (33..=126).contains(&byte)) {
                return Err("malformed header name");
            }
            current = Some((name, line_start + colon + 1, start));
        }
        if !ended || start != block.len() {
            return Err("header block without an empty line");
        }
        if memchr::memchr_iter(b'\r', block).count() != crlf_lines {
            return Err("lone CR in a header block");
        }
        if let Some(field) = current {
            fields.keep(block, field, &mut mime_version_seen)?;
        }
        Ok(fields)
    }

    fn keep(
        &mut self,
        block: &'a [u8],
        (name, value_start, value_end): (&'a [u8], usize, usize),
        mime_version_seen: &mut bool,
    ) -> Result<(), Ambiguity> {
        let value = block.get(value_start..value_end).unwrap_or_default();
        let slot = if name.eq_ignore_ascii_case(b"content-type") {
            &mut self.content_type
        } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            &mut self.transfer_encoding
        } else if name.eq_ignore_ascii_case(b"mime-version") {
            if std::mem::replace(mime_version_seen, true) {
                return Err("MIME-Version given twice");
            }
            return Ok(());
        } else {
            return Ok(());
        };
        if slot.replace(value).is_some() {
            return Err("a MIME header given twice");
        }
        Ok(())
    }
}

/// A Content-Type value read strictly: slices of the raw value, no
/// copies (this runs on every message).
struct ContentType<'a> {
    /// `type/subtype`, in the value's own case.
    mime_type: &'a str,
    boundary: Option<&'a str>,
}

/// More parameters than this in one Content-Type are refused; the parts
/// the policy reads have two or three.
const MAX_PARAMETERS: usize = 16;

/// `text` without folding whitespace (space, tab and, as a folded value
/// keeps them, line ends) at either end; looked at as bytes, since this
/// runs on every message.
fn trim_folding(text: &str) -> &str {
    let folding = |byte: &u8| matches!(byte, b' ' | b'\t' | b'\r' | b'\n');
    let bytes = text.as_bytes();
    let start = bytes
        .iter()
        .position(|byte| !folding(byte))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|byte| !folding(byte))
        .map_or(start, |last| last + 1);
    // Both ends sit next to ASCII bytes, so on character boundaries.
    text.get(start..end).unwrap_or_default()
}

impl<'a> ContentType<'a> {
    fn read(raw: &'a [u8]) -> Result<Self, Ambiguity> {
        let value = std::str::from_utf8(raw).map_err(|_| "Content-Type is not UTF-8")?;
        let mut params = Pieces::new(value);
        let mime_type = params
            .next()
            .transpose()?
            .map(trim_folding)
            .unwrap_or_default();
        let (ctype, subtype) = mime_type
            .split_once('/')
            .ok_or("Content-Type without a subtype")?;
        if ctype.is_empty() || subtype.is_empty() || !is_token(ctype) || !is_token(subtype) {
            return Err("malformed Content-Type");
        }
        let mut boundary = None;
        // The parameters read so far, to find one given twice.
        let mut seen = [("", None); MAX_PARAMETERS];
        let mut count = 0;
        for piece in params {
            let Some((name, value)) = parameter(piece?)? else {
                continue;
            };
            let (base, section) = split_section(name);
            // The same name twice, or both plain and RFC 2231 forms.
            let earlier = seen.get(..count).unwrap_or_default();
            if earlier.iter().any(|&(earlier_base, earlier_section)| {
                earlier_base.eq_ignore_ascii_case(base)
                    && (earlier_section.is_none()
                        || section.is_none()
                        || earlier_section == section)
            }) {
                return Err("a Content-Type parameter given twice");
            }
            *seen
                .get_mut(count)
                .ok_or("too many Content-Type parameters")? = (base, section);
            count += 1;
            if base.eq_ignore_ascii_case("boundary") {
                if section.is_some() {
                    return Err("boundary in RFC 2231 form");
                }
                boundary = Some(unquote(value)?);
            } else {
                unquote(value)?;
            }
        }
        Ok(Self {
            mime_type,
            boundary,
        })
    }

    /// Whether mail-parser read the same type and boundary.
    fn agrees_with(&self, part: &MessagePart<'_>) -> Result<(), Ambiguity> {
        let theirs = part
            .content_type()
            .ok_or("Content-Type that mail-parser did not read")?;
        let (ours_type, ours_subtype) = self.mime_type.split_once('/').unwrap_or_default();
        let same_type = theirs.ctype().eq_ignore_ascii_case(ours_type)
            && theirs
                .subtype()
                .is_some_and(|subtype| subtype.eq_ignore_ascii_case(ours_subtype));
        if !same_type {
            return Err("Content-Type read two ways");
        }
        if theirs.attribute("boundary") != self.boundary {
            return Err("boundary read two ways");
        }
        Ok(())
    }
}

/// A parameter's name and raw value; `None` for an empty piece (a
/// trailing semicolon).
fn parameter(piece: &str) -> Result<Option<(&str, &str)>, Ambiguity> {
    let piece = trim_folding(piece);
    if piece.is_empty() {
        return Ok(None);
    }
    let (name, value) = piece
        .split_once('=')
        .ok_or("Content-Type parameter without a value")?;
    let name = trim_folding(name);
    if name.is_empty() || !name.bytes().all(|byte| byte == b'*' || is_token_byte(byte)) {
        return Err("malformed Content-Type parameter name");
    }
    Ok(Some((name, trim_folding(value))))
}

/// `name*1*` as `("name", Some("1*"))`, RFC 2231's sections and charsets.
fn split_section(name: &str) -> (&str, Option<&str>) {
    match name.split_once('*') {
        Some((base, section)) => (base, Some(section)),
        None => (name, None),
    }
}

/// RFC 2045 token characters.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_graphic()
        && !matches!(
            byte,
            b'(' | b')'
                | b'<'
                | b'>'
                | b'@'
                | b','
                | b';'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'='
        )
}

fn is_token(text: &str) -> bool {
    text.bytes().all(is_token_byte)
}

/// The pieces of a Content-Type value between the semicolons outside
/// quoted strings; a comment (an open parenthesis outside quotes) or an
/// unterminated quote is an error.
struct Pieces<'a> {
    rest: Option<&'a str>,
}

impl<'a> Pieces<'a> {
    fn new(value: &'a str) -> Self {
        Self { rest: Some(value) }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Result<&'a str, Ambiguity>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        let bytes = rest.as_bytes();
        let mut at = 0;
        // Jumps from one byte that matters to the next: outside quotes a
        // quote, a semicolon or a parenthesis; inside, a quote or a
        // backslash (which escapes the byte after it).
        while let Some(found) =
            memchr::memchr3(b'"', b';', b'(', bytes.get(at..).unwrap_or_default())
        {
            at += found;
            match bytes.get(at) {
                Some(b'(') => {
                    self.rest = None;
                    return Some(Err("comment in Content-Type"));
                }
                Some(b';') => {
                    self.rest = rest.get(at + 1..);
                    return Some(Ok(rest.get(..at).unwrap_or_default()));
                }
                _ => {
                    // An opening quote: find its closing one.
                    at += 1;
                    loop {
                        let inside = bytes.get(at..).unwrap_or_default();
                        let Some(end) = memchr::memchr2(b'"', b'\\', inside) else {
                            self.rest = None;
                            return Some(Err("unterminated quoted string in Content-Type"));
                        };
                        at += end;
                        if bytes.get(at) == Some(&b'"') {
                            at += 1;
                            break;
                        }
                        at += 2;
                    }
                }
            }
        }
        self.rest = None;
        Some(Ok(rest))
    }
}

/// A parameter value: a token, or a quoted string without escapes (an
/// escape is read differently by different parsers).
fn unquote(value: &str) -> Result<&str, Ambiguity> {
    match value.strip_prefix('"') {
        Some(rest) => {
            let inside = rest
                .strip_suffix('"')
                .ok_or("malformed quoted Content-Type parameter")?;
            if inside.contains(['"', '\\']) {
                return Err("escape in a quoted Content-Type parameter");
            }
            Ok(inside)
        }
        None if is_token(value) => Ok(value),
        None => Err("malformed Content-Type parameter value"),
    }
}

/// Every `--boundary` in a multipart body starts a line that is exactly a
/// delimiter: `parts` delimiter lines, then one closing delimiter line.
fn check_delimiters(body: &[u8], boundary: &[u8], parts: usize) -> Result<(), Ambiguity> {
    if boundary.is_empty() {
        return Err("empty boundary");
    }
    let (mut delimiters, mut closed) = (0, false);
    // Each `--boundary` starts at a dash; armored payloads have few, in
    // runs (`-----BEGIN`), so each run of dashes is found in one
    // vectorised pass and looked at once.
    let mut searched = 0;
    while let Some(found) = memchr::memchr(b'-', body.get(searched..).unwrap_or_default()) {
        let run_start = searched + found;
        let run_len = body
            .get(run_start..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&byte| byte == b'-')
            .count();
        searched = run_start + run_len;
        for at in delimiter_candidates(run_start, run_len, boundary) {
            let Some(after) = body
                .get(at..)
                .and_then(|rest| rest.strip_prefix(b"--"))
                .and_then(|rest| rest.strip_prefix(boundary))
            else {
                continue;
            };
            let line_start = at == 0 || body.get(at - 1) == Some(&b'\n');
            let line_end = memchr::memchr(b'\n', after).map_or(after.len(), |end| end);
            let rest = after.get(..line_end).unwrap_or_default();
            let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
            if !line_start || closed {
                return Err("boundary inside a line or after the closing delimiter");
            }
            match rest {
                b"" => delimiters += 1,
                b"--" => closed = true,
                _ => return Err("text after a boundary on its line"),
            }
        }
    }
    if delimiters != parts || !closed {
        return Err("delimiter lines do not match the parts");
    }
    Ok(())
}

/// Where in a run of `run_len` dashes at `run_start` a `--boundary` can
/// start: a boundary that begins with `k` dashes and then something else
/// fits only where its dashes end the run. (One of dashes only may start
/// anywhere in the run.)
fn delimiter_candidates(
    run_start: usize,
    run_len: usize,
    boundary: &[u8],
) -> std::ops::Range<usize> {
    let leading = boundary.iter().take_while(|&&byte| byte == b'-').count();
    if leading == boundary.len() {
        return run_start..run_start + run_len;
    }
    match run_len.checked_sub(2 + leading) {
        Some(offset) => run_start + offset..run_start + offset + 1,
        None => run_start..run_start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(block: &[u8]) -> Result<(), Ambiguity> {
        HeaderFields::read(block).map(|_| ())
    }

    #[test]
    fn header_blocks() {
        assert!(fields(b"A: b\r\nC: d\r\n e\r\n\r\n").is_ok());
        assert!(fields(b"A: b\n\n").is_ok());
        assert!(fields(b"A : b\n\n").is_err());
        assert!(fields(b" A: b\n\n").is_err());
        assert!(fields(b"A: b\n \n\n").is_err());
        assert!(fields(b"A: b\nno colon\n\n").is_err());
        assert!(fields(b"A: b\rC: d\n\n").is_err());
        // A CR anywhere but before LF, in a value, a folded line, a name.
        assert!(fields(b"A: b\r\r\n\r\n").is_err());
        assert!(fields(b"A: b\r\n c\rd\r\n\r\n").is_err());
        assert!(fields(b"A\r: b\r\n\r\n").is_err());
        assert!(fields(b"A: b\r\n\r\n").is_ok());
        assert!(fields(b"A: b\n").is_err());
        assert!(fields(b"Content-Type: a/b\ncontent-type: a/b\n\n").is_err());
        assert!(fields(b"MIME-Version: 1.0\nMime-Version: 1.0\n\n").is_err());
        assert!(
            fields(b"Content-Transfer-Encoding: 7bit\nContent-Transfer-Encoding: 7bit\n\n")
                .is_err()
        );
    }

    #[test]
    fn content_types() {
        let read = |value: &str| {
            ContentType::read(value.as_bytes()).map(|ct| ct.boundary.map(str::to_owned))
        };
        assert_eq!(
            read(
                " multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n\tboundary=\"b;x\""
            ),
            Ok(Some("b;x".to_owned()))
        );
        assert_eq!(
            read(" Multipart/Mixed; boundary=abc;"),
            Ok(Some("abc".to_owned()))
        );
        assert!(read(" multipart/mixed; boundary=a; boundary=b").is_err());
        assert!(read(" multipart/mixed; boundary=a; BOUNDARY=a").is_err());
        assert!(read(" multipart/mixed; boundary=a; boundary*=utf-8''b").is_err());
        assert!(read(" multipart/mixed; boundary*0=a; boundary*1=b").is_err());
        assert!(read(" multipart/mixed; name*0=a; name*1=b").is_ok());
        assert!(read(" multipart/mixed; name*0=a; name*0=b").is_err());
        assert!(read(" multipart/mixed (comment); boundary=a").is_err());
        assert!(read(" multipart/mixed; boundary=\"a\\\"b\"").is_err());
        assert!(read(" multipart/mixed; boundary=\"ab").is_err());
        assert!(read(" multipart / mixed").is_err());
        assert!(read(" multipart").is_err());
    }

    #[test]
    fn delimiters() {
        let check = |body: &[u8], parts| check_delimiters(body, b"b", parts);
        assert!(check(b"--b\nx\n--b\ny\n--b--\n", 2).is_ok());
        assert!(check(b"pre\r\n--b\r\nx\r\n--b--\r\nepilogue", 1).is_ok());
        assert!(check(b"pre --b\n--b\nx\n--b--\n", 1).is_err());
        assert!(check(b"--b \nx\n--b--\n", 1).is_err());
        assert!(check(b"--bx\nx\n--b--\n", 1).is_err());
        assert!(check(b"--b\nx\n--b--\n--b\n", 1).is_err());
        assert!(check(b"--b\nx\n", 1).is_err());
        assert!(check(b"--b\nx\n--b--\n", 2).is_err());
        // A boundary that starts with dashes is found where it overlaps.
        assert!(check_delimiters(b"----x\ny\n----x--\n", b"--x", 1).is_ok());
        assert!(check_delimiters(b"-----x\ny\n----x--\n", b"--x", 1).is_err());
    }
}
