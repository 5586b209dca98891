#!/usr/bin/env bash
# chatmail-turn against Debian's coturn, side by side in one run: the same
# load (tests/src/bin/turn-load.rs: CLIENTS allocations on loopback, each
# sending RATE datagrams of SIZE bytes a second through its relay to one
# echo peer, which sends each back) against each server, ROUNDS times,
# alternating, and each server's CPU (utime + stime from /proc) per 1,000
# datagrams relayed, beside the datagrams relayed per second. Both check
# credentials the same way (coturn's use-auth-secret). Installs coturn
# when missing (its own service is not started); its relay ports are
# kept below the kernel's ephemeral range, where the load generator's own
# sockets are (chatmail-turn lets the kernel pick). Needs root. Run from the
# repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
clients=${CLIENTS:-100}
rate=${RATE:-50}
size=${SIZE:-160}
seconds=${SECONDS_PER_ROUND:-10}
rounds=${ROUNDS:-3}

if ! command -v turnserver >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q coturn >/dev/null
fi
cargo build --release --locked -q -p chatmail-turn -p relay-tests --bin chatmail-turn --bin turn-load
bin=target/release
work=$(mktemp -d)
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
ulimit -n "$(ulimit -Hn)"
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
realm=bench.test
ours=24478
coturn_port=25478

mkdir -p "$work/turn"
printf '%s\n' "$secret" > "$work/turn/secret"
chmod 600 "$work/turn/secret"
cat > "$work/chatmail.ini" <<INI
[params]
mail_domain = $realm
turn_listen = 127.0.0.1
turn_port = $ours
turn_allow_private = true
turn_secret_path = $work/turn/secret
turn_socket_path = $work/turn.socket
turn_max_allocations_per_user = 0
metrics_listen_chatmail_turn =
INI
RUST_LOG=warn "$bin/chatmail-turn" "$work/chatmail.ini" &
ours_pid=$!
turnserver -n --listening-ip=127.0.0.1 --listening-port=$coturn_port --relay-ip=127.0.0.1 \
    --use-auth-secret --static-auth-secret="$secret" --realm=$realm \
    --allow-loopback-peers --no-cli --no-tls --no-dtls --no-tcp-relay \
    --min-port=20000 --max-port=29999 \
    --log-file=/dev/null --no-stdout-log --pidfile="$work/coturn.pid" &
coturn_pid=$!
sleep 1

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk=$(getconf CLK_TCK)
run() { # name pid port
    local before after output relayed
    before=$(ticks "$2")
    output=$("$bin/turn-load" "127.0.0.1:$3" --secret "$secret" --realm $realm \
        --clients "$clients" --rate "$rate" --packet-size "$size" --seconds "$seconds")
    after=$(ticks "$2")
    relayed=$(echo "$output" | awk '{for (i = 1; i <= NF; i++) { split($i, kv, "=");
        if (kv[1] == "at_peer" || kv[1] == "returned") sum += kv[2] } } END {print sum}')
    awk -v name="$1" -v t="$((after - before))" -v n="$relayed" -v clk="$clk" -v s="$seconds" 'BEGIN {
        printf "%-13s relayed/s=%7.0f  cpu per 1000 relayed=%6.0f us\n",
            name, n / s, (n > 0 ? t * 1e6 / clk / (n / 1000) : 0)
    }'
}

for round in $(seq "$rounds"); do
    if [ $((round % 2)) = 1 ]; then
        run chatmail-turn $ours_pid $ours
        run coturn $coturn_pid $coturn_port
    else
        run coturn $coturn_pid $coturn_port
        run chatmail-turn $ours_pid $ours
    fi
done
echo "peak RSS: chatmail-turn $(grep VmHWM /proc/$ours_pid/status | awk '{print $2 " kB"}'), coturn $(grep VmHWM /proc/$coturn_pid/status | awk '{print $2 " kB"}')"
