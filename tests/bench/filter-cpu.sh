#!/usr/bin/env bash
# CPU time per message of the filters, measured as operators pay it:
# Postfix's smtp-source sends MESSAGES copies of a 2.3 KB PGP/MIME message
# (-d: many messages per session) through the filter into Postfix's
# smtp-sink, and the filter's utime + stime (/proc/PID/stat) before and
# after give the CPU per message. The baseline in the same run is
# smtp-source straight into smtp-sink (its msgs/s, and smtp-sink's own CPU
# per message). filtermail-incoming runs without DKIM, and with DKIM
# verification of an Ed25519 and of an RSA-2048 signature (key cached
# after the first message, served by a DNS server on loopback). With one
# session, filtermail-incoming is also measured through its HTTP door:
# curl POSTs the same messages (with CRLF line ends, as
# filtermail-transport sends them) to /mxdeliv over one keep-alive
# connection. Needs root (smtp-sink drops to the postfix user) and curl.
# Run from the repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
messages=${MESSAGES:-20000}
# Message size in bytes; SIZE=20000000 MESSAGES=20 SESSIONS=1 shows what
# large attachments cost.
size=${SIZE:-2300}
sessions_list=${SESSIONS:-"100 1"}

if [ -z "${FILTER_BIN:-}" ]; then
    cargo build --release --locked -q -p relay-tests -p filtermail-outgoing -p filtermail-incoming \
        --bin smtp-load --bin filtermail-outgoing --bin filtermail-incoming
fi
bin=target/release
# The filters to measure (default: the ones just built); FILTER_BIN names
# another build's, for before/after figures.
filter_bin=${FILTER_BIN:-$bin}
work=$(mktemp -d)
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

sink_port=20025
# The filters keep reinjection connections open (up to 64 idle each): the
# sink must take more than its default 256 sessions at once.
ulimit -n "$(ulimit -Hn)"
smtp-sink -u postfix -m 4000 127.0.0.1:$sink_port 4096 2>/dev/null &
sink_pid=$!

sender=sender@example.org
recipient=user@relay.test
"$bin/smtp-load" unused --size "$size" --from $sender --to $recipient \
    --write-message "$work/plain.eml" >/dev/null
# Signed copies; each generator keeps serving its key until killed.
"$bin/smtp-load" unused --size "$size" --from $sender --to $recipient --dkim-key ed25519 \
    --dkim-dns 127.0.0.1:20053 --seconds 100000 --write-message "$work/ed25519.eml" >/dev/null &
"$bin/smtp-load" unused --size "$size" --from $sender --to $recipient --dkim-key rsa \
    --dkim-dns 127.0.0.1:20054 --seconds 100000 --write-message "$work/rsa.eml" >/dev/null &
