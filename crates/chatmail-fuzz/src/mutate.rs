//! Mutations of seed inputs: byte flips, insertions and deletions,
//! repeated ranges, splices of other seeds, and tokens that mean something
//! to the parsers under test (line ends, dots, MIME boundaries, armor
//! lines, address punctuation).

use rand::Rng;

/// Inputs never grow past this; parsers bound their own input anyway.
pub const MAX_INPUT: usize = 256 * 1024;

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b".\r\n",
    b"\r\n.\r\n",
    b"..",
    b"\0",
    b"\t",
    b"\\",
    b"\"",
    b"<",
    b">",
    b"@",
    b"[",
    b"]",
    b"%",
    b"!",
    b":",
    b";",
    b",",
    b"=?utf-8?B?",
    b"=?iso-8859-1?Q?",
    b"--",
    b"\r\n\r\n",
    b"Content-Type: multipart/mixed; boundary=",
    b"Content-Transfer-Encoding: base64\r\n",
    b"-----BEGIN PGP MESSAGE-----\r\n",
    b"-----END PGP MESSAGE-----\r\n",
    b"From: ",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=",
    b"MAIL FROM:<",
    b"RCPT TO:<",
    b"DATA\r\n",
    b"BDAT 10 LAST\r\n",
    b"250-",
    b"\xff",
    b"\xc3\xa4",
    b"\xf0\x9f\x92\xa9",
    b"4294967296",
    b"-1",
    b"18446744073709551616",
];

/// A mutated copy of `seed`, sometimes spliced with `other`.
pub fn mutate(rng: &mut impl Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    let rounds = rng.random_range(1..=8);
    for _ in 0..rounds {
        apply_one(rng, &mut data, other);
        data.truncate(MAX_INPUT);
    }
    data
}

fn position(rng: &mut impl Rng, data: &[u8]) -> usize {
    rng.random_range(0..=data.len())
}

fn apply_one(rng: &mut impl Rng, data: &mut Vec<u8>, other: &[u8]) {
    match rng.random_range(0..9) {
        0 => {
            if !data.is_empty() {
                let at = rng.random_range(0..data.len());
                if let Some(byte) = data.get_mut(at) {
                    *byte ^= 1 << rng.random_range(0..8);
                }
            }
        }
        1 => {
            if !data.is_empty() {
                let at = rng.random_range(0..data.len());
                if let Some(byte) = data.get_mut(at) {
                    *byte = rng.random();
                }
            }
        }
        2 => {
            let at = position(rng, data);
            let count = rng.random_range(1..=16);
            let bytes: Vec<u8> = (0..count).map(|_| rng.random()).collect();
            data.splice(at..at, bytes);
        }
        3 => {
            if !data.is_empty() {
                let start = rng.random_range(0..data.len());
                let end = rng.random_range(start..=data.len().min(start + 256));
                data.drain(start..end);
            }
        }
        4 => {
            let at = position(rng, data);
            let token = TOKENS
                .get(rng.random_range(0..TOKENS.len()))
                .copied()
                .unwrap_or_default();
            data.splice(at..at, token.iter().copied());
        }
        5 => {
            // A range repeated many times: long lines, deep nesting.
            if !data.is_empty() {
                let start = rng.random_range(0..data.len());
                let end = rng.random_range(start..=data.len().min(start + 64));
                let piece = data.get(start..end).unwrap_or_default().to_vec();
                let times = rng.random_range(2..=2048);
                let at = position(rng, data);
                let repeated: Vec<u8> = piece.repeat(times);
                data.splice(at..at, repeated);
            }
        }
        6 => {
            // Splice: the head of this input with the tail of another.
            if !other.is_empty() {
                let cut = position(rng, data);
                let from = rng.random_range(0..other.len());
                data.truncate(cut);
                data.extend_from_slice(other.get(from..).unwrap_or_default());
            }
        }
        7 => {
            if !data.is_empty() {
                let cut = rng.random_range(0..data.len());
                data.truncate(cut);
            }
        }
        _ => {
            // Line ends swapped: CRLF to LF and back.
            let at = position(rng, data);
            if let Some(offset) = data
                .get(at..)
                .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
            {
                let index = at + offset;
                if index > 0 && data.get(index - 1) == Some(&b'\r') {
                    data.remove(index - 1);
                } else {
                    data.insert(index, b'\r');
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::{MAX_INPUT, mutate};

    #[test]
    fn mutations_stay_bounded_and_vary() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let seed = b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n".repeat(10);
        let mut different = 0;
        for _ in 0..2000 {
            let out = mutate(&mut rng, &seed, b"other seed");
            assert!(out.len() <= MAX_INPUT);
            if out != seed {
                different += 1;
            }
        }
        assert!(different > 1500, "{different}");
    }
}
