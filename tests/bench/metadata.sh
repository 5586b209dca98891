#!/usr/bin/env bash
# Benchmarks chatmail-metadata's push notifier against a local HTTPS
# (HTTP/2) notification server: 100,000 notifications queued on disk are
# sent when the daemon starts, timed until the queue is empty; the
# baseline is the same number of requests from a bare client built on the
# same HTTP library with the same concurrency. Then the daemon's memory
# with 100,000 notifications pending (the server answers 500 and retries
# are an hour away). Run from the repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
count=${COUNT:-100000}

cargo build --release --locked -q -p relay-tests -p chatmail-metadata \
    --bin push-bench --bin chatmail-metadata
bin=target/release
work=$(mktemp -d)
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

start_sink() { # status
    rm -rf "$work/sink"; mkdir -p "$work/sink"
    "$bin/push-bench" sink --dir "$work/sink" --status "$1" > "$work/sink.log" &
    sink_pid=$!
    while [ ! -f "$work/sink/url" ]; do sleep 0.1; done
}
run_daemon() { # retry_base
    mkdir -p "$work/mail"
    cat > "$work/chatmail.ini" <<INI
[params]
mail_domain = example.org
mailboxes_dir = $work/mail
notification_url = $(cat "$work/sink/url")
notification_ca_file = $work/sink/ca.pem
notification_retry_base = $1
INI
    RUST_LOG=warn "$bin/chatmail-metadata" "$work/metadata.socket" "$work/chatmail.ini" &
    daemon_pid=$!
}
queue_len() { find "$work/mail/pending_notifications" -type f | wc -l; }

start_sink 200
echo "baseline  $("$bin/push-bench" load "$(cat "$work/sink/url")" --ca "$work/sink/ca.pem" --count "$count")"

"$bin/push-bench" fill "$work/mail" --count "$count"
start=$(date +%s.%N)
run_daemon 8s
while [ "$(queue_len)" -gt 0 ]; do sleep 0.05; done
seconds=$(echo "$(date +%s.%N) - $start" | bc)
echo "notifier  requests=$count seconds=$seconds per_second=$(echo "$count / $seconds" | bc)"
echo "notifier peak $(grep VmHWM "/proc/$daemon_pid/status")"
kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true
kill -INT "$sink_pid"; wait "$sink_pid" 2>/dev/null || true

start_sink 500
"$bin/push-bench" fill "$work/mail" --count "$count"
run_daemon 1h
# Wait until every notification was attempted once and is waiting.
while [ "$(cat "$work/sink/count" 2>/dev/null || echo 0)" -lt "$count" ]; do sleep 0.2; done
sleep 1
echo "pending   $(queue_len) notifications, daemon $(grep VmRSS "/proc/$daemon_pid/status")"
