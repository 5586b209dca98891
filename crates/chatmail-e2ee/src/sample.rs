//! Well-formed PGP/MIME messages of any size, for the tests, the
//! benchmark and the fuzzer's seeds.

use base64::Engine as _;

const BOUNDARY: &str = "YFrteb74qSXmggbOxZL9dRnhymywAi";

/// A PGP/MIME message whose payload is one SEIPD packet of `seipd_len`
/// octets (at least 1), armored in lines of `width` characters; every
/// line ends in `line_end`.
#[must_use]
pub fn pgp_mime(seipd_len: usize, width: usize, line_end: &str) -> Vec<u8> {
    let len = u32::try_from(seipd_len).unwrap_or(u32::MAX);
    let mut binary = vec![0xc0 | 18, 255];
    binary.extend_from_slice(&len.to_be_bytes());
    binary.push(1);
    // Octets that look random enough to the armor and the packet walk.
    binary.extend((1..seipd_len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let base64 = base64::engine::general_purpose::STANDARD.encode(binary);
    let mut message = [
        "From: one@example.org",
        "To: two@example.org",
        "Subject: ...",
        "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";",
        &format!("\tboundary=\"{BOUNDARY}\""),
        "",
        &format!("--{BOUNDARY}"),
        "Content-Type: application/pgp-encrypted",
        "",
        "Version: 1",
        "",
        &format!("--{BOUNDARY}"),
        "Content-Type: application/octet-stream; name=\"encrypted.asc\"",
        "",
        "-----BEGIN PGP MESSAGE-----",
        "",
    ]
    .iter()
    .flat_map(|line| [line.as_bytes(), line_end.as_bytes()].concat())
    .collect::<Vec<u8>>();
    for line in base64.as_bytes().chunks(width.max(1)) {
        message.extend_from_slice(line);
        message.extend_from_slice(line_end.as_bytes());
    }
    for line in ["-----END PGP MESSAGE-----", "", &format!("--{BOUNDARY}--")] {
        message.extend_from_slice(line.as_bytes());
        message.extend_from_slice(line_end.as_bytes());
    }
    message
}
