#!/usr/bin/env bash
# log-proxy benchmark: throughput into a bare datagram sink and into a real journald, CPU per
# 10,000 lines/s, intake while a container is over its limit, peak RSS at 1,000 containers,
# and rsyslog on the same load. Results: docs/bench/log-proxy.md.
#
#   bash log-proxy/bench/run.sh            # from the repository root, as root (journald, mounts)
#   RUNS=7 DUR=5 bash log-proxy/bench/run.sh
#
# Starts everything it needs and stops it again: a private journald namespace (rate limit
# off), a datagram sink (the loadgen example), log-proxy instances (release build) with
# `--docker-host unix:///nonexistent` so Docker lookups fail at once and lines go out with the
# fields the tag gives, and private rsyslogd instances on private sockets. Each scenario runs
# RUNS times (runs of the compared pair interleaved); medians are printed at the end.
set -euo pipefail

RUNS=${RUNS:-5}
DUR=${DUR:-3}                 # seconds per run
CONTAINERS=${CONTAINERS:-100} # distinct container IDs in the throughput runs
FIXED_RATE=${FIXED_RATE:-50000}

cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root (starts journald, writes /etc/systemd/journald@NS.conf, uses a private mount namespace)" >&2; exit 1; }
for b in /lib/systemd/systemd-journald rsyslogd unshare python3; do
  command -v "$b" >/dev/null || { echo "missing $b: apt-get install -y systemd rsyslog util-linux python3" >&2; exit 1; }
done

echo "building (release)..." >&2
cargo build --release -p log-proxy --examples --bins >&2
TARGET=${CARGO_TARGET_DIR:-target}/release
LOADGEN=$TARGET/examples/loadgen
# PROXY=/path/to/another/log-proxy compares a build of another commit on the same load;
# PROXY_EXTRA="--policy FILE" adds flags to every proxy (log-proxy/bench/policy-50.toml).
PROXY=${PROXY:-$TARGET/log-proxy}

