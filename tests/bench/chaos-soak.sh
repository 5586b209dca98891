#!/usr/bin/env bash
# Chaos soak: two local relays (127.0.0.1 and 127.0.0.2) under Delta
# Chat-shaped traffic while their daemons are killed with SIGKILL at
# random; prints messages sent, delivered, duplicated and lost, and each
# daemon's memory over the run. Not part of the test command. Needs root
# (Postfix, Dovecot). Run from the repository root:
#
#   sudo bash tests/bench/chaos-soak.sh --minutes 10
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash tests/setup-machine
CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" cargo build --release --locked -q --workspace --bins
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec target/release/chaos-soak --bin-dir target/release "$@"
