#!/usr/bin/env bash
# Benchmarks filtermail-transport: (a) 1000 concurrent LMTP clients, half
# of them for a destination that accepts connections and never answers;
# (b) one healthy destination answering 50 ms late, parallel against one
# message at a time. Needs root (the daemon runs as vmail). Run from the
# repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release --locked -q -p relay-tests -p filtermail-transport \
    --bin transport-bench --bin filtermail-transport
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
target/release/transport-bench blackhole --clients "${CLIENTS:-1000}"
target/release/transport-bench slow --messages "${MESSAGES:-2000}" --clients 30 --delay-ms 50
