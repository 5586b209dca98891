#!/usr/bin/env bash
# Instructions per message of builds of filtermail-incoming (without
# DKIM), counted by callgrind: a figure that does not move with the load
# of a shared host, unlike CPU time. Each build in BUILDS (directories
# holding a filtermail-incoming binary) runs under valgrind, takes 200
# messages of 1.9 KB for warm-up and then MESSAGES more from smtp-source
# (20 sessions, -d) into smtp-sink; the script prints the instructions of
# the measured messages divided by their number. Needs root (smtp-sink
# drops to the postfix user) and valgrind. KEEP=DIR keeps each build's
# profile of the measured messages as DIR/N.callgrind (for
# callgrind_annotate). Run from the repository root:
#
#   sudo BUILDS="/tmp/before /tmp/after" bash tests/bench/filter-callgrind.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
builds=${BUILDS:?BUILDS=\"DIR ...\" of filtermail-incoming builds}
messages=${MESSAGES:-2000}

cargo build --release --locked -q -p relay-tests --bin smtp-load
work=$(mktemp -d)
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

sink_port=20125
smtp-sink -u postfix -m 1000 127.0.0.1:$sink_port 1024 2>/dev/null &
sender=sender@example.org
recipient=user@relay.test
target/release/smtp-load unused --size 2300 --from $sender --to $recipient \
    --write-message "$work/message.eml" >/dev/null
# smtp-source ends each line of the file with CRLF itself.
sed -i 's/\r$//' "$work/message.eml"
port=22381
cat > "$work/chatmail.ini" <<INI
[params]
mail_domain = relay.test
mailboxes_dir = $work/mail
filtermail_smtp_port_incoming = $port
filtermail_http_port_incoming = $((port + 1))
postfix_reinject_port_incoming = $sink_port
metrics_listen_filtermail_incoming = 127.0.0.1:$((port + 5000))
INI
send() { # count sessions
    smtp-source -s "$2" -m "$1" -d -F "$work/message.eml" -f $sender -t $recipient "127.0.0.1:$port"
}
# The counts since the last dump, written by callgrind's own control
# tool into $out.PID.N (the Nth dump).
dump() { callgrind_control --dump="$1" "$2" >/dev/null 2>&1; }

for build in $builds; do
    out="$work/callgrind.out"
    FILTERMAIL_SKIP_DKIM=1 RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
        "$build/filtermail-incoming" "$work/chatmail.ini" 2>/dev/null &
    pid=$!
    for _ in $(seq 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then break; fi
        sleep 0.2
    done
    send 200 10
    dump warmup $pid
    send "$messages" 20
    dump measured $pid
    kill -INT $pid
    wait $pid 2>/dev/null || true
    measured="$out.$pid.2"
    total=$(callgrind_annotate "$measured" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    echo "$build: $((total / messages)) instructions per message ($messages messages)"
    if [ -n "${KEEP:-}" ]; then
        kept=$(( ${kept:-0} + 1 ))
        cp "$measured" "$KEEP/$kept.callgrind"
    fi
    rm -f "$out".*
done
