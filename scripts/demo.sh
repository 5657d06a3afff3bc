#!/usr/bin/env bash
# Demo of the whole pipeline on this machine (Debian 12, as root):
#
#   containers ─► Docker's syslog driver ─► log-proxy ─► private journald ─► journal-fanout
#              ─► CloudWatch Logs (moto emulator on loopback) ─► cwlogs
#
# Two sources: a quiet 'web' (a dozen lines, one of them an error) and a noisy 'batch' (5000
# lines against a limit of 100 per 5 s), so you see log-proxy's drop notice in the noisy
# container's own log while the quiet one loses nothing. Everything runs privately (a fresh
# journald namespace, the emulator on a free loopback port) and is removed at the end — on
# success, on failure and on Ctrl-C — with the Docker engine, if one was started for it.
#
# Settings (environment):
#   LOGSUITE_BIN=DIR         use log-proxy, journal-fanout and cwlogs from DIR; skip the build
#   LOGSUITE_DEMO_DOCKER=    auto (default): real containers when Docker can run one (a probe
#                            container tells), else a built-in generator; 1: require Docker;
#                            0: always the generator (and no Docker engine is started)
#   LOGSUITE_DEMO_KEEP=1     keep the work directory (all logs) instead of removing it
#   LOGSUITE_VENV=DIR        Python venv with moto_server (default /opt/logsuite-venv)
set -Eeuo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run the demo as root: it installs packages and starts a private journald namespace" >&2; exit 1; }

VENV=${LOGSUITE_VENV:-/opt/logsuite-venv}
USE_DOCKER=${LOGSUITE_DEMO_DOCKER:-auto}
NOTICE_ID=5c0d9a8a3f1e4b6c9d2e7f10a1b2c3d4 # MESSAGE_ID of log-proxy's notices
BURST=100 INTERVAL=5s NOISY_LINES=5000 QUIET_LINES=12

# ── progress, failure reports, cleanup ───────────────────────────────────────────────────
STEP="checking for Rust" STEP_LOGS=() STEP_START=""
step() { # step TITLE [LOG...]: a new stage, with the logs to show if it fails
  [ -z "$STEP_START" ] || printf '    (%ss)\n' $((SECONDS - STEP_START))
  STEP=$1 STEP_START=$SECONDS
  shift
  STEP_LOGS=("$@")
  printf '\n==> [%ss] %s\n' "$SECONDS" "$STEP"
}
say() { printf '    %s\n' "$@"; }

show_log() { # the last lines of a log, indented
  [ -s "$1" ] || { echo "    ($1 is empty)"; return 0; }
  echo "    --- last lines of $1:"
  tail -n 25 "$1" | sed 's/^/    | /'
}

fail() {
  trap - ERR
  {
    echo
    echo "demo FAILED in step \"$STEP\": $*"
    for l in "${STEP_LOGS[@]}"; do show_log "$l"; done
    if [ "${LOGSUITE_DEMO_KEEP:-0}" != 1 ] && [ -n "${WORK:-}" ]; then
      echo "    (the work directory $WORK is removed now; rerun with LOGSUITE_DEMO_KEEP=1 to keep every log)"
    fi
  } >&2
  exit 1
}
trap 'rc=$?; fail "\`$BASH_COMMAND\` exited with status $rc (line $LINENO)"' ERR
trap 'echo; echo "interrupted: cleaning up" >&2; exit 130' INT
trap 'echo "terminated: cleaning up" >&2; exit 143' TERM

