#!/usr/bin/env bash
# Benchmark journal-fanout: entries/s from a journald namespace to stdout (>/dev/null) and to
# moto_server (CloudWatch Logs emulator), with CPU time and peak RSS from /usr/bin/time -v,
# next to the floor `journalctl -o json --namespace NS > /dev/null` on the same journal.
#
# Usage: journal-fanout/bench/run.sh [ENTRIES] [RUNS]     (defaults: 300000 entries, 3 runs)
#        BENCH_PATHS="floor stdout cloudwatch" selects measurements; BENCH_SMAPS=1 prints where
#        journal-fanout's resident memory is at the end of each run.
# Needs: root (private journald namespace), /usr/bin/time (apt-get install time),
#        moto_server in /opt/logsuite-venv (or $LOGSUITE_VENV), a release build
#        (`cargo build --release -p journal-fanout`; the script builds it if missing).
#
# How a run is timed: journal-fanout follows the journal forever, so the script polls its
# /metrics until every entry is delivered, takes that instant as the end, then sends SIGTERM.
# Entries/s = ENTRIES / (end - start). CPU and RSS are the whole process's, from time -v.
set -euo pipefail

N=${1:-300000}
RUNS=${2:-3}
PATHS=${BENCH_PATHS:-"floor stdout cloudwatch"}   # which measurements to run
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${JOURNAL_FANOUT_BIN:-$ROOT/target/release/journal-fanout}
VENV=${LOGSUITE_VENV:-/opt/logsuite-venv}
TIME=/usr/bin/time

[ -x "$TIME" ] || { echo "install GNU time: apt-get install -y time" >&2; exit 1; }
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p journal-fanout)

