//! The policy check's CPU per message, by size: PGP/MIME messages whose
//! payload is one SEIPD packet, classified as the filters do and with the
//! whole message parsed (the reference the cut of the payload's middle is
//! held to).

use chatmail_e2ee::{Direction, Envelope, Verdict, classify, classify_whole, sample};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn policy(c: &mut Criterion) {
    let rcpt_to = ["two@example.org".to_owned()];
    let envelope = Envelope {
        mail_from: "one@example.org",
        rcpt_to: &rcpt_to,
    };
    let mut group = c.benchmark_group("classify");
    for size in [2_300, 30_000, 200_000, 20_000_000] {
        // CRLF and 76-character lines, as Delta Chat sends them.
        let message = sample::pgp_mime(size * 3 / 4, 76, "\r\n");
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
