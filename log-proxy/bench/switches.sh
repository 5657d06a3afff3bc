#!/usr/bin/env bash
# Two log-proxy builds on the same full-speed load into a sink, alternating per round: CPU per
# line and context switches per 1,000 lines, summed over the proxy's threads (/proc/PID/task).
# At full speed three busy processes share the cores, so CPU per line follows the switch rate;
# compare builds at equal switch rates (docs/BENCHMARKS.md, "Full-speed CPU per line").
#
#   OLD=/tmp/lp56-target/release/log-proxy bash log-proxy/bench/switches.sh      # as root
#   ROUNDS=12 COUNT=1000000 OLD=… NEW=… OLD_ARGS=… NEW_ARGS="--allow-uid any" bash …
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p log-proxy --examples --bins
T=${CARGO_TARGET_DIR:-target}/release
LOADGEN=$T/examples/loadgen
OLD=${OLD:?set OLD=/path/to/another/log-proxy build}
NEW=${NEW:-$T/log-proxy}
COUNT=${COUNT:-1000000}
ROUNDS=${ROUNDS:-12}
W=$(mktemp -d /tmp/lp-switches.XXXXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$W"' EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
"$LOADGEN" sink --socket "$W/sink.sock" >"$W/sink.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$W/sink.sock" ] && break; sleep 0.05; done
start() { # name binary args
  local port; port=$(free_port)
  # shellcheck disable=SC2086
  "$2" --syslog-address "unixgram://$W/$1.sock" --journal-socket "$W/sink.sock" \
    --metrics-address "127.0.0.1:$port" --docker-host unix:///nonexistent \
    --burst 100000000 --interval 5s $3 >"$W/$1.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$1=$! PORT_$1=$port"
  for _ in $(seq 200); do [ -S "$W/$1.sock" ] && break; sleep 0.05; done
}
start old "$OLD" "${OLD_ARGS:-}"
start new "$NEW" "${NEW_ARGS:-}"
threads() { # pid -> "cpu_ticks voluntary nonvoluntary", summed over its threads
  local c=0 v=0 n=0 t a b d
  for t in /proc/"$1"/task/*; do
    a=$(awk '{print $14+$15}' "$t/stat")
    read -r b d < <(awk '/^voluntary_ctxt/{v=$2} /^nonvoluntary/{n=$2} END{print v, n}' "$t/status")
    c=$((c + a)); v=$((v + b)); n=$((n + d))
  done
  echo "$c $v $n"
}
written() { curl -s "http://127.0.0.1:$1/metrics" | awk '$1=="log_proxy_written_entries_total"{print $2}'; }
hz=$(getconf CLK_TCK)
echo "build cpu_us_per_line switches_per_kline"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 0 ]; then order="old new"; else order="new old"; fi
  for v in $order; do
    eval "p=\$PID_$v port=\$PORT_$v"
    w0=$(written "$port"); read -r c0 v0 n0 < <(threads "$p")
    "$LOADGEN" send --socket "$W/$v.sock" --containers 100 --count "$COUNT" >/dev/null
    while [ "$(written "$port")" -lt $((w0 + COUNT)) ]; do sleep 0.05; done
    read -r c1 v1 n1 < <(threads "$p")
    awk -v b="$v" -v c=$((c1 - c0)) -v s=$((v1 - v0 + n1 - n0)) -v n="$COUNT" -v hz="$hz" \
      'BEGIN { printf "%s %.2f %.1f\n", b, c / hz * 1e6 / n, s * 1000 / n }'
  done
done
