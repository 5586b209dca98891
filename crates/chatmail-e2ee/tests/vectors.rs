//! The policy over the shared test mails and crafted OpenPGP vectors.
//! Crafted payloads re-frame the real packets of encrypted.eml and
//! asm.eml (PKESK, SKESK, SEIPD) in the other header formats.

// Test helpers slice fixed, known-good vectors; a panic there is a broken test.
#![allow(clippy::indexing_slicing)]

use std::path::PathBuf;

use base64::Engine as _;
use chatmail_e2ee::{Direction, Envelope, Verdict, classify};

fn testdata(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/mail")
        .join(name);
    let text = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    String::from_utf8_lossy(&text)
        .replace("{subject}", "Hi")
        .into_bytes()
}

const FROM: &str = "one@example.org";

fn verdict(raw: &[u8], direction: Direction) -> Verdict {
    let rcpt = ["two@example.org".to_owned()];
    classify(
        raw,
        &Envelope {
            mail_from: FROM,
            rcpt_to: &rcpt,
        },
        direction,
    )
}

fn both(raw: &[u8]) -> (Verdict, Verdict) {
    (
        verdict(raw, Direction::Incoming),
        verdict(raw, Direction::Outgoing),
    )
}

fn assert_allowed(name: &str, raw: &[u8]) {
    let (incoming, outgoing) = both(raw);
    assert_eq!(incoming, Verdict::Encrypted, "{name} incoming");
    assert_eq!(outgoing, Verdict::Encrypted, "{name} outgoing");
}

fn assert_refused(name: &str, raw: &[u8]) {
    let (incoming, outgoing) = both(raw);
    assert!(
        matches!(incoming, Verdict::Cleartext(_)),
        "{name} incoming: {incoming:?}"
    );
    assert!(
        matches!(outgoing, Verdict::Cleartext(_)),
        "{name} outgoing: {outgoing:?}"
    );
}

// ---- the shared vectors -------------------------------------------------

