#!/usr/bin/env bash
# Old build against new build (and new with other flags) on the same load, interleaved: the
# scenarios of run.sh that sit on the per-line path — sender -> log-proxy -> sink (full speed
# and a fixed rate), sender -> log-proxy -> journald, one container over its limit — each run
# RUNS times, the variants one after the other in an order that rotates per iteration.
# Results: docs/bench/log-proxy.md.
#
#   OLD=/tmp/lp-old-target/release/log-proxy bash log-proxy/bench/compare.sh   # as root
#   RUNS=5 DUR=3 VARIANTS="old new any" OLD=... bash log-proxy/bench/compare.sh
#
# Variants: old = $OLD, new = this tree's build, any = new with `--allow-uid any` (no
# per-datagram credentials check). Every proxy runs with `--docker-host unix:///nonexistent`
# (Docker lookups fail at once; no Docker API cost), as in run.sh.
source "$(dirname "$0")/common.sh"

RUNS=${RUNS:-5}
DUR=${DUR:-3}
CONTAINERS=${CONTAINERS:-100}
FIXED_RATE=${FIXED_RATE:-50000}
OLD=${OLD:?set OLD=/path/to/the/old/log-proxy (e.g. a release build of 56b94a9)}
read -r -a VARIANTS <<<"${VARIANTS:-old new any}"
bin_of() { case $1 in old) echo "$OLD" ;; *) echo "$NEW" ;; esac; }
args_of() { case $1 in any) echo "--allow-uid any" ;; *) ;; esac; }

journald_conf
journald_up
start_sink sink
HIGH=(--burst 100000000 --interval 5s) # limiting on, never reached: the check runs per line
for v in "${VARIANTS[@]}"; do
  # shellcheck disable=SC2046
  start_proxy "${v}_sink" "$(bin_of "$v")" "$W/sink.sock" --docker-host unix:///nonexistent "${HIGH[@]}" $(args_of "$v")
  # shellcheck disable=SC2046
  start_proxy "${v}_journal" "$(bin_of "$v")" "$JSOCK" --docker-host unix:///nonexistent "${HIGH[@]}" $(args_of "$v")
  # shellcheck disable=SC2046
  start_proxy "${v}_limited" "$(bin_of "$v")" "$W/sink.sock" --docker-host unix:///nonexistent --burst 500 --interval 5s $(args_of "$v")
  JPROXIES+=("${v}_journal")
done

echo "variants ${VARIANTS[*]}; old $OLD; new $NEW" | tee -a "$R" >&2
echo "=== compare start $(date -u +%T) load $(load)" | tee -a "$R" >&2
# Warm-up, not counted.
for v in "${VARIANTS[@]}"; do
  for s in sink journal; do "$LOADGEN" send --socket "$W/${v}_$s.sock" --containers "$CONTAINERS" --count 20000 >/dev/null; done
done
"$LOADGEN" send --socket "$W/sink.sock" --containers "$CONTAINERS" --count 20000 >/dev/null
sleep 2

pm() { local v=$1 s=$2; echo "http://127.0.0.1:$(eval echo "\$PORT_${v}_$s")/metrics"; }
pid() { eval echo "\$PID_$1_$2"; }
for i in $(seq "$RUNS"); do
  mapfile -t ORDER < <(rotate "$((i - 1))" "${VARIANTS[@]}")
  run direct_sink "$LOADGEN" send --socket "$W/sink.sock" --containers "$CONTAINERS" --duration "$DUR"; rest
  for v in "${ORDER[@]}"; do
    run "${v}_sink" "$LOADGEN" send --socket "$W/${v}_sink.sock" --containers "$CONTAINERS" --duration "$DUR" \
      --until-metric "$(pm "$v" sink)" log_proxy_written_entries_total --watch-pid "$(pid "$v" sink)"; rest
  done
  for v in "${ORDER[@]}"; do
    run "${v}_sink_fixed" "$LOADGEN" send --socket "$W/${v}_sink.sock" --containers "$CONTAINERS" --duration "$DUR" \
      --rate "$FIXED_RATE" --until-metric "$(pm "$v" sink)" log_proxy_written_entries_total --watch-pid "$(pid "$v" sink)"; rest
  done
  journald_up
  run direct_journald_mmsg "$LOADGEN" journal --socket "$JSOCK" --containers "$CONTAINERS" --duration "$DUR" --batch 64 --watch-pid "$JOURNALD"; rest
  for v in "${ORDER[@]}"; do
    journald_up
    run "${v}_journald" "$LOADGEN" send --socket "$W/${v}_journal.sock" --containers "$CONTAINERS" --duration "$DUR" \
      --until-metric "$(pm "$v" journal)" log_proxy_written_entries_total,log_proxy_journal_lost_lines_total \
      --watch-pid "$(pid "$v" journal)"; rest
  done
  run direct_sink_1 "$LOADGEN" send --socket "$W/sink.sock" --containers 1 --duration "$DUR"; rest
  for v in "${ORDER[@]}"; do
    run "${v}_overlimit" "$LOADGEN" send --socket "$W/${v}_limited.sock" --containers 1 --duration "$DUR" \
      --watch-pid "$(pid "$v" limited)"; rest
  done
