//! The OpenPGP payload of a PGP/MIME message: one ASCII-armored
//! `PGP MESSAGE` whose packets are zero or more session-key packets
//! (PKESK, SKESK) and then exactly one SEIPD packet, nothing else.
//! The packet headers are walked (see [`crate::packets`]) as the armor is
//! decoded, a batch at a time; the encrypted content itself is decoded
//! only to check it is base64 and skipped.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::packets::{Octets, check_packets};

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

/// How many `-----BEGIN PGP` and how many `-----END PGP` markers
/// `armored` holds. They are found by their dashes, which base64 never
/// has: a substring search for the whole marker found its candidates by
/// letters that base64 has everywhere.
fn count_markers(armored: &[u8]) -> (usize, usize) {
    let (mut begins, mut ends) = (0, 0);
    let mut rest = armored;
    while let Some(start) = memchr::memchr(b'-', rest) {
        let dashes = rest.get(start..).unwrap_or_default();
        let run = dashes.iter().take_while(|&&byte| byte == b'-').count();
        let after = dashes.get(run..).unwrap_or_default();
        // A marker's five dashes end a run of dashes.
        if run >= 5 {
            begins += usize::from(after.starts_with(b"BEGIN PGP"));
            ends += usize::from(after.starts_with(b"END PGP"));
        }
        rest = after;
    }
    (begins, ends)
}

/// Base64 as armor writers produce it: padding optional, as RFC 9580's
/// readers accept it.
const ARMOR_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Checks the armored payload; `allow_armor_headers` tolerates lines such
/// as `Version: ...` between the BEGIN line and the data.
///
/// The inside is optional `Key: value` header lines and the blank line
/// after them (tolerated missing, as sequoia's tolerant reader does),
/// base64 lines, and an optional `=XXXX` checksum line, which RFC 9580 says
/// not to judge a message by.
pub fn check_payload(body: &[u8], allow_armor_headers: bool) -> Result<(), Refusal> {
    let armored = trim(body);
    let inside = armored
        .strip_prefix(BEGIN)
        .and_then(|rest| rest.strip_suffix(END))
        .ok_or("payload is not one armored PGP MESSAGE")?;
    if count_markers(armored) != (1, 1) {
        return Err("payload holds more than one armored block");
    }
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
    let mut first_data_line = None;
    for line in lines.by_ref() {
        // Base64 has no colon: a line with one is a header.
        if line.contains(&b':') {
            has_headers = true;
            continue;
        }
        if !line.is_empty() {
            first_data_line = Some(line);
        }
        break;
    }
    if !allow_armor_headers && has_headers {
        return Err("armor headers are not allowed in outgoing mail");
    }
    let data_lines = first_data_line
        .into_iter()
        .chain(lines)
        .take_while(|line| line.first() != Some(&b'='));
    check_packets(&mut Base64Octets::new(data_lines))
}

/// Base64 characters decoded at a time: a multiple of four, so every
/// batch but the last is whole base64 quanta.
const BATCH: usize = 4096;

/// The binary data of the base64 lines, decoded a batch at a time as the
/// packet walk reads it: memory stays the same for any size of message,
/// and a payload refused early is not decoded further. Accepting takes
/// reading to the end, so exactly the payloads whose whole base64 decodes
/// and frames right are accepted.
struct Base64Octets<'a, I> {
    lines: I,
    /// What is left of the line being read.
    line: &'a [u8],
    batch: [u8; BATCH],
    decoded: [u8; BATCH / 4 * 3],
    position: usize,
    available: usize,
    finished: bool,
}

impl<'a, I: Iterator<Item = &'a [u8]>> Base64Octets<'a, I> {
    fn new(lines: I) -> Self {
        Self {
            lines,
            line: &[],
            batch: [0; BATCH],
            decoded: [0; BATCH / 4 * 3],
            position: 0,
            available: 0,
            finished: false,
        }
    }

    /// Decodes the next batch; false once all is decoded.
    fn refill(&mut self) -> Result<bool, Refusal> {
        while self.position == self.available {
            if self.finished {
                return Ok(false);
            }
            let filled = self.fill();
            self.decode(filled)?;
        }
        Ok(true)
    }

    /// Reads up to a batch of base64 characters into `batch`; how many.
    fn fill(&mut self) -> usize {
        let mut filled = 0;
        while filled < BATCH && self.more_input() {
            let room = self.batch.get_mut(filled..).unwrap_or_default();
            // Lines are whole base64 as a rule; spaces inside are the
            // rare case.
            let copied = if is_clean(self.line) {
                let taken = room.len().min(self.line.len());
                let (from, rest) = self.line.split_at(taken);
                room.get_mut(..taken)
                    .unwrap_or_default()
                    .copy_from_slice(from);
                self.line = rest;
                taken
            } else {
                let mut copied = 0;
                while copied < room.len()
                    && let Some((&byte, rest)) = self.line.split_first()
                {
                    self.line = rest;
                    if !byte.is_ascii_whitespace()
                        && let Some(slot) = room.get_mut(copied)
                    {
                        *slot = byte;
                        copied += 1;
                    }
                }
                copied
            };
            filled += copied;
        }
        self.finished = !self.more_input();
        filled
    }

    /// Decodes the `filled` characters of `batch`.
    fn decode(&mut self, filled: usize) -> Result<(), Refusal> {
        let batch = self.batch.get(..filled).unwrap_or_default();
        // Padding ends the base64; in a batch with more after it, it is
        // malformed, as it would be in the whole.
        if !self.finished && batch.contains(&b'=') {
            return Err("malformed armor");
        }
        self.available = ARMOR_BASE64
            .decode_slice(batch, &mut self.decoded)
            .map_err(|_| "malformed armor")?;
        self.position = 0;
        Ok(())
    }

    /// Whether base64 characters are left, moving to the next line that
    /// has any.
    fn more_input(&mut self) -> bool {
        loop {
            if self.line.iter().any(|byte| !byte.is_ascii_whitespace()) {
                return true;
            }
            match self.lines.next() {
                Some(line) => self.line = line,
                None => return false,
            }
        }
    }
}

