#!/usr/bin/env bash
# Benchmarks filtermail-outgoing: encrypted messages (4 KiB and 1 MiB)
# from N concurrent SMTP connections through the filter into Postfix's
# smtp-sink, against the same load sent straight to smtp-sink (the
# baseline), plus the filter's RSS with 1000 idle connections. Needs root
# (smtp-sink drops to the postfix user). Run from the repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
seconds=${SECONDS_PER_RUN:-5}

cargo build --release --locked -q -p relay-tests -p filtermail-outgoing \
    --bin smtp-load --bin filtermail-outgoing
bin=target/release
work=$(mktemp -d)
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

sink_port=20025
filter_port=20080
smtp-sink -u postfix 127.0.0.1:$sink_port 4096 2>/dev/null &
cat > "$work/chatmail.ini" <<INI
[params]
mail_domain = example.org
mailboxes_dir = $work/mail
filtermail_smtp_port = $filter_port
postfix_reinject_port = $sink_port
# Rate limiting stays on (its cost is measured) but never refuses here.
max_user_send_per_minute = 100000000
max_user_send_burst_size = 1000000
max_smtp_connections = 2000
INI
RUST_LOG=warn "$bin/filtermail-outgoing" "$work/chatmail.ini" &
filter_pid=$!
sleep 1

rss() { grep -E '^VmRSS' "/proc/$filter_pid/status" | awk '{print $2 " kB"}'; }

for size in 4096 1048576; do
    for connections in 1 100 1000; do
        if [ "$size" = 1048576 ] && [ "$connections" = 1000 ]; then continue; fi
        echo "baseline  $(
            "$bin/smtp-load" 127.0.0.1:$sink_port --connections $connections --size $size --seconds "$seconds")"
        echo "filter    $(
            "$bin/smtp-load" 127.0.0.1:$filter_port --connections $connections --size $size --seconds "$seconds") rss=$(rss)"
    done
done

echo "filter peak $(grep -E '^VmHWM' "/proc/$filter_pid/status")"

# Idle connections on a fresh filter process: freed message buffers of
# the runs above would otherwise still count in its RSS.
kill "$filter_pid"
wait "$filter_pid" 2>/dev/null || true
RUST_LOG=warn "$bin/filtermail-outgoing" "$work/chatmail.ini" &
filter_pid=$!
sleep 1
echo "fresh filter: rss=$(rss)"
"$bin/smtp-load" 127.0.0.1:$filter_port --idle --connections 1000 --seconds 5 &
sleep 4
echo "fresh filter with 1000 idle connections: rss=$(rss)"