NS="" WORK="" CONTAINERS=() DAEMONS=() # DAEMONS: "pid name log" of what must keep running
JOURNALD_PID="" DOCKERD_PID="" # DOCKERD_PID: an engine this run caused install-deps.sh to start
stop_pid() { # stop_pid PID SECONDS: SIGTERM, then SIGKILL if it is still there after SECONDS
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 1 $(($2 * 10))); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true # reaps it when it is this shell's child
}
cleanup() {
  local rc=$? pid
  trap '' INT TERM
  trap - ERR
  set +e
  if [ ${#CONTAINERS[@]} -gt 0 ]; then
    # Again after a pause: a `docker run` cut short by Ctrl-C may still be creating one.
    for _ in 1 2 3; do
      docker rm -f "${CONTAINERS[@]}" >/dev/null 2>&1
      sleep 0.3
      docker ps -a --format '{{.Names}}' | grep -xF -f <(printf '%s\n' "${CONTAINERS[@]}") >/dev/null || break
    done
  fi
  # Stop in reverse start order, one at a time, journald last: log-proxy flushes into it.
  local i
  for ((i = ${#DAEMONS[@]} - 1; i >= -1; i--)); do
    if ((i >= 0)); then pid=${DAEMONS[i]%% *}; else pid=$JOURNALD_PID; fi
    [ -n "$pid" ] || continue
    # Each exits on SIGTERM within a second or so (log-proxy flushes, journal-fanout saves its
    # cursor); whatever has not within 20 s is killed.
    stop_pid "$pid" 20
  done
  if [ -n "$DOCKERD_PID" ]; then
    # Started for this demo, so stopped with it (its containers are removed above).
    stop_pid "$DOCKERD_PID" 30
    rm -f /run/logsuite-dockerd.pid
    echo "==> stopped the Docker engine the demo started (pid $DOCKERD_PID)"
  fi
  if [ -n "$NS" ]; then
    rm -f "/etc/systemd/journald@$NS.conf"
    rm -rf "/run/systemd/journal.$NS" "/run/log/journal/$MACHINE_ID.$NS" "/var/log/journal/$MACHINE_ID.$NS"
  fi
  if [ -n "$WORK" ]; then
    if [ "${LOGSUITE_DEMO_KEEP:-0}" = 1 ]; then echo "    logs kept in $WORK"; else rm -rf "$WORK"; fi
  fi
  [ -z "$NS" ] || echo "==> cleaned up: processes stopped, containers, journald namespace $NS and work directory removed"
  exit "$rc"
}
trap cleanup EXIT

wait_for() { # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
  local t=$1 what=$2 entry pid name log
  shift 2
  for _ in $(seq 1 $((t * 10))); do
    # In a subshell: were a trap to run while this shell's own output is redirected, its
    # messages (interrupted, cleaned up) would go to /dev/null.
    ("$@") >/dev/null 2>&1 && return 0
    for entry in "${DAEMONS[@]}"; do # a daemon that died explains the wait better than a timeout
      read -r pid name log <<<"$entry"
      if ! kill -0 "$pid" 2>/dev/null; then
        STEP_LOGS=("$log")
        wait "$pid" && rc=0 || rc=$?
        fail "$name exited (status $rc) while waiting for $what"
      fi
    done
    sleep 0.1
  done
  fail "timed out after ${t}s waiting for $what"
}
start() { # [OUT=FILE] start NAME LOG COMMAND...: a daemon in the background, stopped at the end
  local name=$1 log=$2
  shift 2
  # Its own session: Ctrl-C reaches only this script, whose cleanup stops everything in order.
  setsid "$@" >>"${OUT:-$log}" 2>>"$log" &
  DAEMONS+=("$! $name $log")
  say "started $name (pid $!, log $log)"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ── 1. dependencies and binaries ─────────────────────────────────────────────────────────
if [ -z "${LOGSUITE_BIN:-}" ]; then # before installing anything: the build needs Rust
  CARGO=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
  [ -x "$CARGO" ] || fail "cargo is missing: install Rust with rustup (https://rustup.rs), or set LOGSUITE_BIN to a directory holding the three built programs"
fi
step "dependencies: apt packages, the moto venv, a Docker engine (./scripts/install-deps.sh)"
DEPS_ARGS=(--no-image-base)
[ "$USE_DOCKER" != 0 ] || DEPS_ARGS+=(--no-docker-engine)
ENGINE_WAS_UP=0
docker info >/dev/null 2>&1 && ENGINE_WAS_UP=1
if ! ./scripts/install-deps.sh "${DEPS_ARGS[@]}"; then
  [ "$USE_DOCKER" != 1 ] || fail "install-deps.sh failed (see above) and LOGSUITE_DEMO_DOCKER=1 requires Docker"
  say "install-deps.sh failed (see above); going on if the rest is here, without Docker"
  USE_DOCKER=0
fi
# An engine that install-deps.sh started for this run is stopped at the end, like the rest.
if [ "$ENGINE_WAS_UP" = 0 ] && [ -s /run/logsuite-dockerd.pid ]; then
  pid=$(cat /run/logsuite-dockerd.pid)
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
    DOCKERD_PID=$pid
    say "a Docker engine was started for the demo (pid $pid); it is stopped at the end"
  fi
fi
[ -x /lib/systemd/systemd-journald ] || fail "systemd-journald is missing: apt-get install -y systemd"
[ -x "$VENV/bin/moto_server" ] || fail "$VENV/bin/moto_server is missing: python3 -m venv $VENV && $VENV/bin/pip install 'moto[server]'"
command -v python3 >/dev/null || fail "python3 is missing: apt-get install -y python3"

if [ -n "${LOGSUITE_BIN:-}" ]; then
  step "binaries: using the ones in LOGSUITE_BIN=$LOGSUITE_BIN (no build)"
  BIN=$LOGSUITE_BIN
else
  # The debug build: ~3 min from a fresh clone on 2 cores, against ~14 for --release, and
  # plenty fast for a demo; the same command as ./scripts/test.sh, so each reuses the other's.
  step "binaries: cargo build --workspace --bins (fresh clone: ~3 min on 2 cores; later runs reuse target/debug)"
  "$CARGO" build --workspace --bins || fail "the build failed (cargo's messages are above)"
  BIN=$PWD/target/debug
fi
for b in log-proxy journal-fanout cwlogs; do
  [ -x "$BIN/$b" ] || fail "$BIN/$b is missing or not executable"
done

MACHINE_ID=$(cat /etc/machine-id)
NS=demo$$x$((RANDOM % 1000)) # unique per run: runs in parallel do not meet
WORK=$(mktemp -d /tmp/logsuite-demo.XXXXXX)
say "namespace $NS, work directory $WORK"

# ── 2. journald ──────────────────────────────────────────────────────────────────────────
step "journald: a private namespace $NS (volatile storage, rate limit off)" "$WORK/journald.log"
say "Stands in for the host's journald, the buffer on local disk that survives outages."
printf '[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\n' >"/etc/systemd/journald@$NS.conf"
rm -rf "/run/systemd/journal.$NS" # a stale socket of an earlier run would look ready
setsid /lib/systemd/systemd-journald "$NS" >"$WORK/journald.log" 2>&1 &
JOURNALD_PID=$!
say "started systemd-journald $NS (pid $JOURNALD_PID, log $WORK/journald.log)"
JSOCK=/run/systemd/journal.$NS/socket
for _ in $(seq 1 200); do
  [ -S "$JSOCK" ] && break
  kill -0 "$JOURNALD_PID" 2>/dev/null || fail "systemd-journald exited at start"
  sleep 0.1
done
[ -S "$JSOCK" ] || fail "journald's socket $JSOCK did not appear within 20s"
# (A namespaced journald exits by itself after 30 s without traffic; its files stay readable.)

# ── 3. log-proxy ─────────────────────────────────────────────────────────────────────────
step "log-proxy: the syslog socket for Docker, each container limited to $BURST lines per $INTERVAL" "$WORK/log-proxy.log"
PROXY_ARGS=(--syslog-address "unixgram://$WORK/proxy.sock" --journal-socket "$JSOCK"
  --burst "$BURST" --interval "$INTERVAL")
if [ "$USE_DOCKER" = auto ]; then
  if docker info >/dev/null 2>&1 && docker image inspect busybox:local >/dev/null 2>&1; then USE_DOCKER=1; else USE_DOCKER=0; fi
fi
start_proxy() {
  METRICS=127.0.0.1:$(free_port)
  rm -f "$WORK/proxy.sock"
  start log-proxy "$WORK/log-proxy.log" "$BIN/log-proxy" "${PROXY_ARGS[@]}" --metrics-address "$METRICS" "$@"
  wait_for 20 "log-proxy's socket $WORK/proxy.sock" test -S "$WORK/proxy.sock"
  wait_for 20 "log-proxy's metrics on $METRICS" curl -sf "http://$METRICS/metrics"
}
# No Docker to ask: point the proxy at nothing, as on a host without Docker. It then files
# each line under its syslog tag (CONTAINER_TAG) and counts the failed lookup.
NO_DOCKER=(--docker-host "unix://$WORK/no-docker.sock")
if [ "$USE_DOCKER" = 0 ]; then start_proxy "${NO_DOCKER[@]}"; else start_proxy; fi
# An engine that answers may still be unable to run a container here (no cgroups, a broken
# storage driver, the syslog driver refused): try one through the proxy first. Unless Docker
# was required, the demo then goes on with its generator rather than failing.
if [ "$USE_DOCKER" = 1 ] && [ "${LOGSUITE_DEMO_DOCKER:-auto}" = auto ]; then
  CONTAINERS+=("probe-$NS")
  if ! docker run --rm --name "probe-$NS" --network none --log-driver syslog \
    --log-opt "syslog-address=unixgram://$WORK/proxy.sock" --log-opt syslog-format=rfc5424micro \
    --log-opt tag=demo-probe busybox:local true >>"$WORK/docker.log" 2>&1; then
    say "Docker answers but cannot run a container here (see $WORK/docker.log): using the generator"
    USE_DOCKER=0
    # The proxy is restarted without Docker, as the generator's lines come from no container.
    stop_pid "${DAEMONS[-1]%% *}" 20
    unset 'DAEMONS[-1]'
    start_proxy "${NO_DOCKER[@]}"
  fi
fi

# ── 4. the two sources ───────────────────────────────────────────────────────────────────
if [ "$USE_DOCKER" = 1 ]; then
  step "containers: a quiet 'web' and a noisy 'batch', through Docker's syslog driver" "$WORK/docker.log" "$WORK/log-proxy.log"
  docker info >/dev/null 2>&1 || fail "Docker does not answer \`docker info\` (LOGSUITE_DEMO_DOCKER=1); start dockerd, or set LOGSUITE_DEMO_DOCKER=0"
  docker image inspect busybox:local >/dev/null 2>&1 || fail "the image busybox:local is missing: run ./scripts/install-deps.sh"
  say "web:   10 requests, a JSON warning, then 'database connection reset' on stderr"
  say "batch: $NOISY_LINES lines as fast as it can — $((NOISY_LINES / BURST))x its budget"
  run() { # run NAME SERVICE SCRIPT: start one container (detached), its lines to log-proxy
    CONTAINERS+=("$1") # before it exists: an interrupted start is removed too
    docker run -d --name "$1" --label "tag=$2" --network none --log-driver syslog \
      --log-opt "syslog-address=unixgram://$WORK/proxy.sock" --log-opt syslog-format=rfc5424micro \
      --log-opt 'tag={{.ID}}' busybox:local sh -c "$3" >>"$WORK/docker.log" 2>&1 ||
      fail "docker run of '$1' failed"
  }
  run "web-$NS" demo-web '
    for i in $(seq 1 10); do echo "GET /item/$i 200"; done
    echo "{\"level\":\"WARN\",\"message\":\"slow request\",\"data\":{\"path\":\"/item/7\",\"ms\":912}}"
    echo "database connection reset" >&2'
  run "batch-$NS" demo-batch "seq 1 $NOISY_LINES | while read i; do echo \"row \$i\"; done"
  say "started containers web-$NS and batch-$NS; waiting for both to exit (docker wait)"
  codes=$(docker wait "web-$NS" "batch-$NS" 2>>"$WORK/docker.log") || fail "docker wait failed"
  codes=${codes//$'\n'/ }
  [ "$codes" = "0 0" ] || fail "the containers exited with status $codes (web, batch)"
  say "both ran and exited with status 0 (they are removed at the end)"
else
  step "generator (no Docker): a quiet 'web' and a noisy 'batch', Docker-shaped syslog lines" "$WORK/log-proxy.log"
  say "Without Docker, a few lines of Python send what Docker's syslog driver would (rfc5424micro)."
  say "web:   10 requests, a JSON warning, then 'database connection reset' at severity error"
  say "batch: $NOISY_LINES lines as fast as it can — $((NOISY_LINES / BURST))x its budget"
  python3 - "$WORK/proxy.sock" "$NOISY_LINES" <<'PY' || fail "the generator could not send to log-proxy"
import datetime, socket, sys
sock, noisy = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def send(tag, msg, severity=6):  # facility daemon (3): PRI = 3*8 + severity, like Docker
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    s.sendto(f"<{24 + severity}>1 {now} {socket.gethostname()} {tag} 1 {tag} - {msg}\n".encode(), sock)
for i in range(1, 11):
    send("demo-web", f"GET /item/{i} 200")
send("demo-web", '{"level":"WARN","message":"slow request","data":{"path":"/item/7","ms":912}}')
send("demo-web", "database connection reset", 3)
for i in range(1, noisy + 1):
    send("demo-batch", f"row {i}")
PY
  say "sent"
fi

# ── 5. what journald holds ───────────────────────────────────────────────────────────────
step "journald: what log-proxy wrote" "$WORK/log-proxy.log" "$WORK/journald.log"
jctl() { journalctl --namespace="$NS" --no-pager "$@"; }
count() { jctl "CONTAINER_TAG=$1" -o cat | grep -c "$2" || true; } # count SERVICE PATTERN
kept() { count demo-batch '^row '; }
dropped() { { jctl CONTAINER_TAG=demo-batch MESSAGE_ID=$NOTICE_ID -o verbose || true; } | awk -F= '/^ *N_DROPPED=/ { n += $2 } END { print n + 0 }'; }
# The last notice comes within one interval after the last dropped line: wait until every
# line of 'batch' is accounted for, kept or counted as dropped, and all of 'web' is there.
accounted() { [ "$(count demo-web .)" -ge "$QUIET_LINES" ] && [ $(($(kept) + $(dropped))) -ge "$NOISY_LINES" ]; }
wait_for 30 "all $QUIET_LINES lines of 'web', and all $NOISY_LINES of 'batch' kept or counted in a drop notice" accounted
K=$(kept) D=$(dropped) Q=$(count demo-web .)
if [ "$USE_DOCKER" = 1 ]; then
  say "'web', its last line with the fields Docker's journald driver writes (journalctl --namespace=$NS CONTAINER_TAG=demo-web):"
else
  say "'web', its last line (journalctl --namespace=$NS CONTAINER_TAG=demo-web); without Docker only the tag's fields:"
fi
jctl CONTAINER_TAG=demo-web -o verbose -n 1 |
  grep -E '^\s+(MESSAGE|PRIORITY|SYSLOG_IDENTIFIER|CONTAINER_[A-Z_]+|IMAGE_NAME)=' | sed 's/^ */      /' || true
[ "$Q" = "$QUIET_LINES" ] || fail "'web' has $Q lines in journald, not $QUIET_LINES"
say "'web' kept all its $Q lines: a noisy neighbour costs it nothing."
echo; say "'batch' went over its limit; log-proxy said so in batch's own log (MESSAGE_ID=$NOTICE_ID):"
jctl CONTAINER_TAG=demo-batch MESSAGE_ID=$NOTICE_ID -o cat | sed 's/^/      /'
echo; say "'batch': $K lines kept + $D dropped (the notices' N_DROPPED) = $((K + D)) of $NOISY_LINES sent: none lost silently."
say "log-proxy's metrics (http://$METRICS/metrics):"
curl -sf "http://$METRICS/metrics" | grep -E '^log_proxy_(received_lines|forwarded_lines|dropped_lines|notices|docker_lookup_failures)_total' | sed 's/^/      /' || true

# ── 6. journal-fanout into the CloudWatch emulator ───────────────────────────────────────
step "CloudWatch Logs emulator: moto_server on loopback" "$WORK/moto.log"
PORT=$(free_port)
start moto "$WORK/moto.log" "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT"
wait_for 60 "the emulator to answer on 127.0.0.1:$PORT" curl -sf "http://127.0.0.1:$PORT/moto-api/"
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
say "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL (dummy credentials); without it the same commands talk to AWS"

step "journal-fanout: journald ─► CloudWatch Logs and stdout, group = service tag, stream = container" "$WORK/fanout.log" "$WORK/moto.log"
OUT=$WORK/fanout.jsonl start journal-fanout "$WORK/fanout.log" "$BIN/journal-fanout" --journal-namespace "$NS" --from head \
  --state-dir "$WORK/state" --dst stdout,cloudwatchlogs --flush-timeout 1s
in_cloudwatch() { "$BIN/cwlogs" --color never fetch "$1" --since 1h | grep -F "$2" >/dev/null; } # SERVICE TEXT
wait_for 60 "'web' in CloudWatch (cwlogs fetch demo-web showing 'connection reset')" in_cloudwatch demo-web 'connection reset'
say "the first event of 'web' as journal-fanout's stdout destination wrote it:"
grep -m 1 '"demo-web"' "$WORK/fanout.jsonl" | sed 's/^/      /' || true

# ── 7. cwlogs ────────────────────────────────────────────────────────────────────────────
step "cwlogs: read it back like a developer" "$WORK/fanout.log" "$WORK/moto.log"
CW=("$BIN/cwlogs" --color never)
[ -t 1 ] && CW=("$BIN/cwlogs" --color always)
say '$ cwlogs groups demo'
"${CW[@]}" groups demo | sed 's/^/      /'
say '$ cwlogs list demo-web              # its streams: one per container'
"${CW[@]}" list demo-web | sed 's/^/      /'
[ "$USE_DOCKER" = 1 ] || say "(without Docker there is no container name: the stream is 'unknown')"
say '$ cwlogs fetch demo-web'
"${CW[@]}" fetch demo-web | sed 's/^/      /'
say '$ cwlogs fetch demo-batch | tail -n 3    # the drop notice reached CloudWatch too'
wait_for 30 "the drop notice of 'batch' in CloudWatch" in_cloudwatch demo-batch 'log-proxy: dropped'
"${CW[@]}" fetch demo-batch | tail -n 3 | sed 's/^/      /'

step "done"
say "Every program worked (log-proxy, journald, journal-fanout, cwlogs), in ${SECONDS}s. Next: README.md, docs/."
