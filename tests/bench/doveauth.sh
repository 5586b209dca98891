#!/usr/bin/env bash
# Benchmarks doveauth lookups of existing accounts: 64 concurrent dict
# clients (one request in flight each, as Dovecot's auth processes do)
# against 10,000 accounts, and doveauth's peak RSS. The baseline is the
# same load against a dict server that answers from memory with a
# constant: the protocol engine alone. Run from the repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
users=${USERS:-10000}
clients=${CLIENTS:-64}
seconds=${SECONDS_PER_RUN:-10}

cargo build --release --locked -q -p doveauth -p relay-tests --bin doveauth --bin dict-load
bin=target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

"$bin/dict-load" populate "$work/mail" --users "$users"
cat > "$work/chatmail.ini" <<INI
[params]
mail_domain = example.org
mailboxes_dir = $work/mail
passdb_path = $work/passdb.sqlite
INI

wait_for() { for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done; return 1; }

"$bin/dict-load" serve-constant "$work/constant.sock" &
wait_for "$work/constant.sock"
echo "baseline (constant in-memory dict):"
"$bin/dict-load" load "$work/constant.sock" --users "$users" --clients "$clients" --seconds "$seconds"
kill %1

RUST_LOG=warn "$bin/doveauth" "$work/doveauth.sock" "$work/chatmail.ini" &
pid=$!
wait_for "$work/doveauth.sock"
for kind in userdb passdb; do
    echo "doveauth $kind lookups of existing accounts:"
    "$bin/dict-load" load "$work/doveauth.sock" --users "$users" --clients "$clients" \
        --seconds "$seconds" --kind "$kind"
done
grep -E '^(VmHWM|VmRSS)' "/proc/$pid/status"
