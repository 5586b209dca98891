//! The OpenPGP payload of a PGP/MIME message: one ASCII-armored
//! `PGP MESSAGE` whose packets are zero or more session-key packets
//! (PKESK, SKESK) and then exactly one SEIPD packet, nothing else.
//! The armor is decoded in one pass into memory and the packet headers
//! walked from there (see [`crate::packets`]); the encrypted content itself
//! is never read.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::packets::check_encrypted_message;

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";

/// Why a payload is not an encrypted OpenPGP message.
pub type Refusal = &'static str;

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |last| last + 1);
    bytes.get(start..end).unwrap_or_default()
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    memchr::memmem::find_iter(haystack, needle).count()
}

/// Base64 as armor writers produce it: padding optional, as RFC 9580's
/// readers accept it.
const ARMOR_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// An armored block taken apart: whether it had armor headers, and the
/// binary data.
struct Dearmored {
    has_headers: bool,
    data: Vec<u8>,
}

/// Decodes the inside of `-----BEGIN PGP MESSAGE-----` ... `-----END PGP
/// MESSAGE-----`: optional `Key: value` header lines and the blank line
/// after them (tolerated missing, as sequoia's tolerant reader does), base64
/// lines, and an optional `=XXXX` checksum line, which RFC 9580 says not to
/// judge a message by.
fn dearmor(inside: &[u8]) -> Result<Dearmored, Refusal> {
    let mut line_start = 0;
    let mut lines = memchr::memchr_iter(b'\n', inside)
        .chain(std::iter::once(inside.len()))
        .map(|line_end| {
            let line = inside.get(line_start..line_end).unwrap_or_default();
            line_start = line_end + 1;
            trim(line)
        });
    // The rest of the BEGIN line.
    if !lines.next().unwrap_or_default().is_empty() {
        return Err("malformed armor");
    }
    let mut has_headers = false;
    let mut in_headers = true;
    let mut base64 = Vec::with_capacity(inside.len());
    for line in lines {
        if in_headers {
            if line.is_empty() {
                in_headers = false;
                continue;
            }
            // Base64 has no colon: a line with one is a header.
            if line.contains(&b':') {
                has_headers = true;
                continue;
            }
            in_headers = false;
        }
        if line.first() == Some(&b'=') {
            break;
        }
        // Lines are whole base64 as a rule; spaces inside are the rare case.
        if memchr::memchr3(b' ', b'\t', b'\r', line).is_some() || line.contains(&b'\x0c') {
            base64.extend(line.iter().filter(|byte| !byte.is_ascii_whitespace()));
        } else {
            base64.extend_from_slice(line);
        }
    }
    let data = ARMOR_BASE64
        .decode(&base64)
        .map_err(|_| "malformed armor")?;
    Ok(Dearmored { has_headers, data })
}

/// Checks the armored payload; `allow_armor_headers` tolerates lines such
/// as `Version: ...` between the BEGIN line and the data.
pub fn check_payload(body: &[u8], allow_armor_headers: bool) -> Result<(), Refusal> {
    let armored = trim(body);
    let inside = armored
        .strip_prefix(BEGIN)
        .and_then(|rest| rest.strip_suffix(END))
        .ok_or("payload is not one armored PGP MESSAGE")?;
    if count(armored, b"-----BEGIN PGP") != 1 || count(armored, b"-----END PGP") != 1 {
        return Err("payload holds more than one armored block");
    }
    let dearmored = dearmor(inside)?;
    if !allow_armor_headers && dearmored.has_headers {
        return Err("armor headers are not allowed in outgoing mail");
    }
    check_encrypted_message(&dearmored.data)
}
