#!/usr/bin/env bash
# Demo of the whole pipeline on this machine:
#   container ─► Docker syslog driver ─► log-proxy ─► private journald ─► journal-fanout
#             ─► CloudWatch Logs (local emulator) ─► cwlogs
# Everything runs privately (a fresh journald namespace, a loopback emulator) and is stopped
# at the end. Without a working Docker engine, syslog lines are sent by hand instead.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
VENV=${LOGSUITE_VENV:-/opt/logsuite-venv}

echo "==> building (release)"
cargo build --release -q -p log-proxy -p journal-fanout -p cwlogs
BIN=$PWD/target/release

NS=demo$$
WORK=$(mktemp -d /tmp/logsuite-demo.XXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "/etc/systemd/journald@$NS.conf"
}
trap cleanup EXIT
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq 1 $((t * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what" >&2; exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "==> private journald namespace $NS (rate limit off)"
printf '[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\n' >"/etc/systemd/journald@$NS.conf"
/lib/systemd/systemd-journald "$NS" >/dev/null 2>&1 & PIDS+=($!)
JSOCK=/run/systemd/journal.$NS/socket
wait_for 20 "journald's socket" test -S "$JSOCK"

echo "==> log-proxy: 100 lines per 5s per container"
"$BIN/log-proxy" --syslog-address "unixgram://$WORK/proxy.sock" --journal-socket "$JSOCK" \
  --burst 100 --interval 5s --metrics-address 127.0.0.1:0 2>"$WORK/log-proxy.log" & PIDS+=($!)
wait_for 20 "log-proxy's socket" test -S "$WORK/proxy.sock"

if docker info >/dev/null 2>&1 && docker image inspect busybox:local >/dev/null 2>&1; then
  echo "==> two real containers through Docker's syslog driver: a quiet 'web' and a noisy 'batch'"
  run() {
    docker run --rm --network none --log-driver syslog \
      --log-opt "syslog-address=unixgram://$WORK/proxy.sock" --log-opt syslog-format=rfc5424micro \
      --log-opt 'tag={{.ID}}' "$@" >>"$WORK/docker.log" 2>&1
  }
  run --name "web-$NS" --label tag=demo-web busybox:local sh -c '
    for i in $(seq 1 10); do echo "GET /item/$i 200"; done
    echo "{\"level\":\"WARN\",\"message\":\"slow request\",\"data\":{\"path\":\"/item/7\",\"ms\":912}}"
    echo "database connection reset" >&2' & web=$!
  run --name "batch-$NS" --label tag=demo-batch busybox:local sh -c 'seq 1 5000 | while read i; do echo "row $i"; done' & batch=$!
  wait "$web" "$batch"
else
  echo "==> no Docker engine here: sending Docker-shaped syslog lines by hand"
  python3 - "$WORK/proxy.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def send(tag, msg, pri=30):
    s.sendto(f"<{pri}>1 2026-11-22T13:32:28.396128Z vm {tag} 1 {tag} - {msg}\n".encode(), sys.argv[1])
for i in range(10): send("demo-web", f"GET /item/{i} 200")
send("demo-web", "database connection reset", 27)
for i in range(5000): send("demo-batch", f"row {i}")
PY
fi

NOTICE_ID=5c0d9a8a3f1e4b6c9d2e7f10a1b2c3d4
wait_for 20 "the drop notices" sh -c "journalctl --namespace=$NS MESSAGE_ID=$NOTICE_ID -o cat | grep -q 'dropped'"
echo
echo "==> journald: one line of 'web' with the fields Docker's journald driver writes"
journalctl --namespace="$NS" CONTAINER_TAG=demo-web -o verbose --no-pager -n 1 |
  grep -E '^\s+(MESSAGE|PRIORITY|SYSLOG_IDENTIFIER|CONTAINER_[A-Z_]+|IMAGE_NAME)=' || true
echo
echo "==> journald: what log-proxy wrote into the noisy container's own log"
journalctl --namespace="$NS" MESSAGE_ID=$NOTICE_ID -o cat --no-pager
echo "    (lines of 'batch' kept: $(journalctl --namespace="$NS" CONTAINER_TAG=demo-batch -o cat --no-pager | grep -c '^row '))"

echo
echo "==> journal-fanout: journald ─► CloudWatch Logs (moto emulator on loopback) and stdout"
PORT=$(free_port)
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >/dev/null 2>&1 & PIDS+=($!)
wait_for 60 "the CloudWatch emulator" curl -sf "http://127.0.0.1:$PORT/moto-api/"
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1
"$BIN/journal-fanout" --journal-namespace "$NS" --from head --state-dir "$WORK/state" \
  --dst stdout,cloudwatchlogs --flush-timeout 1s >"$WORK/fanout.jsonl" 2>"$WORK/fanout.log" & PIDS+=($!)
wait_for 60 "events in CloudWatch" sh -c "'$BIN/cwlogs' --color never fetch demo-web --since 1h | grep -q 'connection reset'"
echo "    first event on stdout:"
grep demo-web "$WORK/fanout.jsonl" | head -1 | sed 's/^/    /'

echo
echo "==> cwlogs groups / list / fetch"
"$BIN/cwlogs" --color never groups demo
"$BIN/cwlogs" --color never list demo-web
"$BIN/cwlogs" --color always fetch demo-web --since 1h
echo
echo "==> done: the same commands work against real AWS without AWS_ENDPOINT_URL"
