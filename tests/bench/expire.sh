#!/usr/bin/env bash
# Benchmarks a chatmail-expire dry run over a synthetic relay (10,000
# mailboxes, 1,000,000 message files by default) against the raw cost of
# traversing the same tree with find, both with a warm cache (each is run
# once before being timed). Run from the repository root; needs about
# 1.1 million free inodes. Reuses the tree in $BENCH_DIR when present.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
mailboxes=${MAILBOXES:-10000}
messages=${MESSAGES:-1000000}
dir=${BENCH_DIR:-/var/tmp/chatmail-expire-bench}

cargo build --release --locked -q -p relay-tests -p chatmail-expire \
    --bin mailbox-gen --bin chatmail-expire
bin=target/release
if [ ! -f "$dir/done-$mailboxes-$messages" ]; then
    rm -rf "$dir"
    start=$(date +%s.%N)
    "$bin/mailbox-gen" "$dir/mail" --mailboxes "$mailboxes" --messages "$messages"
    echo "generated in $(echo "$(date +%s.%N) - $start" | bc) s"
    touch "$dir/done-$mailboxes-$messages"
fi
cat > "$dir/chatmail.ini" <<INI
[params]
mail_domain = example.org
mailboxes_dir = $dir/mail
INI

seconds() { local start end; start=$(date +%s.%N); "$@" >/dev/null; end=$(date +%s.%N); echo "$end - $start" | bc; }
for run in 1 2 3; do
    find "$dir/mail" -printf '%T@ %s\n' >/dev/null
    find_s=$(seconds find "$dir/mail" -printf '%T@ %s\n')
    "$bin/chatmail-expire" "$dir/chatmail.ini" >/dev/null
    expire_s=$(seconds "$bin/chatmail-expire" "$dir/chatmail.ini")
    echo "run $run: find ${find_s}s, chatmail-expire dry run ${expire_s}s, ratio $(echo "scale=2; $expire_s / $find_s" | bc)"
done
"$bin/chatmail-expire" "$dir/chatmail.ini"
/usr/bin/time -f "chatmail-expire peak RSS %M KiB" "$bin/chatmail-expire" "$dir/chatmail.ini" >/dev/null
