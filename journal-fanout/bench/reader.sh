#!/usr/bin/env bash
# Interleaved comparison of journal-fanout configurations on one journal: CPU of the whole
# process (user+sys), CPU of each thread (the `journal` reader thread separately, from
# /proc/PID/task/*/schedstat) and peak RSS, shipping N entries from a private journald
# namespace to local receivers answering 200, until /metrics shows every destination
# delivered N.
#
#   journal-fanout/bench/reader.sh
#       the two field readers: JOURNAL_FANOUT_READ_FIELDS=file (the default: fields read
#       straight from the journal files) against =libsystemd (sd_journal_enumerate_data)
#   OLD_BIN=/tmp/journal-fanout-09a6141 journal-fanout/bench/reader.sh
#       this build against another one (both at their defaults); BIN= picks the new side
#   DSTS="stdout loggly" RUNS=7 N=100000 journal-fanout/bench/reader.sh
#   TASKS=200 RX_DELAY_MS=20 DSTS=loggly OLD_BIN=... journal-fanout/bench/reader.sh
#   THREADS=1 ...: also each thread's CPU (ns) and context switches, per run
#       many streams (TASKS tasks, default 10) and receivers that answer each request
#       RX_DELAY_MS late, as a distant service does: the wall time is then the figure to read
#
# Runs alternate between the two sides, so a noisy neighbour hits both alike; the medians are
# printed at the end. Needs root (journald namespace), /usr/bin/time, python3, curl, and a
# release build (`cargo build --release -p journal-fanout --examples`).
set -euo pipefail

N=${N:-100000}
RUNS=${RUNS:-5}
TASKS=${TASKS:-10}
RX_DELAY_MS=${RX_DELAY_MS:-0}
DSTS=${DSTS:-"stdout loggly logdna stdout,loggly,logdna"}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/target/release/journal-fanout}
RX=$ROOT/target/release/examples/bench_receiver
OLD_BIN=${OLD_BIN:-}
NS=jfreader$$
WORK=$(mktemp -d /tmp/jf-reader-bench.XXXXXX)
# shellcheck source=journal-fanout/bench/journald.sh
. "$ROOT/journal-fanout/bench/journald.sh"
cleanup() {
    remove_namespace "$NS"
    rm -rf "$WORK"
}
trap cleanup EXIT
[ -x /usr/bin/time ] || { echo "install GNU time: apt-get install -y time" >&2; exit 1; }
[ -x "$BIN" ] && [ -x "$RX" ] || (cd "$ROOT" && cargo build --release -p journal-fanout --examples)

# The journal: N container lines (four services, ten tasks), written once.
start_namespace "$NS"
python3 - "$SOCK" "$N" "$TASKS" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
tasks = int(sys.argv[3])
for i in range(int(sys.argv[2])):
    msg = f"n={i:08d} GET /api/v1/items?page={i % 100} 200 " + "x" * 150
    s.sendto(("MESSAGE=%s\nPRIORITY=6\nCONTAINER_TAG=svc-%d\nCONTAINER_NAME=task-%d\nSYSLOG_IDENTIFIER=jfreader\n"
              % (msg, i % 4, i % tasks)).encode(), sys.argv[1])
PY
journalctl --namespace="$NS" --sync