W=$(mktemp -d /tmp/log-proxy-bench.XXXXXX)
NS=lpbench$$
MID=$(cat /etc/machine-id 2>/dev/null || true)
PIDS=()
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
  rm -f "/etc/systemd/journald@$NS.conf"
  rm -rf "/run/log/journal/$MID.$NS" "/run/systemd/journal.$NS"
  echo "work files kept in $W" >&2
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_for() { # wait_for WHAT CMD...: poll up to 20 s
  local what=$1; shift
  for _ in $(seq 400); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "timed out waiting for $what" >&2; exit 1
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "NA"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
field() { # field KEY < line
  tr ' ' '\n' | sed -n "s/^$1=//p"
}
metric() { curl -sf "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1==n {print $2}'; }

# --- the parts -------------------------------------------------------------------------------
printf '[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\nRateLimitBurst=0\nRuntimeMaxUse=8G\n' \
  > "/etc/systemd/journald@$NS.conf"
JSOCK=/run/systemd/journal.$NS/socket
JOURNALD=
# (Re)start journald when its socket does not take an entry: a namespaced journald exits by
# itself ("Journal stopped") after about 30 s without traffic.
journald_up() {
  if [ -n "$JOURNALD" ] && "$LOADGEN" journal --socket "$JSOCK" --count 1 >/dev/null 2>&1; then return; fi
  if [ -n "$JOURNALD" ]; then
    { echo "journald's socket refused an entry at $(date -u +%T) (idle exit?); restarting journald $NS:"
      grep State "/proc/$JOURNALD/status" || echo "journald (pid $JOURNALD) is gone"; } >>"$W/journald-restarts.log" 2>&1
    kill "$JOURNALD" 2>/dev/null || true
    wait "$JOURNALD" 2>/dev/null || true
    rm -f "$JSOCK"
  fi
  /lib/systemd/systemd-journald "$NS" </dev/null >>"$W/journald.log" 2>&1 &
  JOURNALD=$!; PIDS+=("$JOURNALD")
  wait_for "journald's socket" "$LOADGEN" journal --socket "$JSOCK" --count 1
  # Let the proxy find the new journald before it is measured (what that costs is reported).
  if [ -n "${PORT_tojournal:-}" ]; then
    "$LOADGEN" send --socket "$W/tojournal.sock" --count 1000 --until-metric \
      "http://127.0.0.1:$PORT_tojournal/metrics" log_proxy_written_entries_total,log_proxy_journal_lost_lines_total >/dev/null
    sleep 1
  fi
}
journald_up

"$LOADGEN" sink --socket "$W/sink.sock" >"$W/sink.out" 2>"$W/sink.err" &
PIDS+=("$!")
"$LOADGEN" sink --socket "$W/sink-limited.sock" --by-field CONTAINER_TAG >"$W/sink-limited.out" 2>&1 &
PIDS+=("$!")
wait_for "the sinks" test -S "$W/sink.sock" -a -S "$W/sink-limited.sock"

start_proxy() { # start_proxy NAME JOURNAL_SOCKET ARGS... -> sets PORT_<NAME>, PID_<NAME>
  local name=$1 js=$2; shift 2
  local port; port=$(free_port)
  "$PROXY" --syslog-address "unixgram://$W/$name.sock" --journal-socket "$js" \
    --docker-host unix:///nonexistent --metrics-address "127.0.0.1:$port" ${PROXY_EXTRA:-} "$@" \
    >"$W/$name.log" 2>&1 &
  local pid=$!; PIDS+=("$pid")
  wait_for "log-proxy $name" metric "$port" log_proxy_received_lines_total
  wait_for "log-proxy $name socket" test -S "$W/$name.sock"
  eval "PORT_$name=$port PID_$name=$pid"
}
# Limiting on but never reached (the governor check still runs per line).
HIGH=(--burst 100000000 --interval 5s)
start_proxy tosink "$W/sink.sock" "${HIGH[@]}"
start_proxy tojournal "$JSOCK" "${HIGH[@]}"
start_proxy limited "$W/sink-limited.sock" --burst 500 --interval 5s

rsyslog() { # rsyslog NAME EXTRA_INPUT_PARAMS ACTION [unshare] -> PID_rs_<NAME>
  local name=$1 params=$2 action=$3 private=${4:-}
  mkdir -p "$W/rs-$name"
  cat >"$W/rs-$name.conf" <<EOF
global(workDirectory="$W/rs-$name")
module(load="imuxsock" SysSock.Use="off")
$( [ -n "$private" ] && echo 'module(load="omjournal")' )
input(type="imuxsock" Socket="$W/rs-$name.sock" UseSpecialParser="off" $params)
template(name="tagmsg" type="string" string="%programname% %msg%\n")
$action
EOF
  if [ -n "$private" ]; then
    # omjournal can only reach the default socket /run/systemd/journal/socket: give this
    # rsyslogd a private mount namespace in which that path is our namespace's directory.
    mkdir -p "$W/jns"
    unshare --mount --propagation private sh -c "mount --bind /run/systemd/journal.$NS $W/jns && mount -t tmpfs lpbench /run/systemd && mkdir /run/systemd/journal && mount --bind $W/jns /run/systemd/journal && exec rsyslogd -n -f $W/rs-$name.conf -i $W/rs-$name.pid" \
      >"$W/rs-$name.log" 2>&1 &
  else
    rsyslogd -n -f "$W/rs-$name.conf" -i "$W/rs-$name.pid" >"$W/rs-$name.log" 2>&1 &
  fi
  local pid=$!; PIDS+=("$pid")
  wait_for "rsyslog $name" test -S "$W/rs-$name.sock"
  eval "PID_rs_$name=$pid"
}
rsyslog file "RateLimit.Interval=\"0\"" "action(type=\"omfile\" file=\"$W/rs-file.out\" template=\"tagmsg\")"
rsyslog journal "RateLimit.Interval=\"0\"" 'action(type="omjournal")' private
rsyslog limited "RateLimit.Interval=\"5\" RateLimit.Burst=\"500\"" "action(type=\"omfile\" file=\"$W/rs-limited.out\" template=\"tagmsg\")"

R=$W/results.txt
: >"$R"
run() { # run LABEL CMD... ; appends "LABEL <output>" to results
  local label=$1; shift
  local out; out=$("$@")
  echo "$label $out" | tee -a "$R" >&2
}
rest() { sleep 0.5; } # let the last burst drain and the sink print

# Warm-up, not counted: journald creates its files, every path faults its pages in.
for s in "$W/sink.sock" "$W/tosink.sock" "$W/tojournal.sock" "$W/rs-file.sock" "$W/rs-journal.sock"; do
  "$LOADGEN" send --socket "$s" --containers "$CONTAINERS" --count 20000 >/dev/null
done
journald_up
"$LOADGEN" journal --socket "$JSOCK" --containers "$CONTAINERS" --count 20000 >/dev/null
sleep 2

# --- (a) sink: direct vs through the proxy; (c) CPU --------------------------------------------
for i in $(seq "$RUNS"); do
  run direct_sink "$LOADGEN" send --socket "$W/sink.sock" --containers "$CONTAINERS" --duration "$DUR"; rest
  run proxy_sink "$LOADGEN" send --socket "$W/tosink.sock" --containers "$CONTAINERS" --duration "$DUR" \
    --until-metric "http://127.0.0.1:$PORT_tosink/metrics" log_proxy_written_entries_total --watch-pid "$PID_tosink"; rest
done
for i in $(seq "$RUNS"); do
  run proxy_sink_fixed "$LOADGEN" send --socket "$W/tosink.sock" --containers "$CONTAINERS" --duration "$DUR" \
    --rate "$FIXED_RATE" --until-metric "http://127.0.0.1:$PORT_tosink/metrics" log_proxy_written_entries_total --watch-pid "$PID_tosink"; rest
  run rsyslog_file_fixed "$LOADGEN" send --socket "$W/rs-file.sock" --containers "$CONTAINERS" --duration "$DUR" \
    --rate "$FIXED_RATE" --until-file-lines "$W/rs-file.out" --watch-pid "$PID_rs_file"; rest
done

# --- (b) journald: direct vs through the proxy ---------------------------------------------------
for i in $(seq "$RUNS"); do
  journald_up
  run direct_journald "$LOADGEN" journal --socket "$JSOCK" --containers "$CONTAINERS" --duration "$DUR" --watch-pid "$JOURNALD"; rest
  journald_up
  run direct_journald_mmsg "$LOADGEN" journal --socket "$JSOCK" --containers "$CONTAINERS" --duration "$DUR" --batch 64 --watch-pid "$JOURNALD"; rest
  journald_up
  run proxy_journald "$LOADGEN" send --socket "$W/tojournal.sock" --containers "$CONTAINERS" --duration "$DUR" \
    --until-metric "http://127.0.0.1:$PORT_tojournal/metrics" log_proxy_written_entries_total,log_proxy_journal_lost_lines_total \
    --watch-pid "$PID_tojournal"; rest
done

# --- (d) one container over its limit (500/5s): intake rate ------------------------------------
for i in $(seq "$RUNS"); do
  run direct_sink_1 "$LOADGEN" send --socket "$W/sink.sock" --containers 1 --duration "$DUR"; rest
  run proxy_overlimit "$LOADGEN" send --socket "$W/limited.sock" --containers 1 --duration "$DUR" --watch-pid "$PID_limited"; rest
  run rsyslog_overlimit "$LOADGEN" send --socket "$W/rs-limited.sock" --containers 1 --duration "$DUR" --watch-pid "$PID_rs_limited"; rest
done

# --- (f) rsyslog at full speed: to a file, into journald ----------------------------------------
rs_journal_entries() { journalctl --namespace="$NS" _COMM=rsyslogd -o cat --no-pager 2>/dev/null | wc -l; }
RS_JOURNAL_BEFORE=$(rs_journal_entries)
for i in $(seq "$RUNS"); do
  run rsyslog_file "$LOADGEN" send --socket "$W/rs-file.sock" --containers "$CONTAINERS" --duration "$DUR" \
    --until-file-lines "$W/rs-file.out" --watch-pid "$PID_rs_file"; rest
  journald_up
  run rsyslog_journald "$LOADGEN" send --socket "$W/rs-journal.sock" --containers "$CONTAINERS" --duration "$DUR" \
    --until-idle-pid "$PID_rs_journal" --watch-pid "$PID_rs_journal"; rest
done

# omjournal's entries of the runs really are in our namespace.
RS_JOURNAL_SENT=$(grep "^rsyslog_journald " "$W/results.txt" | field sent | awk '{s+=$1} END {print s}')
RS_JOURNAL_FOUND=$(( $(rs_journal_entries) - RS_JOURNAL_BEFORE ))

# --- fairness: one process relays two containers, 2,000 lines each, one after the other ----------
sleep 5.5 # every limiter window from (d) has passed
before=$(wc -l <"$W/sink-limited.out")
"$LOADGEN" send --socket "$W/limited.sock" --containers 2 --first-container 500 --block 2000 --count 4000 >/dev/null
sink_grew() { [ "$(wc -l <"$W/sink-limited.out")" -gt "$before" ]; }
wait_for "the limited sink's burst" sink_grew
FAIR_PROXY=$(sed -n "$((before + 1))p" "$W/sink-limited.out" | tr ' ' '\n' | grep -E '^[0-9a-f]{12}=' | tr '\n' ' ')
rs_before=$(wc -l <"$W/rs-limited.out")
"$LOADGEN" send --socket "$W/rs-limited.sock" --containers 2 --first-container 500 --block 2000 --count 4000 >/dev/null
sleep 1
FAIR_RSYSLOG=$(tail -n +"$((rs_before + 1))" "$W/rs-limited.out" | awk '{print $1}' | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')

# --- (e) peak RSS with 1,000 containers ----------------------------------------------------------
start_proxy rss "$W/sink.sock"
run proxy_1000_containers "$LOADGEN" send --socket "$W/rss.sock" --containers 1000 --duration $((DUR * 2)) \
  --until-metric "http://127.0.0.1:$PORT_rss/metrics" log_proxy_received_lines_total
RSS_1000=$(awk '/VmHWM/ {print $2}' "/proc/$PID_rss/status")
ANON_1000=$(awk '/RssAnon/ {print $2}' "/proc/$PID_rss/status") # of which private heap/stacks, now
CONTAINERS_TRACKED=$(metric "$PORT_rss" log_proxy_containers)
RSS_TOSINK=$(awk '/VmHWM/ {print $2}' "/proc/$PID_tosink/status")

# --- summary -------------------------------------------------------------------------------------
med() { grep "^$1 " "$R" | field "$2" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "NA" }'; }
DS=$(med direct_sink send_rate); PS=$(med proxy_sink e2e_rate)
DJ=$(med direct_journald send_rate); DJM=$(med direct_journald_mmsg send_rate); PJ=$(med proxy_journald e2e_rate)
D1=$(med direct_sink_1 send_rate); PO=$(med proxy_overlimit send_rate); RO=$(med rsyslog_overlimit send_rate)
cat <<EOF

machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), load before: $(cut -d' ' -f1-3 /proc/loadavg)
runs: $RUNS x ${DUR}s, $CONTAINERS containers, medians (lines/s)

(a) sender -> sink direct              $DS
    sender -> log-proxy -> sink        $PS   ratio $(ratio "$PS" "$DS") (target >= 0.80)
    log-proxy CPU per 10k lines/s at full speed: $(med proxy_sink cpu_per_10k_lines_per_s) s/s
(c) log-proxy CPU per 10k lines/s at $FIXED_RATE lines/s: $(med proxy_sink_fixed cpu_per_10k_lines_per_s) s/s (rsyslog to file: $(med rsyslog_file_fixed cpu_per_10k_lines_per_s))
(b) sender -> journald direct (native) $DJ   journald CPU per 10k/s: $(med direct_journald cpu_per_10k_lines_per_s)
    same, sendmmsg 64 at a time        $DJM   ratio of the proxy to it $(ratio "$PJ" "$DJM")
    sender -> log-proxy -> journald    $PJ   ratio $(ratio "$PJ" "$DJ") (target >= 0.95)
(d) one container, direct to sink      $D1
    log-proxy intake, over 500/5s      $PO   ratio $(ratio "$PO" "$D1") (target >= 1.0)
    rsyslog intake, over 500/5s        $RO   ratio $(ratio "$RO" "$D1")
(e) peak RSS (VmHWM), 1,000 containers: ${RSS_1000} kB, RssAnon after: ${ANON_1000} kB (containers tracked: $CONTAINERS_TRACKED; target < 10240 kB)
    peak RSS of the proxy of (a), 100 containers: ${RSS_TOSINK} kB
(f) rsyslog -> file                    $(med rsyslog_file e2e_rate)   CPU per 10k/s $(med rsyslog_file cpu_per_10k_lines_per_s)
    rsyslog -> journald (omjournal)    $(med rsyslog_journald e2e_rate)   CPU per 10k/s $(med rsyslog_journald cpu_per_10k_lines_per_s)   (entries found in the namespace: $RS_JOURNAL_FOUND of $RS_JOURNAL_SENT sent)
fairness, one sender, 2 containers x 2,000 lines in a row, limit 500/5s (lines per container):
    log-proxy (incl. its notice): $FAIR_PROXY
    rsyslog:                      $FAIR_RSYSLOG
log-proxy -> journald lost while journald restarted (counted, with notices): $(metric "$PORT_tojournal" log_proxy_journal_lost_lines_total) lines
raw results: $R
journald restarts: $(grep -c refused "$W/journald-restarts.log" 2>/dev/null || echo 0)
EOF
