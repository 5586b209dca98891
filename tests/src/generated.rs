//! Generated test mail.

use anyhow::{Context, Result};
use base64::Engine as _;

/// A real PKESK from the shared test mail, so the policy parses it.
const PKESK: &str = "wU4DhW3gBZ/VvCYSAQdA8bMs2spwbKdGjVsL1ByPkNrqD7frpB73maeL6I6SzDYg\
O5G53tv339RdKq3WRcCtEEvxjHlUx2XNwXzC04BpmfvB";

/// A PGP/MIME message of about `size` bytes: one PKESK and a SEIPD
/// packet (version 1) whose "ciphertext" is filler.
pub fn encrypted_message(from: &str, to: &str, size: usize) -> Result<Vec<u8>> {
    let pkesk = base64::engine::general_purpose::STANDARD
        .decode(PKESK)
        .context("pkesk")?;
    let pkesk = pkesk.get(..80).context("pkesk length")?;
    let body_len = (size.saturating_sub(900) * 3 / 4).max(16);
    let mut packets = pkesk.to_vec();
    packets.push(0xc0 | 18);
    packets.push(255);
    packets.extend(u32::try_from(body_len + 1)?.to_be_bytes());
    packets.push(1);
    packets.extend((0..body_len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let encoded = base64::engine::general_purpose::STANDARD.encode(&packets);
    let mut armored = String::from("-----BEGIN PGP MESSAGE-----\r\n\r\n");
    for line in encoded.as_bytes().chunks(76) {
        armored.push_str(std::str::from_utf8(line)?);
        armored.push_str("\r\n");
    }
    armored.push_str("-----END PGP MESSAGE-----\r\n");
    let message = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: [...]\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
         --b\r\nContent-Type: application/octet-stream\r\n\r\n{armored}\r\n--b--\r\n"
    );
    Ok(message.into_bytes())
}
