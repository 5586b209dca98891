#!/usr/bin/env bash
# What the reinjection costs the outgoing filter when the server it
# reinjects into is a real Postfix smtpd, as on a relay: one smtpd that
# offers CHUNKING (Postfix's default; one-recipient messages then go as one
# pipelined BDAT) and one that does not (smtpd_discard_ehlo_keywords =
# chunking; MAIL, RCPT and DATA pipelined, then the dot-stuffed text). The
# same filter binary runs twice, one instance towards each. Both smtpds
# pass what they receive to smtp-sink as a before-queue proxy filter, so
# nothing is queued and the sink side stays cheap. Measured as in
# filter-cpu.sh: smtp-source sends MESSAGES copies of a 2.3 KB PGP/MIME
# message through the filter, ROUNDS times each way, interleaved, and the
# filter's utime + stime per message is printed. Needs root (Postfix and
# smtp-sink). Run from the repository root; FILTER_BIN=DIR measures
# another build's filter.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
messages=${MESSAGES:-20000}
sessions=${SESSIONS:-100}
rounds=${ROUNDS:-3}

if [ -z "${FILTER_BIN:-}" ]; then
    cargo build --release --locked -q -p relay-tests -p filtermail-outgoing \
        --bin smtp-load --bin filtermail-outgoing
fi
bin=target/release
filter_bin=${FILTER_BIN:-$bin}
# The queue directory on tmpfs: the proxy filter queues nothing, but
# Postfix's daemons keep their sockets there.
work=$(mktemp -d -p /dev/shm)
chmod 755 "$work"
ulimit -n "$(ulimit -Hn)"

sink_port=20025
chunking_port=20026
data_port=20027
smtp-sink -u postfix -m 4000 127.0.0.1:$sink_port 4096 2>/dev/null &

mkdir -p "$work/postfix" "$work/queue" "$work/data"
chown postfix "$work/data"
cat > "$work/postfix/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $work/queue
data_directory = $work/data
maillog_file = $work/postfix.log
maillog_file_prefixes = $work
myhostname = localhost
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
default_transport = discard
smtp_dns_support_level = disabled
smtpd_proxy_filter = 127.0.0.1:$sink_port
smtpd_client_connection_count_limit = 0
CF
cat > "$work/postfix/master.cf" <<CF
127.0.0.1:$chunking_port inet n - n - 300 smtpd
127.0.0.1:$data_port inet n - n - 300 smtpd
  -o smtpd_discard_ehlo_keywords=chunking
cleanup    unix  n - n -    0 cleanup
qmgr       unix  n - n 300  1 qmgr
rewrite    unix  - - n -    - trivial-rewrite
bounce     unix  - - n -    0 bounce
defer      unix  - - n -    0 bounce
trace      unix  - - n -    0 bounce
proxymap   unix  - - n -    - proxymap
discard    unix  - - n -    - discard
anvil      unix  - - n -    1 anvil
scache     unix  - - n -    1 scache
postlog    unix-dgram n - n - 1 postlogd
CF
postfix -c "$work/postfix" start 2>/dev/null
trap 'postfix -c "$work/postfix" stop 2>/dev/null; kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
# A signal ends the script through its EXIT trap, Postfix included.
trap 'exit 1' INT TERM

sender=sender@example.org
recipient=user@relay.test
"$bin/smtp-load" unused --size 2300 --from $sender --to $recipient \
    --write-message "$work/plain.eml" >/dev/null
# smtp-source ends each line of the file with CRLF itself.
sed -i 's/\r$//' "$work/plain.eml"

start_filter() { # name smtp_port reinject_port
    local name=$1 smtp=$2 reinject=$3
    mkdir -p "$work/$name"
    cat > "$work/$name/chatmail.ini" <<INI
[params]
mail_domain = example.org
mailboxes_dir = $work/mail
filtermail_smtp_port = $smtp
postfix_reinject_port = $reinject
max_smtp_connections = 2000
max_user_send_per_minute = 100000000
max_user_send_burst_size = 1000000
metrics_listen_filtermail_outgoing = 127.0.0.1:$((smtp + 5000))
INI
    env RUST_LOG=warn "$filter_bin/filtermail-outgoing" "$work/$name/chatmail.ini" &
}

ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
clk=$(getconf CLK_TCK)

run() { # label pid port
    local label=$1 pid=$2 port=$3 start end user0 sys0 user1 sys1
    read -r user0 sys0 < <(ticks "$pid")
    start=$(date +%s.%N)
    smtp-source -s "$sessions" -m "$messages" -d -F "$work/plain.eml" -f $sender \
        -t $recipient 127.0.0.1:"$port"
    end=$(date +%s.%N)
    read -r user1 sys1 < <(ticks "$pid")
    awk -v label="$label" -v n="$messages" -v t0="$start" -v t1="$end" \
        -v u0="$user0" -v u1="$user1" -v k0="$sys0" -v k1="$sys1" -v clk="$clk" 'BEGIN {
        us = 1e6 / clk / n
        printf "%-40s msgs/s=%6.0f  cpu/msg=%4.0f us (user %3.0f, sys %3.0f)\n",
            label, n / (t1 - t0), (u1 - u0 + k1 - k0) * us, (u1 - u0) * us, (k1 - k0) * us
    }'
}

start_filter chunking 20080 $chunking_port
chunking_pid=$!
start_filter data 20090 $data_port
data_pid=$!
sleep 1
# Warm-up: pooled connections and Postfix's smtpd processes.
smtp-source -s "$sessions" -m 2000 -d -F "$work/plain.eml" -f $sender -t $recipient 127.0.0.1:20080
smtp-source -s "$sessions" -m 2000 -d -F "$work/plain.eml" -f $sender -t $recipient 127.0.0.1:20090

# Which goes first alternates, so that neither gets the quieter moments.
for round in $(seq "$rounds"); do
    if [ $((round % 2)) = 1 ]; then
        run "outgoing, Postfix with CHUNKING ($round)" $chunking_pid 20080
        run "outgoing, Postfix without CHUNKING ($round)" $data_pid 20090
    else
        run "outgoing, Postfix without CHUNKING ($round)" $data_pid 20090
        run "outgoing, Postfix with CHUNKING ($round)" $chunking_pid 20080
    fi
done
if ! grep -q ' bdat=' "$work/postfix.log" 2>/dev/null; then
    echo "warning: Postfix logged no BDAT session yet (sessions still open)" >&2
fi
for name in chunking data; do
    pid_var=${name}_pid
    echo "$name peak RSS: $(grep -E '^VmHWM' "/proc/${!pid_var}/status" | awk '{print $2 " kB"}')"
done
