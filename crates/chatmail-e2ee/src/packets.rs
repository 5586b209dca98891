//! The packet sequence of an encrypted OpenPGP message, checked from the
//! packet headers alone (RFC 9580 section 4.2): zero or more session-key
//! packets, then one encrypted-data packet that ends the data.
//!
//! The policy is a rule about framing, so framing is all that is read. A
//! full packet parser (sequoia's) also decoded every session-key packet
//! and ran its keyring and message grammars: some forty allocations and
//! about a seventh of a filter's CPU per message, for nothing the policy
//! asks. What a session-key packet holds is opaque here, as it is to the
//! relay, beyond its version octet.

use crate::armor::Refusal;

/// Public-Key Encrypted Session Key.
const PKESK: u8 = 1;
/// Symmetric-Key Encrypted Session Key.
const SKESK: u8 = 3;
/// Symmetrically Encrypted and Integrity Protected Data.
const SEIPD: u8 = 18;

/// The octets of the binary message, read once from the front.
pub trait Octets {
    /// The next octet; `None` at the end of the data.
    fn next_octet(&mut self) -> Result<Option<u8>, Refusal>;
    /// Skips up to `count` octets; returns how many there were.
    fn skip(&mut self, count: usize) -> Result<usize, Refusal>;
}

impl Octets for &[u8] {
    fn next_octet(&mut self) -> Result<Option<u8>, Refusal> {
        Ok(self.split_first().map(|(&octet, rest)| {
            *self = rest;
            octet
        }))
    }

    fn skip(&mut self, count: usize) -> Result<usize, Refusal> {
        let skipped = count.min(self.len());
        *self = self.get(skipped..).unwrap_or_default();
        Ok(skipped)
    }
}

const TRUNCATED: Refusal = "truncated OpenPGP packet";

/// Checks that `data` is session-key packets followed by exactly one
/// SEIPD packet and nothing after it.
#[cfg(test)]
pub fn check_encrypted_message(mut data: &[u8]) -> Result<(), Refusal> {
    check_packets(&mut data)
}

/// As [`check_encrypted_message`], reading the data as it comes.
pub fn check_packets(data: &mut impl Octets) -> Result<(), Refusal> {
    let mut seen_encrypted_data = false;
    while let Some(ctb) = data.next_octet()? {
        if seen_encrypted_data {
            return Err("packet after the encrypted data");
        }
        let (tag, first) = skip_packet(ctb, data)?;
        match tag {
            PKESK => check_version(first, &[3, 6])?,
            SKESK => check_version(first, &[4, 6])?,
            SEIPD => {
                check_version(first, &[1, 2])?;
                seen_encrypted_data = true;
            }
            _ => return Err("OpenPGP packet that is not encryption"),
        }
    }
    if seen_encrypted_data {
        Ok(())
    } else {
        Err("no encrypted data packet")
    }
}

/// The versions RFC 9580 defines for a packet: any other is a packet no
/// OpenPGP implementation would read.
fn check_version(version: Option<u8>, known: &[u8]) -> Result<(), Refusal> {
    match version {
        Some(version) if known.contains(&version) => Ok(()),
        _ => Err("malformed OpenPGP packet"),
    }
}

/// Reads the rest of a packet's header after its first octet `ctb` and
/// skips its body: the packet's tag and the body's first octet (the
/// version, in each packet the policy allows).
fn skip_packet(ctb: u8, data: &mut impl Octets) -> Result<(u8, Option<u8>), Refusal> {
    const MALFORMED: Refusal = "malformed OpenPGP data";
    if ctb & 0x80 == 0 {
        return Err(MALFORMED);
    }
    let (tag, first) = if ctb & 0x40 == 0 {
        let tag = (ctb >> 2) & 0x0f;
        (tag, skip_legacy_body(ctb & 0x03, data)?)
    } else {
        let tag = ctb & 0x3f;
        (tag, skip_new_format_body(tag, data)?)
    };
    if tag == 0 {
        return Err(MALFORMED);
    }
    Ok((tag, first))
}

/// Skips a body of `len` octets, returning its first; a truncated body
/// is refused.
fn skip_body(data: &mut impl Octets, len: usize) -> Result<Option<u8>, Refusal> {
    if len == 0 {
        return Ok(None);
    }
    let first = data.next_octet()?.ok_or(TRUNCATED)?;
    if data.skip(len - 1)? < len - 1 {
        return Err(TRUNCATED);
    }
    Ok(Some(first))
}

/// Legacy headers: the length type is the CTB's low two bits; type 3
/// means the body runs to the end of the data.
fn skip_legacy_body(length_type: u8, data: &mut impl Octets) -> Result<Option<u8>, Refusal> {
    let octets = match length_type {
        0 => 1,
        1 => 2,
        2 => 4,
        _ => {
            let first = data.next_octet()?;
            data.skip(usize::MAX)?;
            return Ok(first);
        }
    };
    let length = read_length(data, octets)?;
    skip_body(data, length)
}

