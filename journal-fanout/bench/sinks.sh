#!/usr/bin/env bash
# Benchmark of journal-fanout's destinations: events/s, CPU seconds and peak RSS shipping N
# events (JSON lines on --src stdin, so the journal reader is not what is measured) to
#   stdout (the floor), loggly and logdna (local contract receivers, examples/bench_receiver.rs,
#   which check every request as the tests do and count what arrives), cloudwatchlogs
#   (moto_server), and all three
#   remote destinations at once.
# Each configuration runs RUNS times; the median (by wall time) is reported as a markdown table.
#
#   journal-fanout/bench/sinks.sh                 # N=100000 RUNS=3 SRC=stdin
#   SRC=journald journal-fanout/bench/sinks.sh    # from a private journald namespace (root):
#                                                 # one journal reader per destination, as deployed
#   DSTS="loggly logdna" journal-fanout/bench/sinks.sh   # only these --dst values
#   FANOUT_BIN=/tmp/journal-fanout-old journal-fanout/bench/sinks.sh   # another build
#
# With SRC=stdin journal-fanout exits at end of input once every destination acknowledged
# everything; with SRC=journald it follows the journal, so a run ends when /metrics shows that
# every destination delivered N events (then SIGTERM).
#
# Needs: /usr/bin/time (package `time`), python3, curl, moto_server in /opt/logsuite-venv (or $VENV).
set -euo pipefail

N=${N:-100000}
RUNS=${RUNS:-3}
SRC=${SRC:-stdin}
NS=jfsinks$$
VENV=${VENV:-/opt/logsuite-venv}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/jf-sinks-bench.XXXXXX)
PIDS=()
# shellcheck source=journal-fanout/bench/journald.sh
. "$ROOT/journal-fanout/bench/journald.sh"
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    if [ "$SRC" = journald ]; then
        remove_namespace "$NS"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in /usr/bin/time python3 "$VENV/bin/moto_server"; do
    [ -x "$tool" ] || command -v "$tool" >/dev/null || { echo "missing $tool (see the header of $0)" >&2; exit 1; }
done

cd "$ROOT"
cargo build --release -q -p journal-fanout --bin journal-fanout --example bench_receiver
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
# FANOUT_BIN: measure another build (e.g. the previous commit's) with the same receivers.
FANOUT=${FANOUT_BIN:-$TARGET/release/journal-fanout}
RECEIVER=$TARGET/release/examples/bench_receiver