# One run: prints "cpu_s rss_kb journal_thread_s other_threads_s wall_s switches".
run() {
    local bin=$1 dst=$2; shift 2
    local w; w=$(mktemp -d "$WORK/run.XXXX")
    local env=()
    for api in loggly logdna; do
        if [[ $dst == *$api* ]]; then
            BENCH_RECEIVER_DELAY_MS=$RX_DELAY_MS "$RX" "$api" benchtoken-0123456789 "$w/$api.count" >"$w/$api.url" 2>"$w/$api.log" &
            echo $! >>"$w/pids"
            for _ in $(seq 200); do [ -s "$w/$api.url" ] && break; sleep 0.05; done
            local u; u=$(echo $api | tr a-z A-Z)
            env+=("${u}_TOKEN=benchtoken-0123456789" "${u}_URL=$(cat "$w/$api.url")")
        fi
    done
    local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    env "${env[@]}" "$@" /usr/bin/time -o "$w/time" -f '%U %S %M %e' "$bin" --journal-namespace "$NS" \
        --from head --dst "$dst" --state-dir "$w/state" --flush-timeout 100ms \
        --metrics-address "127.0.0.1:$port" >/dev/null 2>"$w/log" &
    local tpid=$!
    while :; do
        local all=1
        for d in ${dst//,/ }; do
            local v; v=$(curl -s "http://127.0.0.1:$port/metrics" | awk -v k="journal_fanout_events_delivered_total{destination=\"$d\"}" '$1==k{print $2}')
            [ "${v:-0}" -ge "$N" ] 2>/dev/null || all=0
        done
        [ $all = 1 ] && break
        sleep 0.02
    done
    local pid; pid=$(pgrep -P "$tpid")
    # Per thread: name, CPU ns, context switches (voluntary + not); THREADS=1 shows them.
    local per_thread
    per_thread=$(for t in /proc/"$pid"/task/*; do
        echo "$(tr ' ' _ <"$t/comm") $(cut -d' ' -f1 "$t/schedstat") $(awk '/ctxt_switches/{s+=$2} END{print s}' "$t/status")"
    done)
    [ -z "${THREADS:-}" ] || sed "s/^/    $dst: /" <<<"$per_thread" >&2
    local threads
    threads=$(awk '{s+=$3} $1=="journal"{j+=$2; next} {o+=$2} END {printf "%.3f %.3f %d", j/1e9, o/1e9, s}' <<<"$per_thread")
    kill -TERM "$pid"
    wait "$tpid" || true
    for p in $(cat "$w/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    local sw=${threads##* }
    threads=${threads% *}
    awk -v t="$threads" -v sw="$sw" '{printf "%.2f %d %s %.2f %d\n", $1+$2, $3, t, $4, sw}' "$w/time"
}

if [ -n "$OLD_BIN" ]; then
    sides=("new:$BIN:" "old:$OLD_BIN:")
else
    sides=("file:$BIN:JOURNAL_FANOUT_READ_FIELDS=file" "libsystemd:$BIN:JOURNAL_FANOUT_READ_FIELDS=libsystemd")
fi
RESULTS=$WORK/results
for r in $(seq "$RUNS"); do
    for dst in $DSTS; do
        # Alternate which side goes first.
        order=("${sides[@]}")
        [ $((r % 2)) = 0 ] && order=("${sides[1]}" "${sides[0]}")
        for side in "${order[@]}"; do
            IFS=: read -r name bin envv <<<"$side"
            line=$(run "$bin" "$dst" ${envv:+"$envv"})
            echo "$dst $name $line" | tee -a "$RESULTS" >&2
        done
    done
done
echo
echo "| --dst | side | CPU s (median) | journal thread s | other threads s | peak RSS MB | wall s | context switches |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
python3 - "$RESULTS" <<'PY'
import sys, statistics as st, collections
d = collections.defaultdict(list)
for l in open(sys.argv[1]):
    dst, side, cpu, rss, j, o, wall, sw = l.split()
    d[(dst, side)].append((float(cpu), int(rss), float(j), float(o), float(wall), int(sw)))
for (dst, side), v in d.items():
    m = lambda i: st.median(x[i] for x in v)
    print(f"| {dst} | {side} | {m(0):.2f} | {m(2):.3f} | {m(3):.3f} | {m(1)/1024:.1f} | {m(4):.2f} | {m(5):.0f} |")
# Each round runs both sides back to back, so a neighbour's load hits a pair alike: the median
# of the per-round differences is steadier than the difference of the medians.
sides = list(dict.fromkeys(side for _, side in d))
if len(sides) == 2:
    a, b = sides
    print()
    print(f"| --dst | CPU s, {a} minus {b}: median of the per-round differences | rounds {a} cheaper |")
    print("|---|---:|---:|")
    for dst in dict.fromkeys(dst for dst, _ in d):
        diffs = [x[0] - y[0] for x, y in zip(d[(dst, a)], d[(dst, b)])]
        print(f"| {dst} | {st.median(diffs):+.3f} | {sum(x < 0 for x in diffs)} of {len(diffs)} |")
PY
