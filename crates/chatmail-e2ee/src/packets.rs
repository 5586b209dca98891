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

/// Checks that `data` is session-key packets followed by exactly one
/// SEIPD packet and nothing after it.
pub fn check_encrypted_message(mut data: &[u8]) -> Result<(), Refusal> {
    let mut seen_encrypted_data = false;
    while !data.is_empty() {
        if seen_encrypted_data {
            return Err("packet after the encrypted data");
        }
        let (tag, body) = next_packet(data)?;
        match tag {
            PKESK => check_version(body.first, &[3, 6])?,
            SKESK => check_version(body.first, &[4, 6])?,
            SEIPD => {
                check_version(body.first, &[1, 2])?;
                seen_encrypted_data = true;
            }
            _ => return Err("OpenPGP packet that is not encryption"),
        }
        data = body.rest;
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

/// Reads one packet's header and skips its body: the packet's tag and
/// its [`Body`].
fn next_packet(data: &[u8]) -> Result<(u8, Body<'_>), Refusal> {
    const MALFORMED: Refusal = "malformed OpenPGP data";
    let (&ctb, after_ctb) = data.split_first().ok_or(MALFORMED)?;
    if ctb & 0x80 == 0 {
        return Err(MALFORMED);
    }
    let (tag, body) = if ctb & 0x40 == 0 {
        let tag = (ctb >> 2) & 0x0f;
        (tag, legacy_body(ctb & 0x03, after_ctb)?)
    } else {
        let tag = ctb & 0x3f;
        (tag, new_format_body(tag, after_ctb)?)
    };
    if tag == 0 {
        return Err(MALFORMED);
    }
    Ok((tag, body))
}

/// What the check needs of a packet body: its first octet (the version,
/// in each packet the policy allows) and the data after the body.
struct Body<'a> {
    first: Option<u8>,
    rest: &'a [u8],
}

/// Splits a body of `len` octets off `data`; a truncated body is refused.
fn take(data: &[u8], len: usize) -> Result<Body<'_>, Refusal> {
    if len > data.len() {
        return Err("truncated OpenPGP packet");
    }
    let (body, rest) = data.split_at(len);
    Ok(Body {
        first: body.first().copied(),
        rest,
    })
}

/// Legacy headers: the length type is the CTB's low two bits; type 3
/// means the body runs to the end of the data.
fn legacy_body(length_type: u8, data: &[u8]) -> Result<Body<'_>, Refusal> {
    let octets = match length_type {
        0 => 1,
        1 => 2,
        2 => 4,
        _ => return take(data, data.len()),
    };
    let (length, body) = split_length(data, octets)?;
    take(body, length)
}

/// New-format lengths: one, two or five octets, or a run of partial body
/// lengths (data packets only) ending in a regular length.
fn new_format_body(tag: u8, mut data: &[u8]) -> Result<Body<'_>, Refusal> {
    let mut first = None;
    loop {
        let (&octet, after) = data.split_first().ok_or("truncated OpenPGP packet")?;
        let (length, body) = match octet {
            0..=191 => (usize::from(octet), after),
            192..=223 => {
                let (&second, body) = after.split_first().ok_or("truncated OpenPGP packet")?;
                let length = (usize::from(octet - 192) << 8) + usize::from(second) + 192;
                (length, body)
            }
            255 => split_length(after, 4)?,
            224..=254 => {
                if tag != SEIPD {
                    return Err("malformed OpenPGP packet");
                }
                let chunk = take(after, 1 << (octet & 0x1f))?;
                first = first.or(chunk.first);
                data = chunk.rest;
                continue;
            }
        };
        let last = take(body, length)?;
        return Ok(Body {
            first: first.or(last.first),
            rest: last.rest,
        });
    }
}

/// A big-endian length of `octets` octets, and the data after it.
fn split_length(data: &[u8], octets: usize) -> Result<(usize, &[u8]), Refusal> {
    if data.len() < octets {
        return Err("truncated OpenPGP packet");
    }
    let (length, rest) = data.split_at(octets);
    let length = length
        .iter()
        .fold(0usize, |length, &octet| (length << 8) | usize::from(octet));
    Ok((length, rest))
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