fn is_clean(line: &[u8]) -> bool {
    memchr::memchr3(b' ', b'\t', b'\r', line).is_none() && !line.contains(&b'\x0c')
}

impl<'a, I: Iterator<Item = &'a [u8]>> Octets for Base64Octets<'a, I> {
    fn next_octet(&mut self) -> Result<Option<u8>, Refusal> {
        if !self.refill()? {
            return Ok(None);
        }
        let octet = self.decoded.get(self.position).copied();
        self.position += 1;
        Ok(octet)
    }

    fn skip(&mut self, count: usize) -> Result<usize, Refusal> {
        let mut skipped = 0;
        while skipped < count {
            if self.position == self.available {
                if self.finished {
                    break;
                }
                let filled = self.fill();
                // A whole batch within what is skipped (the bulk of a
                // large message) only has to be base64: a full batch
                // with more after it decodes exactly when every
                // character is in the alphabet.
                if filled == BATCH && !self.finished && count - skipped >= BATCH / 4 * 3 {
                    if !is_base64(&self.batch) {
                        return Err("malformed armor");
                    }
                    skipped += BATCH / 4 * 3;
                    continue;
                }
                self.decode(filled)?;
                continue;
            }
            let step = (count - skipped).min(self.available - self.position);
            self.position += step;
            skipped += step;
        }
        Ok(skipped)
    }
}

/// Whether every character is of the base64 alphabet (no padding),
/// checked without an early exit so that the compiler checks many at once.
fn is_base64(characters: &[u8]) -> bool {
    characters.iter().fold(true, |valid, &c| {
        valid
            & ((c.wrapping_sub(b'A') < 26)
                | (c.wrapping_sub(b'a') < 26)
                | (c.wrapping_sub(b'0') < 10)
                | (c == b'+')
                | (c == b'/'))
    })
}

#[cfg(test)]
mod tests {
    // Test helpers index known, generated data.
    #![allow(clippy::indexing_slicing)]

    use base64::Engine as _;
    use rand::{Rng, SeedableRng};

    use super::{ARMOR_BASE64, BATCH, BEGIN, END, check_payload, count_markers, is_base64, trim};
    use crate::packets::check_encrypted_message;

    /// The check as it was before decoding in batches: the whole base64
    /// joined, decoded at once, then walked.
    fn whole_decode_check(body: &[u8]) -> bool {
        let Some(inside) = trim(body)
            .strip_prefix(BEGIN)
            .and_then(|rest| rest.strip_suffix(END))
        else {
            return false;
        };
        let mut lines = inside.split(|&byte| byte == b'\n').map(trim);
        if !lines.next().unwrap_or_default().is_empty() {
            return false;
        }
        let mut in_headers = true;
        let mut base64 = Vec::new();
        for line in lines {
            if in_headers {
                if line.is_empty() {
                    in_headers = false;
                    continue;
                }
                if line.contains(&b':') {
                    continue;
                }
                in_headers = false;
            }
            if line.first() == Some(&b'=') {
                break;
            }
            base64.extend(line.iter().filter(|byte| !byte.is_ascii_whitespace()));
        }
        ARMOR_BASE64
            .decode(&base64)
            .is_ok_and(|data| check_encrypted_message(&data).is_ok())
    }