NS=bench$$
WORK=$(mktemp -d)
MOTO_PID=""
# shellcheck source=journal-fanout/bench/journald.sh
. "$ROOT/journal-fanout/bench/journald.sh"
cleanup() {
  [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null || true
  remove_namespace "$NS"
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- the journal: N container lines, 3 groups x 10 streams, ~120-byte messages ------------
start_namespace "$NS"
python3 - "$SOCK" "$N" <<'EOF'
import socket, sys
sock, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
pad = "x" * 80
for i in range(n):
    s.sendto(("MESSAGE=line %d %s\nPRIORITY=6\nCONTAINER_TAG=bench-%d\nCONTAINER_NAME=c-%d\n"
              "CONTAINER_ID=0123456789ab\nIMAGE_NAME=busybox:local\nSYSLOG_IDENTIFIER=bench-%d\n"
              % (i, pad, i % 3, i % 10, i % 3)).encode(), sock)
EOF
journalctl --namespace="$NS" --sync
have=$(journalctl --namespace="$NS" -o cat CONTAINER_ID=0123456789ab | wc -l)
[ "$have" -ge "$N" ] || { echo "journald stored only $have of $N entries" >&2; exit 1; }

metric() { # port destination name -> value
  curl -s "http://127.0.0.1:$1/metrics" 2>/dev/null \
    | awk -v d="destination=\"$2\"" -v n="journal_fanout_$3" 'index($0, n "{" d "}") == 1 { print $2 }'
}

# One timed run of journal-fanout; prints "entries_per_s cpu_s peak_rss_kb peak_anon_kb".
# Peak RSS (time -v) includes the journal files libsystemd maps (page cache, reclaimable);
# the anonymous part (RssAnon, sampled) is the program's own memory.
run_fanout() { # dst extra-env...
  local dst=$1; shift
  local port state
  port=$(free_port); state=$(mktemp -d -p "$WORK")
  local start end
  start=$(date +%s.%N)
  env "$@" "$TIME" -v -o "$WORK/time.txt" "$BIN" --journal-namespace "$NS" --dst "$dst" --from head \
    --state-dir "$state" --flush-timeout 100ms --metrics-address "127.0.0.1:$port" \
    >/dev/null 2>"$WORK/stderr.txt" &
  local pid=$!
  local anon=0 fpid=""
  while :; do
    local got a
    [ -n "$fpid" ] || fpid=$(pgrep -P "$pid" || true)
    if [ -n "$fpid" ]; then
      a=$(awk '/RssAnon/ {print $2}' "/proc/$fpid/status" 2>/dev/null || echo 0)
      [ "${a:-0}" -gt "$anon" ] && anon=$a
    fi
    got=$(metric "$port" "$dst" events_delivered_total || true)
    if [ -n "$got" ] && [ "$got" -ge "$N" ]; then end=$(date +%s.%N); break; fi
    kill -0 "$pid" 2>/dev/null || { echo "journal-fanout died:" >&2; cat "$WORK/stderr.txt" >&2; exit 1; }
    sleep 0.02
  done
  if [ -n "${BENCH_SMAPS:-}" ] && [ -n "$fpid" ]; then  # where the resident memory is
    awk '/^[0-9a-f]+-[0-9a-f]+ / {name=$6} /^Rss:/ {r[name]+=$2} END {for (n in r) if (r[n] > 500) print r[n] " kB " n}' \
      "/proc/$fpid/smaps" | sort -rn | head -8 >&2
  fi
  # time -v is our child; signal journal-fanout itself (time's child).
  pkill -TERM -P "$pid" || true
  wait "$pid" || true
  local cpu rss
  cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.2f", u+s}' "$WORK/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
  echo "$(python3 -c "print(int($N/($end-$start)))") $cpu $rss $anon"
}

run_journalctl() {
  local start end
  start=$(date +%s.%N)
  "$TIME" -v -o "$WORK/time.txt" journalctl --namespace="$NS" -o json --no-pager >/dev/null
  end=$(date +%s.%N)
  local cpu rss
  cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.2f", u+s}' "$WORK/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
  total=$(journalctl --namespace="$NS" -q --no-pager -o cat | wc -l)
  echo "$(python3 -c "print(int($total/($end-$start)))") $cpu $rss 0"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

report() { # label, file with "rate cpu rss anon" lines
  [ -s "$2" ] || return 0
  printf '| %s | %s | %s | %s | %s |\n' "$1" \
    "$(cut -d' ' -f1 "$2" | median)" "$(cut -d' ' -f2 "$2" | median)" \
    "$(( $(cut -d' ' -f3 "$2" | median) / 1024 ))" "$(( $(cut -d' ' -f4 "$2" | median) / 1024 ))"
}

echo "journal: $N entries in namespace $NS; $RUNS runs each; $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" >&2

: > "$WORK/jctl"; : > "$WORK/stdout"; : > "$WORK/cw"
if [[ " $PATHS " == *" floor "* ]]; then
  for _ in $(seq "$RUNS"); do run_journalctl >> "$WORK/jctl"; done
fi
if [[ " $PATHS " == *" stdout "* ]]; then
  for _ in $(seq "$RUNS"); do run_fanout stdout >> "$WORK/stdout"; done
fi
if [[ " $PATHS " == *" cloudwatch "* ]]; then

MOTO_PORT=$(free_port)
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >/dev/null 2>&1 &
MOTO_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$MOTO_PORT/moto-api/" >/dev/null && break; sleep 0.2; done
for _ in $(seq "$RUNS"); do
  curl -s -X POST "http://127.0.0.1:$MOTO_PORT/moto-api/reset" >/dev/null
  run_fanout cloudwatchlogs AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_ACCESS_KEY_ID=testing \
    AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true >> "$WORK/cw"
done
fi

echo "| path | entries/s (median) | CPU s | peak RSS MiB (incl. mapped journal) | peak anon RSS MiB |"
echo "|---|---|---|---|---|"
report "journalctl -o json --namespace (floor, all fields)" "$WORK/jctl"
report "journal-fanout → stdout (>/dev/null)" "$WORK/stdout"
report "journal-fanout → cloudwatchlogs (moto_server)" "$WORK/cw"
echo >&2 "raw runs (entries/s cpu_s rss_kb anon_kb):"; for f in jctl stdout cw; do echo "$f: $(tr '\n' ';' < "$WORK/$f")" >&2; done
