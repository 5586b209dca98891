//! The OpenPGP payload of a PGP/MIME message: one ASCII-armored
//! `PGP MESSAGE` whose packets are zero or more session-key packets
//! (PKESK, SKESK) and then exactly one SEIPD packet, nothing else.
//! The packet headers are walked (see [`crate::packets`]) as the armor is
//! decoded, a batch at a time; of the encrypted content, the batches
//! wholly inside it are only checked to be base64 and skipped.

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
    let (begin_line_rest, mut rest) = split_line(inside);
    if !trim(begin_line_rest).is_empty() {
        return Err("malformed armor");
    }
    let mut has_headers = false;
    loop {
        let (line, after) = split_line(rest);
        let line = trim(line);
        // Base64 has no colon: a line with one is a header.
        if line.contains(&b':') {
            has_headers = true;
            rest = after;
            continue;
        }
        // A blank line ends the headers; any other line is base64.
        if line.is_empty() {
            rest = after;
        }
        break;
    }
    if !allow_armor_headers && has_headers {
        return Err("armor headers are not allowed in outgoing mail");
    }
    let base64 = rest.get(..checksum_line_start(rest)).unwrap_or_default();
    check_packets(&mut Base64Octets::new(base64))
}

/// The line at the start of `text`, without its LF, and what follows.
fn split_line(text: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b'\n', text) {
        Some(end) => (
            text.get(..end).unwrap_or_default(),
            text.get(end + 1..).unwrap_or_default(),
        ),
        None => (text, &[]),
    }
}

/// Where the first line starting with `=` (the checksum) starts, or the
/// end of `text`. In one pass, whatever the number of `=`.
fn checksum_line_start(text: &[u8]) -> usize {
    let mut line_start = 0;
    let mut searched = 0;
    let mut line_seen = None;
    for equals in memchr::memchr_iter(b'=', text) {
        let since = text.get(searched..equals).unwrap_or_default();
        if let Some(lf) = memchr::memrchr(b'\n', since) {
            line_start = searched + lf + 1;
        }
        searched = equals;
        // Only a line's first `=` can start it.
        if line_seen == Some(line_start) {
            continue;
        }
        line_seen = Some(line_start);
        let before = text.get(line_start..equals).unwrap_or_default();
        if before.iter().all(u8::is_ascii_whitespace) {
            return line_start;
        }
    }
    text.len()
}

/// Base64 characters decoded at a time: a multiple of four, so every
/// batch but the last is whole base64 quanta.
const BATCH: usize = 1024;
const BATCH_OCTETS: usize = BATCH / 4 * 3;
/// The first batch is smaller: it holds the session keys (PKESK packets,
/// read octet by octet) and the encrypted packet's header, and what
/// follows, the encrypted content, is only checked, not decoded. In a
/// chat message that is most of the payload.
const FIRST_BATCH: usize = 256;

/// The binary data of base64 text, decoded a batch at a time as the
/// packet walk reads it: memory stays the same for any size of message,
/// and a payload refused early is not decoded further. Accepting takes
/// reading to the end, so exactly the payloads whose whole base64 decodes
/// and frames right are accepted.
struct Base64Octets<'a> {
    /// What is not read yet.
    text: &'a [u8],
    /// Whether whitespace other than line ends was met inside a line:
    /// then each character is looked at, else only line ends are.
    spaced: bool,
    /// The size of the next batch: FIRST_BATCH, then BATCH.
    limit: usize,
    batch: [u8; BATCH],
    decoded: [u8; BATCH_OCTETS],
    position: usize,
    available: usize,
    finished: bool,
}

impl<'a> Base64Octets<'a> {
    fn new(text: &'a [u8]) -> Self {
        Self {
            text,
            spaced: false,
            limit: FIRST_BATCH,
            batch: [0; BATCH],
            decoded: [0; BATCH_OCTETS],
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
            self.next_batch(0)?;
        }
        Ok(true)
    }

