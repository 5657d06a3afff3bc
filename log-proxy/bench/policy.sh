#!/usr/bin/env bash
# What the rate-limit policy costs (issue target: "with a 50-rule policy, 1,000 containers: CPU
# per line within 10 % of today's; a reload under load costs no dropped line and < 5 ms of
# pause"). Results: docs/bench/log-proxy.md "Policy: CPU per line and reload pause".
#
#   bash log-proxy/bench/policy.sh                                   # as root, from anywhere
#   OLD=/tmp/lp-old-target/release/log-proxy RUNS=5 DUR=5 bash log-proxy/bench/policy.sh
#   DOCKER=1 bash log-proxy/bench/policy.sh     # also with real containers' metadata (rules matched)
#   PARTS="cpu reload docker" RELOAD_TO=journald RELOAD_RATE=20000 ...
#
# Parts (PARTS, default "cpu reload", plus "docker" when DOCKER=1):
#  cpu     proxy CPU per line, 1,000 containers, into a bare datagram sink, at a fixed rate and
#          at full speed: OLD (if given; the build before the policy), new without a policy
#          (--burst 100000000 --interval 5s, as run.sh), new with a generated 50-rule policy
#          (globs on name/image/label/ECS family; defaults with a bytes budget, never reached).
#          Interleaved, RUNS runs each, medians. Docker lookups fail at once
#          (--docker-host unix:///nonexistent): no container has metadata, so no rule with
#          matchers can match — every container gets the defaults, and what is measured is the
#          per-line cost of the policy's budgets (lines + bytes: two governor checks per line).
#  reload  the same proxy with the policy at a fixed RELOAD_RATE (50,000 lines/s), 1,000
#          containers: RELOADS SIGHUPs with the file unchanged (no container moves), then RELOADS
#          rewrites of the file (write + rename; the defaults change so all 1,000 containers
#          move). Counts dropped and lost lines, and measures the pause from outside: the
#          receiver (a timestamping datagram sink, or journald's __REALTIME_TIMESTAMP with
#          RELOAD_TO=journald) records when each entry arrived; the largest gap between two
#          consecutive entries within 50 ms of each reload is compared with the largest gap in
#          the same-sized windows 500 ms later (no reload there). The proxy's own
#          `pause_us` (logged with each "policy reloaded") is reported next to it.
#  docker  real containers (DOCKER_CONTAINERS, default 50, created, not started; half named and
#          labelled so that the 50th rule matches them after 49 misses, half matching none):
#          a sender with their IDs against one with made-up IDs, same proxy with the policy and
#          a real --docker-host; then a SIGHUP and a rewrite that changes only the 50th rule,
#          whose log line ("M of K containers moved") shows which containers the rule matched.
source "$(dirname "$0")/common.sh"

RUNS=${RUNS:-5}
DUR=${DUR:-5}
CONTAINERS=${CONTAINERS:-1000}
FIXED_RATE=${FIXED_RATE:-50000}
RELOAD_RATE=${RELOAD_RATE:-50000}
RELOADS=${RELOADS:-10}
RELOAD_TO=${RELOAD_TO:-sink}
OLD=${OLD:-}
DOCKER_CONTAINERS=${DOCKER_CONTAINERS:-50}
DOCKER_RATE=${DOCKER_RATE:-20000}
PARTS=${PARTS:-cpu reload${DOCKER:+ docker}}
NX=(--docker-host unix:///nonexistent)

# gen_policy FILE DEFAULT_LINES RULE49_LINES: 50 rules as an operator with many services might
# write them (each kind of matcher; each with a bytes budget); the last one matches the
# containers of the docker part after 49 misses.
gen_policy() {
  local f=$1 dl=$2 hl=$3 i
  {
    printf '[defaults]\nlines = %s\nbytes = "100GiB"\ninterval = "5s"\n' "$dl"
    for i in $(seq 0 48); do
      printf '\n[[rule]]\nname = "rule-%s"\n' "$i"
      case $((i % 4)) in
      0) printf 'match.name = "svc-%s-*"\n' "$i" ;;
      1) printf 'match.image = "registry.example.com/team%s/*"\n' "$i" ;;
      2) printf 'match.label."com.example.team" = "t%s"\n' "$i" ;;
      3) printf 'match.ecs_family = "family-%s-*"\n' "$i" ;;
      esac
      printf 'lines = %s\nbytes = "%sMiB"\n' "$((1000 + 100 * i))" "$((4 + i))"
    done
    printf '\n[[rule]]\nname = "rule-49"\nmatch.name = "lpbench-hit-*"\nmatch.label."com.example.team" = "hit"\n'
    printf 'lines = %s\nbytes = "100GiB"\n' "$hl"
  } >"$f.tmp"
  mv "$f.tmp" "$f" # write + rename, as editors do
}
mkdir -p "$W/policy"
POLICY=$W/policy/policy.toml
gen_policy "$POLICY" 100000000 100000000
"$NEW" check-config "$POLICY" >"$W/check-config.txt" 2>&1 || { cat "$W/check-config.txt" >&2; exit 1; }

cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; } # ticks
pause_lines() { grep 'policy reloaded' "$1"; }

start_sink sink
echo "=== policy.sh start $(date -u +%T) load $(load); parts: $PARTS; new $NEW; old ${OLD:-none}" | tee -a "$R" >&2

# --- cpu -----------------------------------------------------------------------------------------
if [[ " $PARTS " == *" cpu "* ]]; then
  VARIANTS=()
  if [ -n "$OLD" ]; then
    start_proxy old "$OLD" "$W/sink.sock" "${NX[@]}" --burst 100000000 --interval 5s
    VARIANTS+=(old)
  fi
  start_proxy new "$NEW" "$W/sink.sock" "${NX[@]}" --burst 100000000 --interval 5s
  start_proxy pol "$NEW" "$W/sink.sock" "${NX[@]}" --policy "$POLICY"
  VARIANTS+=(new pol)
  for v in "${VARIANTS[@]}"; do # warm-up: every container known, pages faulted in
    "$LOADGEN" send --socket "$W/$v.sock" --containers "$CONTAINERS" --count 50000 >/dev/null
  done
  sleep 1
  for i in $(seq "$RUNS"); do
    mapfile -t ORDER < <(rotate "$((i - 1))" "${VARIANTS[@]}")
    for v in "${ORDER[@]}"; do
      run "cpu_${v}_fixed" "$LOADGEN" send --socket "$W/$v.sock" --containers "$CONTAINERS" --duration "$DUR" --rate "$FIXED_RATE" \
        --until-metric "http://127.0.0.1:$(eval echo "\$PORT_$v")/metrics" log_proxy_written_entries_total --watch-pid "$(eval echo "\$PID_$v")"; rest
    done
    for v in "${ORDER[@]}"; do
      run "cpu_${v}_full" "$LOADGEN" send --socket "$W/$v.sock" --containers "$CONTAINERS" --duration "$DUR" \
        --until-metric "http://127.0.0.1:$(eval echo "\$PORT_$v")/metrics" log_proxy_written_entries_total --watch-pid "$(eval echo "\$PID_$v")"; rest
    done
  done
  for v in "${VARIANTS[@]}"; do
    echo "cpu_${v}_counters containers=$(metric "$(eval echo "\$PORT_$v")" log_proxy_containers) dropped=$(metric "$(eval echo "\$PORT_$v")" log_proxy_dropped_lines_total) vmhwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$(eval echo "\$PID_$v")/status")" | tee -a "$R" >&2
  done
fi

# --- reload --------------------------------------------------------------------------------------
# A datagram sink that stamps each arrival with CLOCK_REALTIME (the clock of the proxy's log).
cat >"$W/tsink.py" <<'EOF'
import array, signal, socket, sys, time
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(0.2)
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
ts = array.array("q")
now, recv, append = time.time_ns, s.recv, ts.append
while not stop:
    try:
        recv(65536)
    except socket.timeout:
        continue
    append(now())
with open(out, "wb") as f:
    ts.tofile(f)
EOF
# The analysis: per reload, the largest gap between consecutive arrivals within +-50 ms of the
# "policy reloaded" log line, against the same window 500 ms later.
cat >"$W/gaps.py" <<'EOF'
import array, bisect, datetime, re, sys
tsfile, log, start_ns = sys.argv[1], sys.argv[2], int(sys.argv[3])
ts = array.array("q")
with open(tsfile, "rb") as f:
    ts.frombytes(f.read())
ts = [t for t in ts if t >= start_ns]
def maxgap(lo, hi):
    i = max(bisect.bisect_left(ts, lo), 1)
    j = bisect.bisect_right(ts, hi)
    return max((ts[k] - ts[k - 1] for k in range(i, j)), default=0) / 1e6
