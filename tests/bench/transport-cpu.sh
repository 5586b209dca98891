#!/usr/bin/env bash
# CPU time per delivered message of filtermail-transport, measured like
# the filters' (filter-cpu.sh): Postfix's smtp-source sends MESSAGES copies
# of a PGP/MIME message (2.3 KB unless SIZE says) over LMTP (-d: many messages per session),
# and the transport delivers each over HTTPS /mxdeliv into a local HTTPS
# sink, or over SMTP with STARTTLS into a local sink offering CHUNKING
# (BDAT) or not (DATA). Needs root (the
# daemon runs as vmail, smtp-sink as postfix). Run from the repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release --locked -q -p relay-tests -p filtermail-transport \
    --bin transport-bench --bin smtp-load --bin filtermail-transport
ulimit -n "$(ulimit -Hn)"
message=$(mktemp)
trap 'rm -f "$message"' EXIT
# SIZE (bytes) measures large messages, e.g. SIZE=20000000 MESSAGES=10 SESSIONS=1.
target/release/smtp-load unused --size "${SIZE:-2300}" --from 'bench@[127.0.0.1]' \
    --to user@healthy.test --write-message "$message" >/dev/null
# smtp-source ends each line of the file with CRLF itself.
sed -i 's/\r$//' "$message"
target/release/transport-bench cpu --message "$message" \
    --messages "${MESSAGES:-20000}" --sessions "${SESSIONS:-100,1}"