    /// Reads the next batch and decodes it, or, when `skipping` octets
    /// cover the whole of it, only checks it; returns the octets skipped
    /// that way.
    fn next_batch(&mut self, skipping: usize) -> Result<usize, Refusal> {
        let unread = self.text;
        let filled = self.fill();
        match self.take_batch(filled, skipping) {
            // Spaces inside a line (the rare case) are in the batch, where
            // they are no base64: the batch is read again without them.
            Err(_) if !self.spaced => {
                self.spaced = true;
                self.text = unread;
                let filled = self.fill();
                self.take_batch(filled, skipping)
            }
            outcome => outcome,
        }
    }

    /// Reads up to a batch of base64 characters into `batch`, leaving out
    /// line ends (all whitespace once `spaced`); how many.
    fn fill(&mut self) -> usize {
        let mut filled = 0;
        while filled < self.limit {
            let Some(start) = self
                .text
                .iter()
                .position(|byte| !byte.is_ascii_whitespace())
            else {
                self.text = &[];
                break;
            };
            let text = self.text.get(start..).unwrap_or_default();
            let run = if self.spaced {
                text.iter().position(u8::is_ascii_whitespace)
            } else {
                memchr::memchr2(b'\n', b'\r', text)
            }
            .unwrap_or(text.len());
            let taken = run.min(self.limit - filled);
            let (from, after) = text.split_at(taken);
            self.batch
                .get_mut(filled..filled + taken)
                .unwrap_or_default()
                .copy_from_slice(from);
            filled += taken;
            self.text = after;
        }
        self.finished = self.text.iter().all(u8::is_ascii_whitespace);
        filled
    }

    /// Decodes the `filled` characters of `batch`, or checks them when
    /// `skipping` covers them all; returns the octets skipped.
    fn take_batch(&mut self, filled: usize, skipping: usize) -> Result<usize, Refusal> {
        let batch = self.batch.get(..filled).unwrap_or_default();
        self.limit = BATCH;
        // A full batch with more after it (whole quanta) decodes exactly
        // when every character is of the alphabet: the bulk of a message,
        // the encrypted content, is only checked.
        let octets = filled / 4 * 3;
        if !self.finished && skipping >= octets {
            return if is_base64(batch) {
                Ok(octets)
            } else {
                Err("malformed armor")
            };
        }
        // Padding ends the base64; in a batch with more after it, it is
        // malformed, as it would be in the whole.
        if !self.finished && batch.contains(&b'=') {
            return Err("malformed armor");
        }
        // The last batch, when the skip covers it all (the end of a
        // chat message's encrypted content): counted, not decoded.
        if self.finished {
            let length = decoded_length(batch).ok_or("malformed armor")?;
            if skipping >= length {
                self.available = 0;
                self.position = 0;
                return Ok(length);
            }
        }
        self.available = ARMOR_BASE64
            .decode_slice(batch, &mut self.decoded)
            .map_err(|_| "malformed armor")?;
        self.position = 0;
        Ok(0)
    }
}

/// The octets the last base64 `characters` of a payload decode to, or
/// `None` if they do not decode, by the rules of [`ARMOR_BASE64`]: the
/// alphabet, then at most as much `=` padding as completes the last
/// quantum, which never holds a single character; the bits left over
/// need not be zero. (`batches_decide_as_the_whole_would` holds this to
/// the decoder.)
fn decoded_length(characters: &[u8]) -> Option<usize> {
    let data_end = characters
        .iter()
        .rposition(|&c| c != b'=')
        .map_or(0, |last| last + 1);
    let (data, padding) = characters.split_at(data_end);
    let partial = data.len() % 4;
    let missing = (4 - partial) % 4;
    if !is_base64(data) || partial == 1 || padding.len() > missing {
        return None;
    }
    Some(data.len() / 4 * 3 + partial.saturating_sub(1))
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

impl Octets for Base64Octets<'_> {
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
                skipped += self.next_batch(count - skipped)?;
                continue;
            }
            let step = (count - skipped).min(self.available - self.position);
            self.position += step;
            skipped += step;
        }
        Ok(skipped)
    }
}

#[cfg(test)]
mod tests {
    // Test helpers index known, generated data.
    #![allow(clippy::indexing_slicing)]

    use base64::Engine as _;
    use rand::{Rng, SeedableRng};