rel = []
for line in open(log):
    if "policy reloaded" not in line:
        continue
    stamp = line.split()[0]
    t = datetime.datetime.strptime(stamp.rstrip("Z")[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
    t_ns = int(t.timestamp()) * 10**9 + t.microsecond * 1000
    if t_ns < start_ns:
        continue
    pause = re.search(r"pause_us=(\d+)", line).group(1)
    moved = re.search(r"moved=(\d+)", line).group(1)
    rel.append((t_ns, int(pause), int(moved)))
W = 50_000_000
near, ctrl = [], []
for t, pause, moved in rel:
    a, b = maxgap(t - W, t + W), maxgap(t + 500_000_000 - W, t + 500_000_000 + W)
    near.append(a); ctrl.append(b)
    print(f"reload pause_us={pause} moved={moved} maxgap_near_ms={a:.3f} maxgap_control_ms={b:.3f}")
gaps = sorted(ts[k] - ts[k - 1] for k in range(1, len(ts)))
def pct(p):
    return gaps[min(len(gaps) - 1, int(p * len(gaps)))] / 1e6 if gaps else 0
def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else 0
print(f"reload_all entries={len(ts)} reloads={len(rel)} gap_p99_ms={pct(0.99):.3f} gap_p999_ms={pct(0.999):.3f}"
      f" gap_max_ms={gaps[-1] / 1e6 if gaps else 0:.3f}")
for what, keep in (("unchanged", lambda m: m == 0), ("moved", lambda m: m > 0)):
    sel = [k for k, r in enumerate(rel) if keep(r[2])]
    if not sel:
        continue
    p_, n_, c_ = [rel[k][1] for k in sel], [near[k] for k in sel], [ctrl[k] for k in sel]
    print(f"reload_summary {what} reloads={len(sel)} moved_max={max(rel[k][2] for k in sel)}"
          f" pause_us_median={med(p_)} pause_us_max={max(p_)}"
          f" maxgap_near_ms_median={med(n_):.3f} maxgap_near_ms_max={max(n_):.3f}"
          f" maxgap_control_ms_median={med(c_):.3f} maxgap_control_ms_max={max(c_):.3f}")
EOF

if [[ " $PARTS " == *" reload "* ]]; then
  RPOL=$W/policy/reload.toml
  gen_policy "$RPOL" 100000000 100000000
  if [ "$RELOAD_TO" = journald ]; then
    journald_conf
    journald_up
    OUT=$JSOCK
  else
    python3 "$W/tsink.py" "$W/ts.sock" "$W/ts.bin" &
    TSINK=$!; PIDS+=("$TSINK")
    wait_for "the timestamping sink" test -S "$W/ts.sock"
    OUT=$W/ts.sock
  fi
  start_proxy rl "$NEW" "$OUT" "${NX[@]}" --policy "$RPOL"
  "$LOADGEN" send --socket "$W/rl.sock" --containers "$CONTAINERS" --count 20000 >/dev/null
  sleep 1
  RL=http://127.0.0.1:$PORT_rl/metrics
  D0=$(metric "$PORT_rl" log_proxy_dropped_lines_total); L0=$(metric "$PORT_rl" log_proxy_journal_lost_lines_total)
  START_NS=$(date +%s%N)
  TOTAL=$((2 + 2 * RELOADS + 4))
  LB=$(load)
  "$LOADGEN" send --socket "$W/rl.sock" --containers "$CONTAINERS" --duration "$TOTAL" --rate "$RELOAD_RATE" \
    --until-metric "$RL" log_proxy_written_entries_total,log_proxy_journal_lost_lines_total --watch-pid "$PID_rl" >"$W/reload-send.txt" &
  SENDER=$!
  sleep 2
  for k in $(seq "$RELOADS"); do kill -HUP "$PID_rl"; sleep 1; done
  for k in $(seq "$RELOADS"); do
    gen_policy "$RPOL" $((100000000 + k % 2)) 100000000 # every container's defaults change: all move
    sleep 1
  done
  wait "$SENDER"
  echo "reload_send $(cat "$W/reload-send.txt") load_before=$LB load_after=$(load)" | tee -a "$R" >&2
  D1=$(metric "$PORT_rl" log_proxy_dropped_lines_total); L1=$(metric "$PORT_rl" log_proxy_journal_lost_lines_total)
  echo "reload_counters dropped=$((D1 - D0)) lost=$((L1 - L0)) reloads_logged=$(pause_lines "$W/rl.log" | wc -l) refused=$(grep -c 'not reloaded' "$W/rl.log" || true)" | tee -a "$R" >&2
  if [ "$RELOAD_TO" = journald ]; then
    # journald's receive time of every entry: __REALTIME_TIMESTAMP (µs) -> ns, in order.
    journalctl --namespace="$NS" -o export --no-pager --output-fields=__REALTIME_TIMESTAMP 2>/dev/null |
      sed -n 's/^__REALTIME_TIMESTAMP=//p' | python3 -c '
import array, sys
a = array.array("q", sorted(int(x) * 1000 for x in sys.stdin))
a.tofile(open(sys.argv[1], "wb"))' "$W/ts.bin"
  else
    kill "$TSINK"; wait "$TSINK" 2>/dev/null || true
  fi
  python3 "$W/gaps.py" "$W/ts.bin" "$W/rl.log" "$START_NS" | sed "s/^/${RELOAD_TO}_/" | tee -a "$R" >&2
fi

# --- docker: rules really matched ----------------------------------------------------------------
if [[ " $PARTS " == *" docker "* ]]; then
  DH=${DOCKER_HOST:-unix:///var/run/docker.sock}
  docker info >/dev/null 2>&1 || { echo "DOCKER=1: no Docker engine answers at $DH (scripts/install-deps.sh; dockerd --storage-driver vfs --iptables=false --bridge=none)" >&2; exit 1; }
  docker image inspect busybox:local >/dev/null 2>&1 || { echo "DOCKER=1: no image busybox:local (see ../shared/reference/test-environment.md)" >&2; exit 1; }
  IDS=()
  EXTRA_CLEANUP+=("docker ps -aq --filter label=lpbench=$$ | xargs -r docker rm -f >/dev/null")
  for i in $(seq 0 $((DOCKER_CONTAINERS - 1))); do
    if ((i % 2)); then n=lpbench-hit-$$-$i team=hit; else n=lpbench-miss-$$-$i team=none; fi
    IDS+=("$(docker create --network none --name "$n" --label lpbench=$$ --label com.example.team="$team" busybox:local true | cut -c1-12)")
  done
  # A sender with given IDs (loadgen makes its own): Docker-shaped rfc5424micro lines at a rate.
  cat >"$W/psend.py" <<'EOF'
import socket, sys, time
path, rate, dur, ids = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
msgs = [f"<30>1 2026-12-04T03:32:28.396128Z vm {i} 3076 {i} - GET /api/v1/items?page=2 200 0.004s ua=curl/7.88 req=5f2c9a1e\n".encode() for i in ids]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(path)
n, k, start = 0, len(msgs), time.monotonic()
while True:
    el = time.monotonic() - start
    if el >= dur:
        break
    due = int(el * rate) + 100
    while n < due:
        s.send(msgs[n % k]); n += 1
    time.sleep(0.001)
print(n)
EOF
  start_proxy dk "$NEW" "$W/sink.sock" --docker-host "$DH" --policy "$POLICY"
  FAKE=()
  for i in $(seq 0 $((DOCKER_CONTAINERS - 1))); do FAKE+=("$(printf 'f%011x' "$i")"); done
  dk_run() { # dk_run LABEL IDS...: lines at DOCKER_RATE for DUR s; the proxy's CPU until all are written
    local label=$1; shift
    local w0 c0 t0 sent w1 c1 t1 lb
    lb=$(load)
    w0=$(metric "$PORT_dk" log_proxy_written_entries_total); c0=$(cpu_of "$PID_dk"); t0=$(date +%s%N)
    sent=$(python3 "$W/psend.py" "$W/dk.sock" "$DOCKER_RATE" "$DUR" "$@")
    wait_for "dk's lines" sh -c "[ \$(curl -sf http://127.0.0.1:$PORT_dk/metrics | awk '\$1==\"log_proxy_written_entries_total\" {print \$2}') -ge $((w0 + sent)) ]"
    c1=$(cpu_of "$PID_dk"); t1=$(date +%s%N)
    echo "$label sent=$sent seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}')" \
      "cpu_seconds=$(awk -v c=$((c1 - c0)) 'BEGIN {printf "%.2f", c / 100}')" \
      "cpu_per_10k_lines_per_s=$(awk -v c=$((c1 - c0)) -v n="$sent" 'BEGIN {printf "%.4f", (c / 100) / (n / 10000)}')" \
      "load_before=$lb load_after=$(load)" | tee -a "$R" >&2
  }
  dk_run dk_warm_real "${IDS[@]}" >/dev/null 2>&1; dk_run dk_warm_fake "${FAKE[@]}" >/dev/null 2>&1
  for i in $(seq "$RUNS"); do
    if ((i % 2)); then dk_run dk_real "${IDS[@]}"; rest; dk_run dk_fake "${FAKE[@]}"; rest
    else dk_run dk_fake "${FAKE[@]}"; rest; dk_run dk_real "${IDS[@]}"; rest; fi
  done
  kill -HUP "$PID_dk"; sleep 1
  gen_policy "$POLICY" 100000000 99999999 # only rule-49 changes: exactly the containers it matched move
  sleep 1.5
  pause_lines "$W/dk.log" | tail -2 | sed 's/^/dk_reload /' | tee -a "$R" >&2
  echo "dk_counters containers=$(metric "$PORT_dk" log_proxy_containers) lookup_failures=$(metric "$PORT_dk" log_proxy_docker_lookup_failures_total) dropped=$(metric "$PORT_dk" log_proxy_dropped_lines_total)" | tee -a "$R" >&2
fi
echo "=== policy.sh end $(date -u +%T) load $(load)" | tee -a "$R" >&2

# --- summary -------------------------------------------------------------------------------------
{
  echo
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
  echo "load (1/5/15) at start / end: $(grep '^=== policy.sh' "$R" | sed 's/.* load \([^ ;]*\).*/\1/' | tr '\n' ' ')"
  echo "policy: $(head -1 "$W/check-config.txt")"
  if [[ " $PARTS " == *" cpu "* ]]; then
    echo "cpu: $RUNS x ${DUR}s, $CONTAINERS containers; µs of proxy CPU per line (median), lines/s at full speed"
    for v in ${OLD:+old} new pol; do
      printf '  %-4s fixed %s lines/s: %6s µs   full speed: %6s µs at %s lines/s\n' "$v" "$FIXED_RATE" \
        "$(us_per_line "$(med "cpu_${v}_fixed" cpu_per_10k_lines_per_s)")" \
        "$(us_per_line "$(med "cpu_${v}_full" cpu_per_10k_lines_per_s)")" "$(med "cpu_${v}_full" e2e_rate)"
    done
    B=${OLD:+old}; B=${B:-new}
    echo "  pol / $B: fixed $(ratio "$(med cpu_pol_fixed cpu_per_10k_lines_per_s)" "$(med "cpu_${B}_fixed" cpu_per_10k_lines_per_s)")," \
      "full speed $(ratio "$(med cpu_pol_full cpu_per_10k_lines_per_s)" "$(med "cpu_${B}_full" cpu_per_10k_lines_per_s)") (target <= 1.10; ratio of medians)"
    pair() { # median over iterations of A/B (runs of one iteration are neighbours in time)
      paste <(grep "^cpu_$1 " "$R" | field cpu_per_10k_lines_per_s) <(grep "^cpu_$2 " "$R" | field cpu_per_10k_lines_per_s) |
        awk '$2 > 0 {printf "%.3f\n", $1 / $2}' | median
    }
    for p in ${OLD:+"pol old" "new old"} "pol new"; do
      set -- $p
      echo "  per-iteration CPU ratio $1/$2 (median): fixed $(pair "$1_fixed" "$2_fixed"), full speed $(pair "$1_full" "$2_full")"
    done
  fi
  if [[ " $PARTS " == *" reload "* ]]; then
    echo "reload ($RELOAD_TO, $RELOAD_RATE lines/s, $CONTAINERS containers, $RELOADS SIGHUPs + $RELOADS rewrites):"
    grep -E '^reload_(send|counters)|_reload_(summary|all)' "$R" | sed 's/^/  /'
  fi
  if [[ " $PARTS " == *" docker "* ]]; then
    echo "docker ($DOCKER_CONTAINERS containers, $DOCKER_RATE lines/s): µs per line with metadata $(us_per_line "$(med dk_real cpu_per_10k_lines_per_s)")," \
      "made-up IDs $(us_per_line "$(med dk_fake cpu_per_10k_lines_per_s)")"
    grep -E '^dk_(reload|counters)' "$R" | sed 's/^/  /'
  fi
  echo "raw results: $R"
} | tee "$W/summary.txt"