sleep 2
# smtp-source ends each line of the file with CRLF itself.
sed -i 's/\r$//' "$work"/*.eml
# Over HTTP the message goes as a relay's filtermail-transport sends it,
# with the CRLF line ends it came with.
for name in plain ed25519; do sed 's/$/\r/' "$work/$name.eml" > "$work/$name-crlf.eml"; done

start_filter() { # program name domain smtp_port http_port dns_port [env...]
    local program=$1 name=$2 domain=$3 smtp=$4 http=$5 dns=$6
    shift 6
    mkdir -p "$work/$name"
    cat > "$work/$name/chatmail.ini" <<INI
[params]
mail_domain = $domain
mailboxes_dir = $work/mail
filtermail_smtp_port = $smtp
postfix_reinject_port = $sink_port
filtermail_smtp_port_incoming = $smtp
filtermail_http_port_incoming = $http
postfix_reinject_port_incoming = $sink_port
max_smtp_connections = 2000
max_user_send_per_minute = 100000000
max_user_send_burst_size = 1000000
dns_resolver = 127.0.0.1:$dns
dns_dnssec_validation = no
# Several filters of one kind run at once: a metrics port each.
metrics_listen_filtermail_outgoing = 127.0.0.1:$((smtp + 5000))
metrics_listen_filtermail_incoming = 127.0.0.1:$((smtp + 5000))
INI
    # Their log goes into a pipe, as into the journal; FILTER_LOG=info
    # measures the per-message lines a relay logs by default.
    env RUST_LOG="${FILTER_LOG:-warn}" "$@" "$filter_bin/$program" "$work/$name/chatmail.ini" \
        2> >(cat > /dev/null) &
    sleep 0.5
}

# utime and stime of PID, in clock ticks.
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
clk=$(getconf CLK_TCK)

# report LABEL SESSIONS START END USER0 SYS0 USER1 SYS1: msgs/s and CPU
# per message from the times and the filter's ticks before and after.
report() {
    awk -v label="$1" -v s="$2" -v n="$messages" -v t0="$3" -v t1="$4" \
        -v u0="$5" -v k0="$6" -v u1="$7" -v k1="$8" -v clk="$clk" 'BEGIN {
        secs = t1 - t0
        us = 1e6 / clk / n
        printf "%-34s sessions=%-4d msgs/s=%6.0f  cpu/msg=%4.0f us (user %3.0f, sys %3.0f)  ms/msg/session=%.3f\n",
            label, s, n / secs, (u1 - u0 + k1 - k0) * us, (u1 - u0) * us, (k1 - k0) * us,
            secs * 1000 * s / n
    }'
}

# run LABEL PID PORT FILE SESSIONS: smtp-source through PORT; prints
# msgs/s and the CPU per message of PID.
run() {
    local label=$1 pid=$2 port=$3 file=$4 sessions=$5
    local start end user0 sys0 user1 sys1
    read -r user0 sys0 < <(ticks "$pid")
    start=$(date +%s.%N)
    smtp-source -s "$sessions" -m "$messages" -d -F "$file" -f $sender -t $recipient \
        127.0.0.1:"$port"
    end=$(date +%s.%N)
    read -r user1 sys1 < <(ticks "$pid")
    report "$label" "$sessions" "$start" "$end" "$user0" "$sys0" "$user1" "$sys1"
}

# run_http LABEL PID PORT FILE: MESSAGES POSTs of FILE to /mxdeliv on
# PORT, one after another on one connection; prints msgs/s and the CPU
# per message of PID, and stops if any is not answered 200.
run_http() {
    local label=$1 pid=$2 port=$3 file=$4
    local start end user0 sys0 user1 sys1 codes
    read -r user0 sys0 < <(ticks "$pid")
    start=$(date +%s.%N)
    codes=$(curl -s -o /dev/null -w '%{http_code}\n' -H "X-Mail-From: $sender" \
        -H "X-Mail-To: $recipient" --data-binary @"$file" \
        "http://127.0.0.1:$port/mxdeliv?[1-$messages]" | sort | uniq -c)
    end=$(date +%s.%N)
    read -r user1 sys1 < <(ticks "$pid")
    if [ "$(echo "$codes" | awk '{print $2}')" != 200 ]; then
        echo "$label: answers $codes" >&2
        exit 1
    fi
    report "$label" 1 "$start" "$end" "$user0" "$sys0" "$user1" "$sys1"
}

# Senders are local accounts of the outgoing filter's domain; the
# incoming filters' domain is the recipient's.
start_filter filtermail-outgoing outgoing example.org 20080 20082 20053
outgoing_pid=$!
start_filter filtermail-incoming nodkim relay.test 21081 21082 20053 FILTERMAIL_SKIP_DKIM=1
nodkim_pid=$!
start_filter filtermail-incoming ed25519 relay.test 22081 22082 20053
ed25519_pid=$!
start_filter filtermail-incoming rsa relay.test 23081 23082 20054
rsa_pid=$!
sleep 1

for sessions in $sessions_list; do
    run "baseline: smtp-sink (its CPU)" $sink_pid $sink_port "$work/plain.eml" "$sessions"
    run "filtermail-outgoing" $outgoing_pid 20080 "$work/plain.eml" "$sessions"
    run "filtermail-incoming, DKIM off" $nodkim_pid 21081 "$work/plain.eml" "$sessions"
    run "filtermail-incoming, Ed25519" $ed25519_pid 22081 "$work/ed25519.eml" "$sessions"
    run "filtermail-incoming, RSA-2048" $rsa_pid 23081 "$work/rsa.eml" "$sessions"
    if [ "$sessions" = 1 ]; then
        run_http "incoming /mxdeliv, DKIM off" $nodkim_pid 21082 "$work/plain-crlf.eml"
        run_http "incoming /mxdeliv, Ed25519" $ed25519_pid 22082 "$work/ed25519-crlf.eml"
    fi
done
for name in outgoing nodkim ed25519 rsa; do
    pid_var=${name}_pid
    echo "$name peak RSS: $(grep -E '^VmHWM' "/proc/${!pid_var}/status" | awk '{print $2 " kB"}')"
done
