# Shared by log-proxy/bench/compare.sh and log-proxy/bench/policy.sh (sourced, not run):
# the build, a work directory, process bookkeeping, a private journald namespace, proxies,
# and small helpers. Same set-up as run.sh (see docs/bench/log-proxy.md "Commands").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root (starts journald, writes /etc/systemd/journald@NS.conf)" >&2; exit 1; }
for b in /lib/systemd/systemd-journald python3 curl; do
  command -v "$b" >/dev/null || { echo "missing $b: apt-get install -y systemd python3 curl" >&2; exit 1; }
done

if [ -z "${NO_BUILD:-}" ]; then
  echo "building (release)..." >&2
  nice -n 5 cargo build --release -p log-proxy --examples --bins >&2
fi
TARGET=${CARGO_TARGET_DIR:-target}/release
LOADGEN=$TARGET/examples/loadgen
NEW=${NEW:-$TARGET/log-proxy}

W=$(mktemp -d /tmp/log-proxy-bench.XXXXXX)
NS=lpbench$$
MID=$(cat /etc/machine-id 2>/dev/null || true)
PIDS=()
EXTRA_CLEANUP=()
cleanup() {
  # Newest first, each gone before the next (proxies before the sinks and journald they drain
  # into); SIGKILL after 5 s, since log-proxy keeps retrying a journald that is gone.
  local i p
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    p=${PIDS[i]}
    kill "$p" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
      echo "pid $p did not stop within 5 s of SIGTERM; killing it" >&2
      kill -9 "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
  for c in "${EXTRA_CLEANUP[@]}"; do eval "$c" || true; done
  rm -f "/etc/systemd/journald@$NS.conf"
  rm -rf "/run/log/journal/$MID.$NS" "/run/systemd/journal.$NS"
  echo "work files kept in $W" >&2
}
trap cleanup EXIT

load() { cut -d' ' -f1-3 /proc/loadavg | tr ' ' '/'; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_for() { # wait_for WHAT CMD...: poll up to 20 s
  local what=$1; shift
  for _ in $(seq 400); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "timed out waiting for $what" >&2; exit 1
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "NA"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
field() { tr ' ' '\n' | sed -n "s/^$1=//p"; } # field KEY < line
metric() { curl -sf "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1==n {print $2}'; }

R=$W/results.txt
: >"$R"
run() { # run LABEL CMD... : appends "LABEL <output> load_before=.. load_after=.." to the results
  local label=$1; shift
  local before; before=$(load)
  local out; out=$("$@")
  echo "$label $out load_before=$before load_after=$(load)" | tee -a "$R" >&2
}
rest() { sleep 0.5; } # let the last burst drain and the sink print
med() { grep "^$1 " "$R" | field "$2" | median; }
# CPU s/s per 10,000 lines/s -> µs of CPU per line (0.019 -> 1.9)
us_per_line() { awk -v x="$1" 'BEGIN { if (x == "NA") print "NA"; else printf "%.2f", x * 100 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "NA") printf "%.2f", a / b; else print "NA" }'; }

# --- a private journald namespace (rate limit off), restarted when it exited while idle --------
JSOCK=/run/systemd/journal.$NS/socket
JOURNALD=
JPROXIES=() # names of proxies writing to journald: re-primed after a restart
journald_conf() {
  printf '[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\nRateLimitBurst=0\nRuntimeMaxUse=8G\n' \
    >"/etc/systemd/journald@$NS.conf"
}
journald_up() {
  if [ -n "$JOURNALD" ] && "$LOADGEN" journal --socket "$JSOCK" --count 1 >/dev/null 2>&1; then return; fi
  if [ -n "$JOURNALD" ]; then
    echo "journald's socket refused an entry at $(date -u +%T) (idle exit?); restarting journald $NS" >>"$W/journald-restarts.log"
    kill "$JOURNALD" 2>/dev/null || true
    wait "$JOURNALD" 2>/dev/null || true
    rm -f "$JSOCK"
  fi
  /lib/systemd/systemd-journald "$NS" </dev/null >>"$W/journald.log" 2>&1 &
  JOURNALD=$!; PIDS+=("$JOURNALD")
  wait_for "journald's socket" "$LOADGEN" journal --socket "$JSOCK" --count 1
  # Let each proxy find the new journald before it is measured (lines lost that way are counted).
  local p port
  for p in "${JPROXIES[@]}"; do
    port=$(eval echo "\$PORT_$p")
    "$LOADGEN" send --socket "$W/$p.sock" --count 1000 --until-metric \
      "http://127.0.0.1:$port/metrics" log_proxy_written_entries_total,log_proxy_journal_lost_lines_total >/dev/null
  done
  [ ${#JPROXIES[@]} = 0 ] || sleep 1
}

start_sink() { # start_sink NAME -> $W/NAME.sock
  "$LOADGEN" sink --socket "$W/$1.sock" >"$W/$1.out" 2>"$W/$1.err" &
  PIDS+=("$!")
  wait_for "sink $1" test -S "$W/$1.sock"
}

start_proxy() { # start_proxy NAME BINARY OUT_SOCKET ARGS... -> PORT_<NAME>, PID_<NAME>, $W/NAME.sock, $W/NAME.log
  local name=$1 bin=$2 out=$3; shift 3
  local port; port=$(free_port)
  "$bin" --syslog-address "unixgram://$W/$name.sock" --journal-socket "$out" \
    --metrics-address "127.0.0.1:$port" "$@" >"$W/$name.log" 2>&1 &
  local pid=$!; PIDS+=("$pid")
  wait_for "log-proxy $name" metric "$port" log_proxy_received_lines_total
  wait_for "log-proxy $name socket" test -S "$W/$name.sock"
  eval "PORT_$name=$port PID_$name=$pid"
}

# rotate N ITEMS...: the items starting at index N mod count (which variant goes first
# changes per iteration, as in the re-measurement of 2026-11-22)
rotate() {
  local n=$1; shift
  local a=("$@") k=$#
  for ((j = 0; j < k; j++)); do echo "${a[$(((n + j) % k))]}"; done
}
