//! The OpenPGP payload of a PGP/MIME message: one ASCII-armored
//! `PGP MESSAGE` whose packets are zero or more session-key packets
//! (PKESK, SKESK) and then exactly one SEIPD packet, nothing else.
//! The armor is decoded in one pass into memory and the packets parsed
//! with sequoia from there; the encrypted content itself is never read.
//! (sequoia's streaming armor reader zero-fills a large buffer for each
//! message: it was most of the filters' CPU time.)

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sequoia_openpgp::packet::Packet;
use sequoia_openpgp::parse::{PacketParser, PacketParserResult, Parse};

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
    let mut lines = inside.split(|byte| *byte == b'\n').map(trim);
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
        base64.extend(line.iter().filter(|byte| !byte.is_ascii_whitespace()));
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
    let mut result =
        PacketParser::from_bytes(&dearmored.data).map_err(|_| "malformed OpenPGP data")?;
    let mut seen_encrypted_data = false;
    while let PacketParserResult::Some(parser) = result {
        match &parser.packet {
            Packet::PKESK(_) | Packet::SKESK(_) if !seen_encrypted_data => {}
            Packet::SEIP(_) if !seen_encrypted_data => seen_encrypted_data = true,
            Packet::SEIP(_) => return Err("more than one encrypted data packet"),
            Packet::Unknown(_) => return Err("malformed OpenPGP packet"),
            _ if seen_encrypted_data => return Err("packet after the encrypted data"),
            _ => return Err("OpenPGP packet that is not encryption"),
        }
        let (_, next) = parser.next().map_err(|_| "malformed OpenPGP data")?;
        result = next;
    }
    if seen_encrypted_data {
        Ok(())
    } else {
        Err("no encrypted data packet")
    }
}