#[test]
fn shared_vectors_in_both_directions() {
    let rcpt = ["two@example.org".to_owned()];
    let envelope = Envelope {
        mail_from: FROM,
        rcpt_to: &rcpt,
    };
    let self_sent = [FROM.to_owned()];
    let to_self = Envelope {
        mail_from: FROM,
        rcpt_to: &self_sent,
    };
    let cleartext = |v: &Verdict| matches!(v, Verdict::Cleartext(_));
    type Check = fn(&Verdict) -> bool;
    // (file, envelope, incoming check, outgoing check, rule)
    let cases: [(&str, &Envelope<'_>, Check, Check, &str); 10] = [
        (
            "encrypted.eml",
            &envelope,
            |v| *v == Verdict::Encrypted,
            |v| *v == Verdict::Encrypted,
            "PGP/MIME passes",
        ),
        (
            "fake-encrypted.eml",
            &envelope,
            cleartext,
            cleartext,
            "armor in a text part is not PGP/MIME",
        ),
        (
            "literal.eml",
            &envelope,
            cleartext,
            cleartext,
            "a literal data packet is not encryption",
        ),
        (
            "plain.eml",
            &envelope,
            cleartext,
            cleartext,
            "cleartext is refused",
        ),
        (
            "mdn.eml",
            &envelope,
            cleartext,
            cleartext,
            "read receipts must be encrypted",
        ),
        (
            "securejoin-vc.eml",
            &envelope,
            |v| *v == Verdict::SecureJoin,
            |v| *v == Verdict::SecureJoin,
            "securejoin request",
        ),
        (
            "securejoin-vc-fake.eml",
            &envelope,
            cleartext,
            cleartext,
            "securejoin header with other text",
        ),
        (
            "mailer-daemon.eml",
            &envelope,
            |v| *v == Verdict::MailerDaemonReport,
            cleartext,
            "bounces only come in",
        ),
        (
            "asm.eml",
            &to_self,
            cleartext,
            |v| *v == Verdict::AutocryptSetupMessage,
            "setup message only to self, outgoing",
        ),
        (
            "asm.eml",
            &envelope,
            cleartext,
            cleartext,
            "setup message to someone else",
        ),
    ];
    for (file, envelope, incoming, outgoing, rule) in cases {
        let raw = testdata(file);
        let got_in = classify(&raw, envelope, Direction::Incoming);
        let got_out = classify(&raw, envelope, Direction::Outgoing);
        assert!(incoming(&got_in), "{file} incoming ({rule}): {got_in:?}");
        assert!(outgoing(&got_out), "{file} outgoing ({rule}): {got_out:?}");
    }
}

// ---- crafted OpenPGP payloads -------------------------------------------

/// The base64 between the armor lines of a test mail, decoded.
fn dearmor(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    let start = text.find("-----BEGIN PGP MESSAGE-----").expect("begin");
    let end = text.find("-----END PGP MESSAGE-----").expect("end");
    let block = text.get(start..end).expect("block");
    let data: String = block
        .lines()
        .skip(1)
        .skip_while(|line| line.contains(':'))
        .filter(|line| !line.starts_with('=') && !line.trim().is_empty())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64")
}

/// Splits a binary OpenPGP message into (tag, body) pairs. Test-only:
/// knows just the length forms our vectors use.
fn packets(mut data: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((&ctb, rest)) = data.split_first() {
        data = rest;
        if ctb & 0x40 != 0 {
            let tag = ctb & 0x3f;
            let mut body = Vec::new();
            loop {
                let (len, partial, header) = match data {
                    [l, ..] if *l < 192 => (usize::from(*l), false, 1),
                    [l, m, ..] if *l < 224 => (
                        ((usize::from(*l) - 192) << 8) + usize::from(*m) + 192,
                        false,
                        2,
                    ),
                    [255, a, b, c, d, ..] => {
                        (u32::from_be_bytes([*a, *b, *c, *d]) as usize, false, 5)
                    }
                    [l, ..] => (1usize << (l & 0x1f), true, 1),
                    [] => panic!("truncated"),
                };
                body.extend_from_slice(&data[header..header + len]);
                data = &data[header + len..];
                if !partial {
                    break;
                }
            }
            out.push((tag, body));
        } else {
            let tag = (ctb >> 2) & 0x0f;
            let (len, header) = match ctb & 3 {
                0 => (usize::from(data[0]), 1),
                1 => (usize::from(u16::from_be_bytes([data[0], data[1]])), 2),
                _ => (
                    u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize,
                    4,
                ),
            };
            out.push((tag, data[header..header + len].to_vec()));
            data = &data[header + len..];
        }
    }
    out
}

fn new_format(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xc0 | tag];
    match body.len() {
        len if len < 192 => out.push(len as u8),
        len if len < 8384 => {
            let len = len - 192;
            out.extend([((len >> 8) + 192) as u8, (len & 0xff) as u8]);
        }
        len => {
            out.push(255);
            out.extend((len as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(body);
    out
}

fn legacy_format(tag: u8, body: &[u8]) -> Vec<u8> {
    assert!(tag < 16, "legacy headers hold 4-bit tags");
    let mut out = Vec::new();
    if body.len() < 256 {
        out.extend([0x80 | (tag << 2), body.len() as u8]);
    } else {
        out.push(0x80 | (tag << 2) | 1);
        out.extend((body.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(body);
    out
}

/// New-format header with partial body lengths of `chunk` (a power of two
/// of at least 512, as the first chunk must be) and a final definite part.
fn partial_format(tag: u8, body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = vec![0xc0 | tag];
    let mut rest = body;
    while rest.len() > chunk {
        out.push(224 + chunk.trailing_zeros() as u8);
        out.extend_from_slice(&rest[..chunk]);
        rest = &rest[chunk..];
    }
    let last = new_format(tag, rest);
    out.extend_from_slice(&last[1..]);
    out
}

fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0xB7_04CE;
    for &byte in data {
        crc ^= u32::from(byte) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x100_0000 != 0 {
                crc ^= 0x186_4CFB;
            }
        }
    }
    crc & 0xFF_FFFF
}

fn armor(binary: &[u8], headers: &[&str], checksum: bool) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(binary);
    let mut out = String::from("-----BEGIN PGP MESSAGE-----\n");
    for header in headers {
        out.push_str(header);
        out.push('\n');
    }
    out.push('\n');
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("ascii"));
        out.push('\n');
    }
    if checksum {
        let crc = crc24(binary).to_be_bytes();
        out.push('=');
        out.push_str(&base64::engine::general_purpose::STANDARD.encode(&crc[1..]));
        out.push('\n');
    }
    out.push_str("-----END PGP MESSAGE-----\n");
    out
}

const BOUNDARY: &str = "YFrteb74qSXmggbOxZL9dRnhymywAi";

fn part(content_type: &str, body: &str) -> String {
    format!("--{BOUNDARY}\nContent-Type: {content_type}\n\n{body}\n")
}

fn pgp_mime_with(top_type: &str, parts: &[String]) -> Vec<u8> {
    let mut out = format!(
        "From: {FROM}\nTo: two@example.org\nSubject: Hi\nMIME-Version: 1.0\n\
         Content-Type: {top_type}; protocol=\"application/pgp-encrypted\";\n\tboundary=\"{BOUNDARY}\"\n\n\n"
    );
    for part in parts {
        out.push_str(part);
        out.push('\n');
    }
    out.push_str(&format!("--{BOUNDARY}--\n"));
    out.into_bytes()
}

fn pgp_mime(armored: &str) -> Vec<u8> {
    pgp_mime_with(
        "multipart/encrypted",
        &[
            part("application/pgp-encrypted", "Version: 1\n"),
            part("application/octet-stream; name=\"encrypted.asc\"", armored),
        ],
    )
}

struct Real {
    pkesk: Vec<u8>,
    skesk: Vec<u8>,
    seipd: Vec<u8>,
    asm_seipd: Vec<u8>,
}

fn real_packets() -> Real {
    let encrypted = packets(&dearmor(&testdata("encrypted.eml")));
    let asm = packets(&dearmor(&testdata("asm.eml")));
    assert_eq!(
        encrypted.iter().map(|p| p.0).collect::<Vec<_>>(),
        [1, 1, 18]
    );
    assert_eq!(asm.iter().map(|p| p.0).collect::<Vec<_>>(), [3, 18]);
    Real {
        pkesk: encrypted[0].1.clone(),
        skesk: asm[0].1.clone(),
        seipd: encrypted[2].1.clone(),
        asm_seipd: asm[1].1.clone(),
    }
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn reframed_real_packets_pass() {
    let real = real_packets();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "new-format headers",
            concat(&[new_format(1, &real.pkesk), new_format(18, &real.seipd)]),
        ),
        // Legacy headers only have room for tags below 16, so GnuPG frames
        // PKESK/SKESK the old way and the SEIPD (tag 18) the new way.
        (
            "legacy session key header",
            concat(&[legacy_format(1, &real.pkesk), new_format(18, &real.seipd)]),
        ),
        (
            "partial body lengths",
            concat(&[
                new_format(1, &real.pkesk),
                partial_format(18, &real.seipd, 512),
            ]),
        ),
        (
            "GnuPG style: legacy SKESK, partial SEIPD",
            concat(&[
                legacy_format(3, &real.skesk),
                partial_format(18, &real.asm_seipd, 512),
            ]),
        ),
        (
            "several PKESK and SKESK",
            concat(&[
                new_format(1, &real.pkesk),
                legacy_format(1, &real.pkesk),
                new_format(3, &real.skesk),
                new_format(1, &real.pkesk),
                new_format(18, &real.seipd),
            ]),
        ),
        ("no session key packet", new_format(18, &real.seipd)),
    ];
    for (name, binary) in cases {
        assert_allowed(name, &pgp_mime(&armor(&binary, &[], true)));
        assert_allowed(
            &format!("{name}, no checksum"),
            &pgp_mime(&armor(&binary, &[], false)),
        );
    }
}

/// RFC 9580 §6.1: a CRC24 footer that does not match MUST NOT make an
/// implementation reject the data. The packet structure is what proves
/// encryption, and it is checked in full either way.
#[test]
fn bad_armor_checksum_is_ignored_as_rfc_9580_requires() {
    let real = real_packets();
    let good = concat(&[new_format(1, &real.pkesk), new_format(18, &real.seipd)]);
    let mut armored = armor(&good, &[], true);
    let at = armored.rfind("\n=").expect("checksum line") + 2;
    let replacement = if &armored[at..at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    armored.replace_range(at..at + 1, replacement);
    assert_allowed("bad checksum, good packets", &pgp_mime(&armored));

    let literal = new_format(11, b"b\0\0\0\0\0Hello world!");
    let mut armored = armor(&literal, &[], true);
    let at = armored.rfind("\n=").expect("checksum line") + 2;
    armored.replace_range(at..at + 4, "AAAA");
    assert_refused("bad checksum, literal packet", &pgp_mime(&armored));
}

#[test]
fn armor_headers_only_incoming() {
    let real = real_packets();
    let binary = concat(&[new_format(1, &real.pkesk), new_format(18, &real.seipd)]);
    let raw = pgp_mime(&armor(
        &binary,
        &["Version: GnuPG v2", "Comment: test"],
        true,
    ));
    let (incoming, outgoing) = both(&raw);
    assert_eq!(incoming, Verdict::Encrypted);
    assert!(matches!(outgoing, Verdict::Cleartext(_)), "{outgoing:?}");
}

#[test]
fn malformed_payloads_are_refused() {
    let real = real_packets();
    let good = concat(&[new_format(1, &real.pkesk), new_format(18, &real.seipd)]);
    let good_armor = armor(&good, &[], true);

    let bad_base64 = good_armor.replacen("\n\n", "\n\n!!!!", 1);
    let truncated_armor = {
        let lines: Vec<&str> = good_armor.lines().collect();
        let mut kept: Vec<&str> = lines[..lines.len() - 4].to_vec();
        kept.push("-----END PGP MESSAGE-----");
        kept.join("\n")
    };
    let truncated_seipd = {
        let mut packet = new_format(18, &real.seipd);
        packet.truncate(packet.len() - 100);
        armor(&concat(&[new_format(1, &real.pkesk), packet]), &[], true)
    };
    let literal = new_format(11, b"b\0\0\0\0\0Hello world!");
    let compressed = new_format(8, &[1, 0x78, 0x9c, 0x03, 0x00]);
    let signature = new_format(2, &[4, 0, 1, 8, 0, 0, 0, 0, 0, 0]);
    let cases: Vec<(&str, String)> = vec![
        ("bad base64", bad_base64),
        ("armor cut short", truncated_armor),
        ("truncated encrypted data", truncated_seipd),
        (
            "trailing garbage",
            armor(
                &concat(&[good.clone(), vec![0xde, 0xad, 0xbe, 0xef]]),
                &[],
                true,
            ),
        ),
        (
            "packet after the encrypted data",
            armor(&concat(&[good.clone(), literal.clone()]), &[], true),
        ),
        (
            "two encrypted data packets",
            armor(
                &concat(&[good.clone(), new_format(18, &real.seipd)]),
                &[],
                true,
            ),
        ),
        ("literal data only", armor(&literal, &[], true)),
        ("compressed data", armor(&compressed, &[], true)),
        (
            "signature then encryption",
            armor(&concat(&[signature.clone(), good.clone()]), &[], true),
        ),
        (
            "session keys without encrypted data",
            armor(&new_format(1, &real.pkesk), &[], true),
        ),
        ("empty armor", armor(&[], &[], false)),
        ("text before the armor", format!("hello\n{good_armor}")),
        ("two armored blocks", format!("{good_armor}{good_armor}")),
        (
            "public key block",
            good_armor.replace("PGP MESSAGE", "PGP PUBLIC KEY BLOCK"),
        ),
    ];
    for (name, armored) in cases {
        assert_refused(name, &pgp_mime(&armored));
    }
}

#[test]
fn mime_structure_rules() {
    let real = real_packets();
    let armored = armor(
        &concat(&[new_format(1, &real.pkesk), new_format(18, &real.seipd)]),
        &[],
        true,
    );
    let version = part("application/pgp-encrypted", "Version: 1\n");
    let payload = part("application/octet-stream", &armored);
    let refused: Vec<(&str, Vec<u8>)> = vec![
        (
            "extra part",
            pgp_mime_with(
                "multipart/encrypted",
                &[version.clone(), payload.clone(), part("text/plain", "hi")],
            ),
        ),
        (
            "wrong order",
            pgp_mime_with("multipart/encrypted", &[payload.clone(), version.clone()]),
        ),
        (
            "payload only",
            pgp_mime_with("multipart/encrypted", std::slice::from_ref(&payload)),
        ),
        (
            "multipart/mixed",
            pgp_mime_with("multipart/mixed", &[version.clone(), payload.clone()]),
        ),
        (
            "version 2",
            pgp_mime_with(
                "multipart/encrypted",
                &[
                    part("application/pgp-encrypted", "Version: 2\n"),
                    payload.clone(),
                ],
            ),
        ),
        (
            "payload as text/plain",
            pgp_mime_with(
                "multipart/encrypted",
                &[version.clone(), part("text/plain", &armored)],
            ),
        ),
        (
            "nested multipart",
            pgp_mime_with(
                "multipart/encrypted",
                &[
                    version.clone(),
                    format!(
                        "--{BOUNDARY}\nContent-Type: multipart/mixed; boundary=inner\n\n\
                         --inner\nContent-Type: application/octet-stream\n\n{armored}\n--inner--\n"
                    ),
                ],
            ),
        ),
    ];
    for (name, raw) in refused {
        assert_refused(name, &raw);
    }

    let upper = pgp_mime_with(
        "MULTIPART/ENCRYPTED",
        &[
            part("Application/PGP-Encrypted", "Version: 1\n"),
            part("APPLICATION/OCTET-STREAM", &armored),
        ],
    );
    assert_allowed("upper-case content types", &upper);
    let crlf = String::from_utf8(pgp_mime(&armored))
        .expect("utf8")
        .replace('\n', "\r\n");
    assert_allowed("CRLF line endings", crlf.as_bytes());
    assert_allowed("LF line endings", &pgp_mime(&armored));
    let mut eight_bit = b"X-Name: J\xc3\xbcrgen \xff\n".to_vec();
    eight_bit.extend(pgp_mime(&armored));
    assert_allowed("8-bit header bytes", &eight_bit);
}

#[test]
fn cleartext_oddities_are_verdicts_not_panics() {
    let cases: [&[u8]; 8] = [
        b"",
        b"\xff\xfe\x00\x01binary",
        b"Subject: hi\n\nbody with 8-bit \xe9\xff bytes\n",
        b"Content-Type: multipart/encrypted; boundary=x\n\n--x\n",
        b"Content-Type: multipart/encrypted\n\nno boundary\n",
        b"Content-Type: multipart/mixed; boundary=x\nSecure-Join: vc-request\n\n--x\nContent-Type: text/plain\n\nsecure-join: vc-request\n--x\nContent-Type: text/plain\n\nmore\n--x--\n",
        b"From: <MAILER-DAEMON@example.org>\nContent-Type: multipart/report; boundary=x\n\n--x--\n",
        b"From: <mailer-daemon@example.org>\nAuto-Submitted: auto-replied\nContent-Type: text/plain\n\nbounce\n",
    ];
    for raw in cases {
        assert_refused(&String::from_utf8_lossy(raw), raw);
    }
}

#[test]
fn securejoin_variants() {
    let make = |header: &str, body: &str| {
        format!(
            "From: {FROM}\nSecure-Join: {header}\nContent-Type: multipart/mixed; boundary=b\n\n\
             --b\nContent-Type: text/plain; charset=utf-8\n\n{body}\n--b--\n"
        )
        .into_bytes()
    };
    let (incoming, outgoing) = both(&make("vg-request", "  Secure-Join: VG-Request \n"));
    assert_eq!(
        (incoming, outgoing),
        (Verdict::SecureJoin, Verdict::SecureJoin)
    );
    assert_refused(
        "vc-auth must be encrypted",
        &make("vc-auth-required", "secure-join: vc-auth-required"),
    );
    assert_refused(
        "body says something else",
        &make("vc-request", "secure-join: vc-request please"),
    );
}

#[test]
fn thirty_mebibyte_message() {
    let real = real_packets();
    let mut body = vec![1u8]; // SEIPD version 1, then "ciphertext"
    body.extend((0..30 * 1024 * 1024).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let binary = concat(&[
        new_format(1, &real.pkesk),
        partial_format(18, &body, 1 << 20),
    ]);
    let raw = pgp_mime(&armor(&binary, &[], true));
    assert!(raw.len() > 30 * 1024 * 1024);
    let started = std::time::Instant::now();
    assert_allowed("30 MiB", &raw);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

// ---- against a full OpenPGP parser --------------------------------------

/// The rule as sequoia's packet parser reads it (the implementation before
/// the header walk): session-key packets, one SEIPD, nothing after, every
/// packet's content parsed.
fn sequoia_accepts(data: &[u8]) -> bool {
    use sequoia_openpgp::packet::Packet;
    use sequoia_openpgp::parse::{PacketParser, PacketParserResult, Parse};
    let Ok(mut result) = PacketParser::from_bytes(data) else {
        return false;
    };
    let mut seen_encrypted_data = false;
    while let PacketParserResult::Some(parser) = result {
        match &parser.packet {
            Packet::PKESK(_) | Packet::SKESK(_) if !seen_encrypted_data => {}
            Packet::SEIP(_) if !seen_encrypted_data => seen_encrypted_data = true,
            _ => return false,
        }
        match parser.next() {
            Ok((_, next)) => result = next,
            Err(_) => return false,
        }
    }
    seen_encrypted_data
}

/// Mutated real payloads: whatever a full parser accepts passes the
/// header walk too. (The walk is laxer in one way only: it does not look
/// inside session-key packets beyond their version, which are opaque to
/// a relay and trivially forged well-formed anyway.)
#[test]
fn never_stricter_than_a_full_parser() {
    use rand::{Rng, SeedableRng};
    let seeds = [
        dearmor(&testdata("encrypted.eml")),
        dearmor(&testdata("asm.eml")),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let (mut accepted_by_sequoia, mut accepted_by_walk) = (0, 0);
    for round in 0..3000 {
        let mut data = seeds[round % seeds.len()].clone();
        for _ in 0..rng.random_range(1..4) {
            // Most mutations hit the headers at the front, where the
            // framing is.
            let front = data.len().min(40);
            match rng.random_range(0..4) {
                0 => data[rng.random_range(0..front)] = rng.random(),
                1 => data[rng.random_range(0..front)] ^= 1 << rng.random_range(0..8),
                2 => data.truncate(rng.random_range(1..=data.len())),
                _ => data.insert(rng.random_range(0..=data.len()), rng.random()),
            }
        }
        let by_walk =
            verdict(&pgp_mime(&armor(&data, &[], true)), Direction::Outgoing) == Verdict::Encrypted;
        if sequoia_accepts(&data) {
            accepted_by_sequoia += 1;
            assert!(by_walk, "refused what sequoia accepts: {data:02x?}");
        }
        accepted_by_walk += usize::from(by_walk);
    }
    // Both outcomes occur, so the comparison means something.
    assert!(accepted_by_sequoia > 100, "{accepted_by_sequoia}");
    assert!(accepted_by_walk < 3000, "{accepted_by_walk}");
}
