//! The OpenPGP payload of a PGP/MIME message: one ASCII-armored
//! `PGP MESSAGE` whose packets are zero or more session-key packets
//! (PKESK, SKESK) and then exactly one SEIPD packet, nothing else.
//! Parsed with sequoia; the encrypted content itself is never read.

use sequoia_openpgp::armor::{Kind, Reader, ReaderMode};
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
    haystack
        .windows(needle.len())
        .filter(|window| *window == needle)
        .count()
}

/// Checks the armored payload; `allow_armor_headers` tolerates lines such
/// as `Version: ...` between the BEGIN line and the data.
pub fn check_payload(body: &[u8], allow_armor_headers: bool) -> Result<(), Refusal> {
    let armored = trim(body);
    if !armored.starts_with(BEGIN) || !armored.ends_with(END) {
        return Err("payload is not one armored PGP MESSAGE");
    }
    if count(armored, b"-----BEGIN PGP") != 1 || count(armored, b"-----END PGP") != 1 {
        return Err("payload holds more than one armored block");
    }
    let mut reader = Reader::from_bytes(armored, ReaderMode::Tolerant(Some(Kind::Message)));
    let headers = reader.headers().map_err(|_| "malformed armor")?;
    if !allow_armor_headers && !headers.is_empty() {
        return Err("armor headers are not allowed in outgoing mail");
    }
    let mut result = PacketParser::from_reader(reader).map_err(|_| "malformed OpenPGP data")?;
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