    use super::{
        ARMOR_BASE64, BATCH, BATCH_OCTETS, BEGIN, END, FIRST_BATCH, check_payload, count_markers,
        decoded_length, is_base64, trim,
    };
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

    /// A packet cut short inside a batch it was skipping is refused,
    /// however many batches were skipped before.
    #[test]
    fn a_packet_cut_short_in_a_skipped_batch_is_refused() {
        let engine = base64::engine::general_purpose::STANDARD;
        // The first batch holds the header and the first octets.
        let claimed = FIRST_BATCH / 4 * 3 - 6 + 2 * BATCH_OCTETS;
        // 99 octets past the last full batch: no padding at the end.
        for present in [claimed, claimed - BATCH_OCTETS + 99] {
            let mut binary = vec![0xc0 | 18, 255];
            binary.extend_from_slice(&u32::try_from(claimed).expect("size").to_be_bytes());
            binary.push(1);
            binary.extend(std::iter::repeat_n(0xaa, present - 1));
            let armored = armored(engine.encode(&binary).as_bytes());
            let verdict = check_payload(&armored, false);
            if present == claimed {
                assert_eq!(verdict, Ok(()));
            } else {
                assert!(verdict.is_err(), "{present} of {claimed}");
            }
        }
    }

    /// Padding that ends a batch but not the base64 is malformed, as it
    /// is in the whole, even when the two halves decoded apart would make
    /// a well-framed message: at the end of the first batch and of the
    /// second, in a part that is read and in one that is skipped.
    #[test]
    fn padding_inside_the_base64_is_refused_at_a_batch_end() {
        let seipd = [&[1u8][..], &[0xaa; 5000]].concat();
        let engine = base64::engine::general_purpose::STANDARD;
        // A version 3 session key packet, short or long enough to be read
        // across the first batch's end.
        let long_key = [&[3u8][..], &[7; 199]].concat();
        for (batch_end, session_key) in [
            (FIRST_BATCH, &[3u8, 7, 7][..]),
            (FIRST_BATCH, &long_key[..]),
            (FIRST_BATCH + BATCH, &[3u8, 7, 7][..]),
        ] {
            let binary = [packet(1, session_key), packet(18, &seipd)].concat();
            assert!(check_payload(&armored(engine.encode(&binary).as_bytes()), false).is_ok());
            // The first part takes exactly the batches, ending in "==".
            let split = batch_end / 4 * 3 - 2;
            let (first, second) = binary.split_at(split);
            let first = engine.encode(first);
            assert_eq!(first.len(), batch_end);
            assert!(first.ends_with("=="));
            let padded_inside = [first, engine.encode(second)].concat();
            assert!(!whole_decode_check(&armored(padded_inside.as_bytes())));
            assert!(check_payload(&armored(padded_inside.as_bytes()), false).is_err());
        }
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

    /// Every string of up to 8 characters from letters, padding and a
    /// stray: counted as the decoder decodes it, or refused as it is.
    #[test]
    fn the_last_batch_is_counted_as_the_decoder_reads_it() {
        let characters = *b"AB/=-";
        let mut text = Vec::new();
        for length in 0..=8u32 {
            for mut index in 0..characters.len().pow(length) {
                text.clear();
                for _ in 0..length {
                    text.push(characters[index % characters.len()]);
                    index /= characters.len();
                }
                assert_eq!(
                    decoded_length(&text),
                    ARMOR_BASE64.decode(&text).ok().map(|data| data.len()),
                    "{}",
                    String::from_utf8_lossy(&text)
                );
            }
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
                1 => {
                    let end = [FIRST_BATCH, FIRST_BATCH + BATCH][rng.random_range(0..2)] / 4 * 3;
                    rng.random_range(end - 24..end - 8)
                }
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
            let line_end: &[u8] = if rng.random() { b"\n" } else { b"\r\n" };
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
                armored.extend_from_slice(line_end);
            }
            match rng.random_range(0..3) {
                0 => armored.extend_from_slice(b"=AbCd\n"),
                1 => armored.extend_from_slice(b" \t=AbCd\r\nQUJD\n"),
                _ => {}
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