# N events over 4 groups x 10 streams, ~200 bytes of message and a few data fields each.
python3 - "$N" >"$WORK/events.jsonl" <<'EOF'
import json, sys, datetime
n = int(sys.argv[1])
t0 = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=30)
for i in range(n):
    t = (t0 + datetime.timedelta(microseconds=10 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ev = {"level": "INFO", "time": t, "info": {"host": "bench", "pid": 4242},
          "data": {"n": i, "path": "/api/v1/items", "status": 200},
          "message": f"n={i:08d} GET /api/v1/items?page={i % 100} 200 " + "x" * 150}
    print(json.dumps({"group": f"svc-{i % 4}", "stream": f"task-{i % 10}", "event": ev}))
EOF

if [ "$SRC" = journald ]; then
    # The same events as journal entries in a private namespace (volatile, no rate limit).
    start_namespace "$NS"
    python3 - "$SOCK" "$WORK/events.jsonl" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for line in open(sys.argv[2]):
    r = json.loads(line)
    s.sendto(("MESSAGE=%s\nPRIORITY=6\nCONTAINER_TAG=%s\nCONTAINER_NAME=%s\nSYSLOG_IDENTIFIER=jfsinks\n"
              % (r["event"]["message"], r["group"], r["stream"])).encode(), sys.argv[1])
EOF
    journalctl --namespace="$NS" --sync
    have=$(journalctl --namespace="$NS" -o cat SYSLOG_IDENTIFIER=jfsinks | wc -l)
    [ "$have" -ge "$N" ] || { echo "journald stored only $have of $N entries" >&2; exit 1; }
fi

delivered() { # port destination -> events_delivered_total
    curl -s "http://127.0.0.1:$1/metrics" 2>/dev/null |
        awk -v k="journal_fanout_events_delivered_total{destination=\"$2\"}" '$1 == k { print $2 }'
}

TOKEN=benchtoken-0123456789
DNAKEY=benchkey0123456789

start_receiver() { # api token -> URL in $WORK/rx-API.url, events counted in $WORK/rx-API.count
    local out="$WORK/rx-$1.url"
    rm -f "$out" "$WORK/rx-$1.count"
    "$RECEIVER" "$1" "$2" "$WORK/rx-$1.count" >"$out" 2>"$WORK/rx-$1.log" &
    PIDS+=($!)
    echo $! >"$WORK/rx-$1.pid"
    for _ in $(seq 200); do [ -s "$out" ] && break; sleep 0.05; done
}

start_moto() { # -> endpoint in $WORK/moto.url
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$WORK/moto.log" 2>&1 &
    PIDS+=($!)
    echo $! >"$WORK/moto.pid"
    for _ in $(seq 300); do
        python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null && break
        sleep 0.1
    done
    echo "http://127.0.0.1:$port" >"$WORK/moto.url"
}

run_once() { # dst -> appends "wall user sys maxrss_kb" to $WORK/results
    local dst=$1 env=()
    if [[ $dst == *loggly* ]]; then
        start_receiver loggly $TOKEN
        env+=(LOGGLY_TOKEN=$TOKEN LOGGLY_URL=$(cat "$WORK/rx-loggly.url"))
    fi
    if [[ $dst == *logdna* ]]; then
        start_receiver logdna $DNAKEY
        env+=(LOGDNA_TOKEN=$DNAKEY LOGDNA_URL=$(cat "$WORK/rx-logdna.url"))
    fi
    if [[ $dst == *cloudwatchlogs* ]]; then
        start_moto
        env+=(AWS_ENDPOINT_URL=$(cat "$WORK/moto.url") AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1)
    fi
    if [ "$SRC" = stdin ]; then
        env "${env[@]}" /usr/bin/time -o "$WORK/time" -f '%e %U %S %M' \
            "$FANOUT" --src stdin --dst "$dst" --state-dir "$WORK/state" <"$WORK/events.jsonl" >/dev/null 2>"$WORK/fanout.log" \
            || { echo "journal-fanout --dst $dst failed:" >&2; tail -20 "$WORK/fanout.log" >&2; exit 1; }
    else
        local port start end pid user sys rss
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        rm -rf "$WORK/state"
        start=$(date +%s.%N)
        env "${env[@]}" /usr/bin/time -o "$WORK/time" -f '%e %U %S %M' \
            "$FANOUT" --journal-namespace "$NS" --from head --dst "$dst" --state-dir "$WORK/state" \
            --flush-timeout 100ms --metrics-address "127.0.0.1:$port" >/dev/null 2>"$WORK/fanout.log" &
        pid=$!
        while :; do
            local all=1 d
            for d in ${dst//,/ }; do
                [ "$(delivered "$port" "$d")" -ge "$N" ] 2>/dev/null || all=0
            done
            [ $all = 1 ] && break
            kill -0 $pid 2>/dev/null || { echo "journal-fanout exited:" >&2; tail -20 "$WORK/fanout.log" >&2; exit 1; }
            sleep 0.02
        done
        end=$(date +%s.%N)
        # $pid is /usr/bin/time; SIGTERM goes to journal-fanout, its child.
        kill -TERM "$(pgrep -P $pid)"
        wait $pid || true
        # Wall time up to the last acknowledgement, not including the shutdown.
        read -r _ user sys rss <"$WORK/time"
        echo "$(python3 -c "print(f'{$end - $start:.2f}')") $user $sys $rss" >"$WORK/time"
    fi
    for api in loggly logdna; do
        if [ -f "$WORK/rx-$api.pid" ]; then
            local pid got; pid=$(cat "$WORK/rx-$api.pid")
            # Every destination acknowledged everything, so the receiver has its N events.
            kill -0 "$pid" 2>/dev/null || { echo "receiver $api failed:" >&2; cat "$WORK/rx-$api.log" >&2; exit 1; }
            # Its count file trails the acknowledgements by a few milliseconds.
            for _ in $(seq 500); do
                got=$(cat "$WORK/rx-$api.count" 2>/dev/null || echo 0)
                [ "$got" -ge "$N" ] && break
                sleep 0.02
            done
            kill "$pid"; wait "$pid" 2>/dev/null || true
            [ "$got" -ge "$N" ] || { echo "receiver $api got $got of $N events" >&2; exit 1; }
            rm -f "$WORK/rx-$api.pid"
        fi
    done
    if [ -f "$WORK/moto.pid" ]; then kill "$(cat "$WORK/moto.pid")"; wait "$(cat "$WORK/moto.pid")" 2>/dev/null || true; rm -f "$WORK/moto.pid"; fi
    if grep -q -e "$TOKEN" -e "$DNAKEY" "$WORK/fanout.log"; then echo "token leaked into stderr" >&2; exit 1; fi
    cat "$WORK/time" >>"$WORK/results"
}

echo "## journal-fanout destinations: loggly, logdna, cloudwatchlogs, --src $SRC ($(date -u +%F))"
echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)."
echo "Command: \`SRC=$SRC N=$N RUNS=$RUNS journal-fanout/bench/sinks.sh\` — $N events (~330 bytes of JSON each, 4 groups x 10 streams)"
echo "from \`--src $SRC\`, median of $RUNS runs by wall time; CPU = user+sys of journal-fanout alone; receivers"
echo "are local processes that check every request against the documented API."
echo
echo "| --dst | events/s | wall s | CPU s | CPU s per 100k events | peak RSS MB |"
echo "|---|---:|---:|---:|---:|---:|"
for dst in ${DSTS:-stdout loggly logdna cloudwatchlogs loggly,logdna loggly,logdna,cloudwatchlogs}; do
    rm -rf "$WORK/state"
    : >"$WORK/results"
    for _ in $(seq "$RUNS"); do run_once "$dst"; done
    median=$(sort -n "$WORK/results" | sed -n "$(( (RUNS + 1) / 2 ))p")
    read -r wall user sys rss <<<"$median"
    python3 - "$dst" "$N" "$wall" "$user" "$sys" "$rss" <<'EOF'
import sys
dst, n, wall, user, sys_, rss = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:])
cpu = user + sys_
print(f"| {dst} | {n / max(wall, 0.001):,.0f} | {wall:.2f} | {cpu:.2f} | {cpu * 100000 / n:.2f} | {rss / 1024:.1f} |")
EOF
done
