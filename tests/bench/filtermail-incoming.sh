#!/usr/bin/env bash
# Benchmarks filtermail-incoming: encrypted 4 KiB messages from N
# concurrent SMTP connections through the filter into Postfix's smtp-sink,
# with DKIM verification (Ed25519 and RSA-2048 keys served by a DNS server
# on loopback; after the first message the key comes from the filter's
# cache) and with DKIM off (FILTERMAIL_SKIP_DKIM=1), against the same load
# sent straight to smtp-sink (the baseline). Needs root (smtp-sink drops
# to the postfix user). Run from the repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
seconds=${SECONDS_PER_RUN:-5}

cargo build --release --locked -q -p relay-tests -p filtermail-incoming \
    --bin smtp-load --bin filtermail-incoming
bin=target/release
work=$(mktemp -d)
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

sink_port=20026
dns=127.0.0.1:20053
smtp-sink -u postfix 127.0.0.1:$sink_port 4096 2>/dev/null &

# One filter with DKIM checks, one without, on their own ports.
start_filter() { # name smtp_port http_port [env...]
    local name=$1 smtp=$2 http=$3
    shift 3
    mkdir -p "$work/$name"
    cat > "$work/$name/chatmail.ini" <<INI
[params]
mail_domain = relay.test
mailboxes_dir = $work/mail
filtermail_smtp_port_incoming = $smtp
filtermail_http_port_incoming = $http
postfix_reinject_port_incoming = $sink_port
max_smtp_connections = 2000
dns_resolver = $dns
# The bench zone is unsigned and has no signed parent.
dns_dnssec_validation = no
# Two filters run at once: a metrics port each.
metrics_listen_filtermail_incoming = 127.0.0.1:$((smtp + 5000))
INI
    env RUST_LOG=warn "$@" "$bin/filtermail-incoming" "$work/$name/chatmail.ini" &
}
start_filter dkim 20081 20082
dkim_pid=$!
start_filter nodkim 21081 21082 FILTERMAIL_SKIP_DKIM=1
sleep 1

rss() { grep -E '^VmRSS' "/proc/$1/status" | awk '{print $2 " kB"}'; }
load() { "$bin/smtp-load" "$@" --size 4096 --seconds "$seconds" --from sender@example.org --to user@relay.test; }

for connections in 1 100; do
    echo "baseline        $(load 127.0.0.1:$sink_port --connections $connections)"
    echo "no DKIM         $(load 127.0.0.1:21081 --connections $connections)"
    echo "DKIM ed25519    $(load 127.0.0.1:20081 --connections $connections --dkim-dns $dns --dkim-key ed25519) rss=$(rss $dkim_pid)"
    echo "DKIM rsa-2048   $(load 127.0.0.1:20081 --connections $connections --dkim-dns $dns --dkim-key rsa) rss=$(rss $dkim_pid)"
done
echo "DKIM filter peak $(grep -E '^VmHWM' "/proc/$dkim_pid/status")"
