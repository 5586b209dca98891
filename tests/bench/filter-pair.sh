#!/usr/bin/env bash
# Two builds of filtermail-incoming side by side, for before/after
# figures on a shared host: both filters run at once, each loaded by its
# own smtp-source (SESSIONS sessions, MESSAGES copies of a 2.3 KB
# PGP/MIME message, -d) into one smtp-sink, so both see the same load
# from the rest of the machine. Prints each filter's CPU per message
# (utime + stime from /proc) per round and their peak RSS. KIND is
# ed25519 or rsa (DKIM-signed, key served by a DNS server on loopback and
# cached after the first message) or nodkim. BEFORE and AFTER name the
# directories of the two builds. Needs root (smtp-sink drops to the
# postfix user). Run from the repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
kind=${KIND:-ed25519}
before=${BEFORE:?BEFORE=DIR of the first build}
after=${AFTER:?AFTER=DIR of the second build}
messages=${MESSAGES:-20000}
sessions=${SESSIONS:-100}
rounds=${ROUNDS:-3}

cargo build --release --locked -q -p relay-tests --bin smtp-load
work=$(mktemp -d)
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
ulimit -n "$(ulimit -Hn)"

sink_port=20025
smtp-sink -u postfix -m 4000 127.0.0.1:$sink_port 4096 2>/dev/null &
sender=sender@example.org
recipient=user@relay.test
dns_port=20053
signing=()
case $kind in
    ed25519 | rsa) signing=(--dkim-key "$kind" --dkim-dns 127.0.0.1:$dns_port --seconds 100000) ;;
    nodkim) ;;
    *) echo "KIND is ed25519, rsa or nodkim" >&2; exit 2 ;;
esac
# A signing generator keeps serving its key until killed.
target/release/smtp-load unused --size 2300 --from $sender --to $recipient "${signing[@]}" \
    --write-message "$work/message.eml" >/dev/null &
sleep 2
# smtp-source ends each line of the file with CRLF itself.
sed -i 's/\r$//' "$work/message.eml"

start_filter() { # dir name port
    mkdir -p "$work/$2"
    cat > "$work/$2/chatmail.ini" <<INI
[params]
mail_domain = relay.test
mailboxes_dir = $work/mail
filtermail_smtp_port_incoming = $3
filtermail_http_port_incoming = $(($3 + 1))
postfix_reinject_port_incoming = $sink_port
max_smtp_connections = 2000
dns_resolver = 127.0.0.1:$dns_port
dns_dnssec_validation = no
metrics_listen_filtermail_incoming = 127.0.0.1:$(($3 + 5000))
INI
    if [ "$kind" = nodkim ]; then
        FILTERMAIL_SKIP_DKIM=1 RUST_LOG=warn "$1/filtermail-incoming" "$work/$2/chatmail.ini" 2>/dev/null &
    else
        RUST_LOG=warn "$1/filtermail-incoming" "$work/$2/chatmail.ini" 2>/dev/null &
    fi
}
start_filter "$before" before 22181
before_pid=$!
start_filter "$after" after 22281
after_pid=$!
sleep 1

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks=$(getconf CLK_TCK)
per_message() { echo $((($2 - $1) * 1000000 / ticks / messages)); }
send() { # port count sessions
    smtp-source -s "$3" -m "$2" -d -F "$work/message.eml" -f $sender -t $recipient "127.0.0.1:$1"
}
# Warm-up: connections to the sink, the key in the cache.
send 22181 200 10
send 22281 200 10
for round in $(seq "$rounds"); do
    b0=$(cpu_ticks $before_pid)
    a0=$(cpu_ticks $after_pid)
    send 22181 "$messages" "$sessions" &
    first=$!
    send 22281 "$messages" "$sessions" &
    second=$!
    wait $first $second
    echo "round $round, $kind, $sessions sessions: before $(per_message "$b0" "$(cpu_ticks $before_pid)") us," \
        "after $(per_message "$a0" "$(cpu_ticks $after_pid)") us per message"
done
peak() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
echo "peak RSS: before $(peak $before_pid) kB, after $(peak $after_pid) kB"
