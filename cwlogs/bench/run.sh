#!/usr/bin/env bash
# Benchmark: wall time to fetch EVENTS events from moto_server to /dev/null with cwlogs,
# the Python `awslogs` tool and `aws logs filter-log-events`, on the same data; and the
# start-up time of `cwlogs --help`. Results go to docs/bench/cwlogs.md.
#
#   cwlogs/bench/run.sh                  # 100,000 events, 10 streams
#   EVENTS=20000 RUNS=3 cwlogs/bench/run.sh
#
# Needs: hyperfine, /opt/logsuite-venv (moto[server], awslogs, awscli; LOGSUITE_VENV overrides).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${LOGSUITE_VENV:-/opt/logsuite-venv}"
EVENTS="${EVENTS:-100000}"
STREAMS="${STREAMS:-10}"
RUNS="${RUNS:-10}"          # cwlogs and aws CLI runs
PEER_RUNS="${PEER_RUNS:-3}" # awslogs is slow: fewer runs
out="${OUT:-$root/docs/bench/cwlogs.md}"

for tool in hyperfine "$venv/bin/moto_server" "$venv/bin/awslogs" "$venv/bin/aws"; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y hyperfine; pip install 'moto[server]' awslogs awscli into $venv (or ./.ci/run)" >&2; exit 1; }
done

(cd "$root" && cargo build --release -p cwlogs >&2)
bin="$root/target/release/cwlogs"

port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >/tmp/cwlogs-bench-moto.log 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true; rm -rf "${budget_dir:-}"' EXIT
endpoint="http://127.0.0.1:$port"
for _ in $(seq 1 300); do
  "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$endpoint/moto-api/" 2>/dev/null && break
  kill -0 $moto_pid 2>/dev/null || { echo "moto_server died; see /tmp/cwlogs-bench-moto.log" >&2; exit 1; }
  sleep 0.1
done

export AWS_ENDPOINT_URL="$endpoint" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
  AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
# A request budget of the benchmark's own (cwlogs shares one per user and machine).
budget_dir=$(mktemp -d)
export XDG_RUNTIME_DIR="$budget_dir"
now_s=$(date +%s)
start_ms=$(( (now_s - 7200) * 1000 ))
end_ms=$(( (now_s - 600) * 1000 ))
seed_start=$(date +%s%N)
"$venv/bin/python" "$here/seed.py" "$endpoint" bench "$EVENTS" "$STREAMS" "$start_ms" "$end_ms" >&2
seed_s=$(( ($(date +%s%N) - seed_start) / 1000000000 ))

# One window for every tool: the seeded span plus a minute either side.
s_ms=$(( start_ms - 60000 )); e_ms=$(( end_ms + 60000 ))
s_rfc=$(date -u -d @$(( s_ms / 1000 )) +%Y-%m-%dT%H:%M:%SZ)
e_rfc=$(date -u -d @$(( e_ms / 1000 )) +%Y-%m-%dT%H:%M:%SZ)

# The fetch engine, with the shared request budget raised out of the way (moto has no
# quota); and once with the default budget of 4 requests/s, which bounds any fetch of many
# pages from below (N requests take at least (N-1)/4 s).
cwb="$bin fetch bench --since $s_rfc --until $e_rfc"
cw="$cwb --max-rps 1000"
cw1="$cw --parallel 1"
cw8="$cw --parallel 8"
awslogs="$venv/bin/awslogs get bench ALL -s $s_rfc -e $e_rfc --aws-endpoint-url $endpoint"
awscli="$venv/bin/aws logs filter-log-events --log-group-name bench --start-time $s_ms --end-time $e_ms --output json"

# Same data, same answer: check each tool returns every event before timing it.
n_cw=$($cw | wc -l)
n_cwj=$($cw --json | wc -l)
n_awslogs=$($awslogs | wc -l)
n_awscli=$($awscli | "$venv/bin/python" -c 'import json,sys; print(len(json.load(sys.stdin)["events"]))')
echo "events returned: cwlogs=$n_cw cwlogs --json=$n_cwj awslogs=$n_awslogs aws=$n_awscli (seeded $EVENTS)" >&2
for n in $n_cw $n_cwj $n_awslogs $n_awscli; do
  [ "$n" -eq "$EVENTS" ] || { echo "a tool returned $n events, expected $EVENTS" >&2; exit 1; }
done

tmp=$(mktemp -d)
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$tmp/cw.json" \
  -n "cwlogs fetch (--parallel 4, --max-rps 1000)" "$cw" \
  -n "cwlogs fetch (defaults: --parallel 4, budget 4 req/s)" "$cwb" \
  -n "cwlogs fetch --parallel 1" "$cw1" \
  -n "cwlogs fetch --parallel 8" "$cw8" \
  -n "cwlogs fetch --json" "$cw --json" \
  -n "aws logs filter-log-events" "$awscli" \
  --output=null >&2
hyperfine -N --warmup 0 --runs "$PEER_RUNS" --export-json "$tmp/peer.json" \
  -n "awslogs get" "$awslogs" --output=null >&2
hyperfine -N --warmup 20 --runs 200 --export-json "$tmp/help.json" \
  -n "cwlogs --help" "$bin --help" --output=null >&2

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
load=$(cut -d' ' -f1-3 /proc/loadavg)
"$venv/bin/python" - "$tmp" "$out" <<PY
import json, statistics, sys, os
tmp, out = sys.argv[1], sys.argv[2]
rows = []
for f in ("cw.json", "peer.json", "help.json"):
    for r in json.load(open(os.path.join(tmp, f)))["results"]:
        rows.append((r["command"], statistics.median(r["times"]), min(r["times"]), max(r["times"]), len(r["times"])))
def fmt(s):
    return f"{s*1000:.1f} ms" if s < 1 else f"{s:.2f} s"
lines = [
    "## cwlogs",
    "",
    "Fetch $EVENTS ecs-logs JSON events ($STREAMS streams, one log group, spread over 110 minutes) from",
    "moto_server on loopback to /dev/null, same window for every tool; and \`cwlogs --help\` start-up.",
    "",
    "- Machine: $(nproc) cores, ${cpu}, $(uname -sr); moto_server shares the cores;",
    "  load average at the end of the run: ${load} (other work on the machine adds noise).",
    "- Command: \`cwlogs/bench/run.sh\` (EVENTS=$EVENTS STREAMS=$STREAMS RUNS=$RUNS PEER_RUNS=$PEER_RUNS); seeding took about ${seed_s} s.",
    "- Every tool was checked to return all $EVENTS events before timing.",
    "",
    "| command | median | min | max | runs |",
    "| --- | --- | --- | --- | --- |",
]
for name, med, lo, hi, n in rows:
    lines.append(f"| {name} | {fmt(med)} | {fmt(lo)} | {fmt(hi)} | {n} |")
lines += [
    "",
    "Exact commands (ENDPOINT = the emulator, window = seeded span ± 1 min):",
    "",
    "\`\`\`",
    "cwlogs fetch bench --since S --until E [--max-rps 1000] [--parallel N] [--json] > /dev/null",
    "awslogs get bench ALL -s S -e E --aws-endpoint-url ENDPOINT > /dev/null",
    "aws logs filter-log-events --log-group-name bench --start-time S_MS --end-time E_MS --output json > /dev/null",
    "cwlogs --help > /dev/null",
    "\`\`\`",
    "",
]
os.makedirs(os.path.dirname(out), exist_ok=True)
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
PY
rm -rf "$tmp"
