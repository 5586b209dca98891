//! The policy check's CPU per message, by size: PGP/MIME messages whose
//! payload is one SEIPD packet, classified as the filters do and with the
//! whole message parsed (the reference the cut of the payload's middle is
//! held to).

use base64::Engine as _;
use chatmail_e2ee::{Direction, Envelope, Verdict, classify, classify_whole};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// A PGP/MIME message of about `size` octets, armored in 76-character
/// lines with CRLF line ends, as Delta Chat sends them.
fn pgp_mime(size: usize) -> Vec<u8> {
    let body_len = size * 3 / 4;
    let mut packet = vec![0xc0 | 18, 255];
    packet.extend_from_slice(&u32::try_from(body_len).unwrap_or(u32::MAX).to_be_bytes());
    packet.push(1);
    packet.extend((1..body_len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let base64 = base64::engine::general_purpose::STANDARD.encode(packet);
    let boundary = "YFrteb74qSXmggbOxZL9dRnhymywAi";
    let mut message = format!(
        "From: one@example.org\r\nTo: two@example.org\r\nSubject: ...\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n\
         \tboundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n\
         Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--{boundary}\r\n\
         Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n\
         -----BEGIN PGP MESSAGE-----\r\n\r\n"
    )
    .into_bytes();
    for line in base64.as_bytes().chunks(76) {
        message.extend_from_slice(line);
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(
        format!("-----END PGP MESSAGE-----\r\n\r\n--{boundary}--\r\n").as_bytes(),
    );
    message
}

fn policy(c: &mut Criterion) {
    let rcpt_to = ["two@example.org".to_owned()];
    let envelope = Envelope {
        mail_from: "one@example.org",
        rcpt_to: &rcpt_to,
    };
    let mut group = c.benchmark_group("classify");
    for size in [2_300, 30_000, 200_000, 20_000_000] {
        let message = pgp_mime(size);
        assert_eq!(
            classify(&message, &envelope, Direction::Outgoing),
            Verdict::Encrypted
        );
        group.throughput(Throughput::Bytes(message.len() as u64));
        if size > 1_000_000 {
            group.sample_size(10);
        }
        group.bench_with_input(
            BenchmarkId::new("as the filters do", size),
            &message,
            |b, m| {
                b.iter(|| classify(m, &envelope, Direction::Outgoing));
            },
        );
        group.bench_with_input(BenchmarkId::new("whole parse", size), &message, |b, m| {
            b.iter(|| classify_whole(m, &envelope, Direction::Outgoing));
        });
    }
    group.finish();
}

criterion_group!(benches, policy);
criterion_main!(benches);
