#!/usr/bin/env bash
# What Postfix's smtpd_proxy_options = speed_adjust costs the relay: two
# private Postfix instances, each one smtpd with a before-queue proxy
# filter (smtp-sink stands in for our filter, so that only Postfix's own
# work differs), one with speed_adjust (the whole message is received
# into a file before the filter is connected) and one without (streamed
# to the filter as it arrives). smtp-source sends MESSAGES copies of a
# PGP/MIME message of each size in SIZES to each, interleaved, ROUNDS
# times; printed is each instance's CPU per message: utime + stime of
# its master and live processes, plus what its master collected from
# processes that exited (cutime + cstime). Needs root (Postfix and
# smtp-sink). Run from the repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
messages=${MESSAGES:-10000}
sessions=${SESSIONS:-100}
rounds=${ROUNDS:-3}
sizes=${SIZES:-2300 100000}

cargo build --release --locked -q -p relay-tests --bin smtp-load
bin=target/release
# Postfix's queue and spool files on the machine's disk, as on a relay.
work=$(mktemp -d -p /var/tmp)
chmod 755 "$work"
ulimit -n "$(ulimit -Hn)"

sink_port=21025
smtp-sink -u postfix -m 4000 127.0.0.1:$sink_port 4096 2>/dev/null &

instance() { # name port options
    local dir=$work/$1
    mkdir -p "$dir/config" "$dir/queue" "$dir/data"
    chown postfix "$dir/data"
    cat > "$dir/config/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
maillog_file = $dir/postfix.log
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
smtpd_proxy_options = $3
smtpd_client_connection_count_limit = 0
message_size_limit = 0
CF
    cat > "$dir/config/master.cf" <<CF
127.0.0.1:$2 inet n - n - 300 smtpd
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
    postfix -c "$dir/config" start 2>/dev/null
}
instance streamed 21026 ""
instance adjusted 21027 speed_adjust
trap 'for i in streamed adjusted; do postfix -c "$work/$i/config" stop 2>/dev/null; done;
      kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
sleep 1

# Ticks of an instance: its master's own and collected, and every live
# process under it.
ticks() { # name
    local master
    master=$(tr -d " " < "$work/$1/queue/pid/master.pid")
    awk '{print $14 + $15 + $16 + $17}' "/proc/$master/stat" > "$work/ticks"
    for pid in $(pgrep -P "$master"); do
        awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null >> "$work/ticks" || true
    done
    awk '{sum += $1} END {print sum}' "$work/ticks"
}
clk=$(getconf CLK_TCK)

sender=sender@example.org
recipient=user@relay.test
run() { # name port message
    local before after start end
    before=$(ticks "$1")
    start=$(date +%s.%N)
    smtp-source -s "$sessions" -m "$messages" -d -F "$3" -f $sender -t $recipient 127.0.0.1:"$2"
    end=$(date +%s.%N)
    after=$(ticks "$1")
    awk -v name="$1" -v n="$messages" -v t0="$start" -v t1="$end" -v a="$before" \
        -v b="$after" -v clk="$clk" -v size="$(stat -c %s "$3")" 'BEGIN {
        printf "%-9s %7d bytes  msgs/s=%6.0f  Postfix cpu/msg=%5.0f us\n",
            name, size, n / (t1 - t0), (b - a) * 1e6 / clk / n
    }'
}

for size in $sizes; do
    "$bin/smtp-load" unused --size "$size" --from $sender --to $recipient \
        --write-message "$work/message-$size.eml" >/dev/null
    # smtp-source ends each line of the file with CRLF itself.
    sed -i 's/\r$//' "$work/message-$size.eml"
    # Warm-up: smtpd processes and connections to the sink.
    for port in 21026 21027; do
        smtp-source -s "$sessions" -m 1000 -d -F "$work/message-$size.eml" -f $sender \
            -t $recipient 127.0.0.1:$port
    done
    for round in $(seq "$rounds"); do
        if [ $((round % 2)) = 1 ]; then
            run streamed 21026 "$work/message-$size.eml"
            run adjusted 21027 "$work/message-$size.eml"
        else
            run adjusted 21027 "$work/message-$size.eml"
            run streamed 21026 "$work/message-$size.eml"
        fi
    done
done
