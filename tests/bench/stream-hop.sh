#!/usr/bin/env bash
# What the port-443 stream hop costs an /mxdeliv delivery: nginx's CPU
# per delivery and the time per delivery, through a stream server that
# reads the ClientHello (ssl_preread) and passes the connection on with
# a PROXY header, as chatmail-configure sets up port 443, against the
# same HTTPS site reached directly. One filtermail-incoming (DKIM off)
# behind the site, reinjecting into smtp-sink; curl POSTs DELIVERIES
# messages of 1.9 KB one after another over one HTTP/2 connection, the
# two paths in turn for ROUNDS rounds. Needs root (smtp-sink drops to
# the postfix user), nginx with libnginx-mod-stream, a release build of
# filtermail-incoming. Run from the repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
deliveries=${DELIVERIES:-10000}
rounds=${ROUNDS:-4}

cargo build --release --locked -q -p relay-tests --bin smtp-load
cargo build --release --locked -q -p filtermail-incoming --bin filtermail-incoming
work=$(mktemp -d)
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")"; rm -rf "$work"' EXIT

sink_port=20325
filter_port=22581
stream_port=22643
site_port=22644
direct_port=22645
smtp-sink -u postfix -m 1000 127.0.0.1:$sink_port 1024 2>/dev/null &
sender=sender@example.org
recipient=user@relay.test
target/release/smtp-load unused --size 2300 --from $sender --to $recipient \
    --write-message "$work/message.eml" >/dev/null
cat > "$work/chatmail.ini" <<INI
[params]
mail_domain = relay.test
mailboxes_dir = $work/mail
filtermail_smtp_port_incoming = $((filter_port + 1))
filtermail_http_port_incoming = $filter_port
postfix_reinject_port_incoming = $sink_port
metrics_listen_filtermail_incoming = 127.0.0.1:$((filter_port + 5000))
INI
FILTERMAIL_SKIP_DKIM=1 RUST_LOG=warn target/release/filtermail-incoming "$work/chatmail.ini" 2>/dev/null &

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=relay.test -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat > "$work/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events {}
stream {
    server {
        listen 127.0.0.1:$stream_port;
        ssl_preread on;
        proxy_pass 127.0.0.1:$site_port;
        proxy_protocol on;
    }
}
http {
    access_log off;
    client_body_temp_path $work/body;
    proxy_temp_path $work/proxy;
    upstream filter {
        server 127.0.0.1:$filter_port;
        keepalive 16;
    }
    server {
        listen 127.0.0.1:$site_port ssl http2 proxy_protocol;
        listen 127.0.0.1:$direct_port ssl http2;
        ssl_certificate $work/cert.pem;
        ssl_certificate_key $work/key.pem;
        ssl_protocols TLSv1.3;
        location = /mxdeliv {
            proxy_pass http://filter;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            client_max_body_size 32m;
            client_body_buffer_size 1m;
        }
    }
}
CONF
nginx -c "$work/nginx.conf" -p "$work"
sleep 1
worker=$(pgrep -P "$(cat "$work/nginx.pid")")

# One curl config of DELIVERIES transfers (`next` resets the options);
# curl keeps its connection for the next.
for n in $(seq "$deliveries"); do
    [ "$n" = 1 ] || echo next
    cat <<CURL
url = "https://relay.test:PORT/mxdeliv"
http2
insecure
resolve = "relay.test:PORT:127.0.0.1"
header = "X-Mail-From: $sender"
header = "X-Mail-To: $recipient"
data-binary = "@$work/message.eml"
output = "/dev/null"
write-out = "%{http_code} %{num_connects}\\n"
CURL
done > "$work/curl.template"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks=$(getconf CLK_TCK)
deliver() { # port
    sed "s/PORT/$1/g" "$work/curl.template" > "$work/curl.conf"
    local n0 t0 t1
    n0=$(cpu_ticks "$worker")
    t0=$(date +%s%N)
    curl -sS -K "$work/curl.conf" > "$work/answers"
    t1=$(date +%s%N)
    # Every delivery taken; nginx closes a connection after 1,000
    # requests (keepalive_requests), so curl opens one per 1,000.
    if grep -qv '^200 ' "$work/answers"; then
        echo "deliveries refused:" >&2
        sort "$work/answers" | uniq -c >&2
        exit 1
    fi
    local connections
    connections=$(awk '{n += $2} END {print n}' "$work/answers")
    echo "$(( ($(cpu_ticks "$worker") - n0) * 1000000 / ticks / deliveries )) us nginx CPU," \
        "$(( (t1 - t0) / 1000 / deliveries )) us a delivery, $connections connections"
}
# Warm-up: kept-alive connections to the filter.
deliver $direct_port >/dev/null
# The two paths take turns going first.
for round in $(seq "$rounds"); do
    if [ $((round % 2)) = 1 ]; then
        direct=$(deliver $direct_port)
        hop=$(deliver $stream_port)
    else
        hop=$(deliver $stream_port)
        direct=$(deliver $direct_port)
    fi
    echo "round $round: direct $direct; through the stream hop $hop"
done