/// New-format lengths: one, two or five octets, or a run of partial body
/// lengths (data packets only) ending in a regular length.
fn skip_new_format_body(tag: u8, data: &mut impl Octets) -> Result<Option<u8>, Refusal> {
    let mut first = None;
    loop {
        let octet = data.next_octet()?.ok_or(TRUNCATED)?;
        let length = match octet {
            0..=191 => usize::from(octet),
            192..=223 => {
                let second = data.next_octet()?.ok_or(TRUNCATED)?;
                (usize::from(octet - 192) << 8) + usize::from(second) + 192
            }
            255 => read_length(data, 4)?,
            224..=254 => {
                if tag != SEIPD {
                    return Err("malformed OpenPGP packet");
                }
                let chunk_first = skip_body(data, 1 << (octet & 0x1f))?;
                first = first.or(chunk_first);
                continue;
            }
        };
        let last_first = skip_body(data, length)?;
        return Ok(first.or(last_first));
    }
}

/// A big-endian length of `octets` octets.
fn read_length(data: &mut impl Octets, octets: usize) -> Result<usize, Refusal> {
    let mut length = 0usize;
    for _ in 0..octets {
        let octet = data.next_octet()?.ok_or(TRUNCATED)?;
        length = (length << 8) | usize::from(octet);
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::check_encrypted_message as check;

    /// A new-format packet with a one-octet length.
    fn packet(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut packet = vec![0xc0 | tag, u8::try_from(body.len()).expect("short body")];
        packet.extend_from_slice(body);
        packet
    }

    #[test]
    fn session_keys_then_one_encrypted_packet() {
        let pkesk = packet(1, &[3, 0, 0]);
        let skesk = packet(3, &[4, 9]);
        let seipd = packet(18, &[1, 0xaa, 0xbb]);
        assert_eq!(
            check(&[pkesk.clone(), skesk, seipd.clone()].concat()),
            Ok(())
        );
        assert_eq!(check(&seipd), Ok(()));
        assert!(check(&pkesk).is_err(), "no encrypted data");
        assert!(check(&[seipd.clone(), pkesk.clone()].concat()).is_err());
        assert!(check(&[seipd.clone(), seipd.clone()].concat()).is_err());
        assert!(check(&[pkesk, packet(11, b"b\0\0\0\0\0hi")].concat()).is_err());
        assert!(check(&[seipd, vec![0]].concat()).is_err(), "trailing octet");
        assert!(check(&[]).is_err());
    }

    #[test]
    fn lengths_in_every_form() {
        let body = [1u8; 300];
        // Two-octet new-format length: 300 = ((192 - 192) << 8) + 0x6c + 192.
        let two_octets = [&[0xc0 | 18, 192, 0x6c][..], &body].concat();
        assert_eq!(check(&two_octets), Ok(()));
        let five_octets = [&[0xc0 | 18, 255, 0, 0, 1, 0x2c][..], &body].concat();
        assert_eq!(check(&five_octets), Ok(()));
        // Legacy: tag 18 does not fit four bits, the session keys do.
        let legacy_pkesk = [&[0x80 | (1 << 2) | 1, 0, 3][..], &[3, 0, 0]].concat();
        assert_eq!(check(&[legacy_pkesk, two_octets.clone()].concat()), Ok(()));
        // Partial lengths: 256 + 32, then a final 12.
        let partial = [
            &[0xc0 | 18, 224 + 8][..],
            &body[..256],
            &[224 + 5],
            &body[..32],
            &[12],
            &body[..12],
        ]
        .concat();
        assert_eq!(check(&partial), Ok(()));
        let mut truncated = partial.clone();
        truncated.pop();
        assert!(check(&truncated).is_err());
        // Partial lengths are for data packets only.
        let partial_pkesk = [&[0xc0 | 1, 224][..], &[3], &[1, 3]].concat();
        assert!(check(&[partial_pkesk, packet(18, &[1])].concat()).is_err());
    }

    #[test]
    fn unknown_versions_and_bad_headers_are_refused() {
        assert!(check(&packet(18, &[3, 0])).is_err(), "SEIPD v3");
        assert!(check(&packet(18, &[])).is_err(), "empty SEIPD");
        assert!(check(&[packet(1, &[5]), packet(18, &[2])].concat()).is_err());
        assert!(check(&[0x40, 1, 1]).is_err(), "no CTB bit");
        assert!(check(&[0xc0, 1, 1]).is_err(), "tag 0");
        assert!(check(&[0xc0 | 18, 255, 0, 0]).is_err(), "cut length");
        assert!(check(&[0xc0 | 18, 255, 0xff, 0xff, 0xff, 0xff, 1]).is_err());
    }
}