done
echo "=== compare end $(date -u +%T) load $(load)" | tee -a "$R" >&2

# Per-iteration ratios against the first variant (runs of the same iteration are neighbours
# in time, so this cancels most of the machine's swings).
pair_ratio() { # pair_ratio LABEL_A LABEL_B KEY -> median over iterations of A/B
  paste <(grep "^$1 " "$R" | field "$3") <(grep "^$2 " "$R" | field "$3") |
    awk '$2 > 0 {printf "%.3f\n", $1 / $2}' | median
}
BASE=${VARIANTS[0]}
{
  echo
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
  echo "runs: $RUNS x ${DUR}s, $CONTAINERS containers, fixed rate $FIXED_RATE lines/s; medians; CPU as µs of proxy CPU per line"
  echo "load (1/5/15 min) at start and end: $(grep '^=== compare' "$R" | sed 's/.* load //' | tr '\n' ' ')"
  echo "direct: sink $(med direct_sink send_rate) lines/s, sink 1 container $(med direct_sink_1 send_rate), journald sendmmsg $(med direct_journald_mmsg send_rate)"
  printf '%-8s %10s %8s %8s %10s %8s %10s %8s %10s %8s\n' variant sink_rate sink_us fixed_us jnl_rate jnl_us overlimit ovl_us lost jnl/base
  for v in "${VARIANTS[@]}"; do
    printf '%-8s %10s %8s %8s %10s %8s %10s %8s %10s %8s\n' "$v" \
      "$(med "${v}_sink" e2e_rate)" "$(us_per_line "$(med "${v}_sink" cpu_per_10k_lines_per_s)")" \
      "$(us_per_line "$(med "${v}_sink_fixed" cpu_per_10k_lines_per_s)")" \
      "$(med "${v}_journald" e2e_rate)" "$(us_per_line "$(med "${v}_journald" cpu_per_10k_lines_per_s)")" \
      "$(med "${v}_overlimit" send_rate)" "$(us_per_line "$(med "${v}_overlimit" cpu_per_10k_lines_per_s)")" \
      "$(metric "$(eval echo "\$PORT_${v}_journal")" log_proxy_journal_lost_lines_total)" \
      "$(pair_ratio "${v}_journald" "${BASE}_journald" e2e_rate)"
  done
  echo "per-iteration ratios to $BASE (median): sink rate / sink CPU per line / fixed-rate CPU per line / journald rate / journald CPU / over-limit intake"
  for v in "${VARIANTS[@]:1}"; do
    echo "  $v: $(pair_ratio "${v}_sink" "${BASE}_sink" e2e_rate) / $(pair_ratio "${v}_sink" "${BASE}_sink" cpu_per_10k_lines_per_s)" \
      "/ $(pair_ratio "${v}_sink_fixed" "${BASE}_sink_fixed" cpu_per_10k_lines_per_s) / $(pair_ratio "${v}_journald" "${BASE}_journald" e2e_rate)" \
      "/ $(pair_ratio "${v}_journald" "${BASE}_journald" cpu_per_10k_lines_per_s) / $(pair_ratio "${v}_overlimit" "${BASE}_overlimit" send_rate)"
  done
  echo "journald restarts: $(grep -c refused "$W/journald-restarts.log" 2>/dev/null || echo 0)"
  echo "raw results: $R"
} | tee "$W/summary.txt"