    fn packet(tag: u8, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len()).expect("test body");
        let mut packet = vec![0xc0 | tag, 255];
        packet.extend_from_slice(&len.to_be_bytes());
        packet.extend_from_slice(body);
        packet
    }

    fn armored(base64: &[u8]) -> Vec<u8> {
        let mut armored = BEGIN.to_vec();
        armored.extend_from_slice(b"\n\n");
        for line in base64.chunks(64) {
            armored.extend_from_slice(line);
            armored.extend_from_slice(b"\n");
        }
        armored.extend_from_slice(END);
        armored
    }

    /// Padding that ends a batch but not the base64 is malformed, as it
    /// is in the whole, even when the two halves decoded apart would make
    /// a well-framed message.
    #[test]
    fn padding_inside_the_base64_is_refused_at_a_batch_end() {
        let seipd = [&[1u8][..], &[0xaa; 5000]].concat();
        let binary = [packet(1, &[3, 7, 7]), packet(18, &seipd)].concat();
        let engine = base64::engine::general_purpose::STANDARD;
        assert!(check_payload(&armored(engine.encode(&binary).as_bytes()), false).is_ok());
        // The first part takes exactly one batch, ending in "==".
        let split = BATCH / 4 * 3 - 2;
        let (first, second) = binary.split_at(split);
        let first = engine.encode(first);
        assert_eq!(first.len(), BATCH);
        assert!(first.ends_with("=="));
        let padded_inside = [first, engine.encode(second)].concat();
        assert!(!whole_decode_check(&armored(padded_inside.as_bytes())));
        assert!(check_payload(&armored(padded_inside.as_bytes()), false).is_err());
    }

    /// Strings of dashes, marker letters and others: the markers counted
    /// by their dashes as a substring search counts them.
    #[test]
    fn markers_are_counted_as_a_substring_search_would() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4880);
        let pieces: [&[u8]; 6] = [b"-", b"-----", b"BEGIN PGP", b"END PGP", b"x", b"\n"];
        for _ in 0..20_000 {
            let text: Vec<u8> = (0..rng.random_range(0..12))
                .flat_map(|_| pieces[rng.random_range(0..pieces.len())].iter().copied())
                .collect();
            let search = |needle: &[u8]| memchr::memmem::find_iter(&text, needle).count();
            assert_eq!(
                count_markers(&text),
                (search(b"-----BEGIN PGP"), search(b"-----END PGP")),
                "{}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    #[test]
    fn the_alphabet_check_knows_every_octet() {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for octet in 0..=u8::MAX {
            assert_eq!(is_base64(&[octet]), alphabet.contains(&octet), "{octet}");
            assert!(!is_base64(&[b'A', octet, b'/']) || alphabet.contains(&octet));
        }
    }

    /// Payloads around and across batch boundaries, well and badly
    /// formed, in both checks: the same verdict every time.
    #[test]
    fn batches_decide_as_the_whole_would() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9580);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..2000 {
            let size = match rng.random_range(0..3) {
                0 => rng.random_range(0..200),
                // The packet headers and version take 16 octets: whole
                // messages that end right at, just before or just after a
                // batch.
                1 => rng.random_range(BATCH / 4 * 3 - 24..BATCH / 4 * 3 - 8),
                _ => rng.random_range(0..4 * BATCH),
            };
            let mut seipd = vec![rng.random_range(1..=2)];
            seipd.extend((0..size).map(|_| rng.random::<u8>()));
            let mut binary = [packet(1, &[3, 7, 7]), packet(18, &seipd)].concat();
            match rng.random_range(0..6) {
                0 => binary.truncate(rng.random_range(0..=binary.len())),
                1 => binary.push(rng.random()),
                _ => {}
            }
            let mut base64 = base64::engine::general_purpose::STANDARD
                .encode(&binary)
                .into_bytes();
            let stray = b"=!-"[rng.random_range(0..3)];
            match rng.random_range(0..10) {
                0 => {
                    // Padding or a stray character anywhere, in addition
                    // or instead of one.
                    let at = rng.random_range(0..=base64.len());
                    if rng.random() || at == base64.len() {
                        base64.insert(at, stray);
                    } else {
                        base64[at] = stray;
                    }
                }
                1 => {
                    while base64.last() == Some(&b'=') {
                        base64.pop();
                    }
                }
                2 => base64.truncate(rng.random_range(0..=base64.len())),
                _ => {}
            }
            let width = rng.random_range(1..=100);
            let mut armored = BEGIN.to_vec();
            armored.extend_from_slice(b"\n");
            if rng.random_range(0..4) == 0 {
                armored.extend_from_slice(b"Version: test\n\n");
            }
            for line in base64.chunks(width) {
                let mut line = line.to_vec();
                if rng.random_range(0..8) == 0 {
                    let at = rng.random_range(0..=line.len());
                    line.insert(at, b" \t\r"[rng.random_range(0..3)]);
                }
                armored.extend_from_slice(&line);
                armored.extend_from_slice(b"\n");
            }
            if rng.random() {
                armored.extend_from_slice(b"=AbCd\n");
            }
            armored.extend_from_slice(END);
            let whole = whole_decode_check(&armored);
            assert_eq!(
                check_payload(&armored, true).is_ok(),
                whole,
                "{}",
                String::from_utf8_lossy(&armored)
            );
            if whole {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Both verdicts are common, so the comparison means something.
        assert!(accepted > 500 && refused > 500, "{accepted} / {refused}");
    }
}
