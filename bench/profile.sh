#!/usr/bin/env bash
# Where the CPU goes when shadowdiff proxies: the same three upstreams and wrk as bench/proxy.sh, one shadowdiff
# (SQLite store), and `perf record` of the whole machine while wrk runs.
#
#   bench/profile.sh [RATE]     RATE requests/s offered (paced as in bench/proxy.sh); none: saturation
#
# Prints the share of CPU time per process and shadowdiff's hottest functions, and keeps perf.data under
# target/bench/profile/. Uses the software clock event, which works on virtual machines without hardware
# counters.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_rust
ensure_commands wrk:wrk perf:linux-perf python3:python3

RATE=${1:-}
SECONDS_PROFILED=${PROFILE_DURATION:-10}
OUT=target/bench/profile
mkdir -p "$OUT"
cargo build --release --quiet --bin shadowdiff --example bench_upstream

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The role of each process started here, by pid, for the per-process table.
declare -A ROLE
upstream() {
  local port
  port=$(free_port)
  target/release/examples/bench_upstream "127.0.0.1:$port" fast 2>/dev/null &
  PIDS+=($!)
  ROLE[$!]="upstream ($1)"
  wait_port "$port"
  printf -v "$1" '%s' "$port"
}

upstream PRIMARY
upstream SECONDARY
upstream CANDIDATE
PROXY=$(free_port)
SHADOWDIFF_LOG=warn target/release/shadowdiff serve --listen "127.0.0.1:$PROXY" --admin-listen "127.0.0.1:$(free_port)" \
  --primary "http://127.0.0.1:$PRIMARY" --secondary "http://127.0.0.1:$SECONDARY" \
  --candidate "http://127.0.0.1:$CANDIDATE" --database-url "sqlite://$WORK/profile.db" &
PIDS+=($!)
SHADOWDIFF_PID=$!
ROLE[$SHADOWDIFF_PID]=shadowdiff
wait_port "$PROXY"

if [ -n "$RATE" ]; then
  interval=10
  connections=$(((RATE * interval + 999) / 1000))
  echo "function delay() return $interval end" >"$WORK/pace.lua"
  load=(wrk -t2 -c"$connections" -d"$((SECONDS_PROFILED + 4))s" -s "$WORK/pace.lua")
else
  load=(wrk -t2 -c64 -d"$((SECONDS_PROFILED + 4))s")
fi
"${load[@]}" "http://127.0.0.1:$PROXY/api/items?page=1" >"$OUT/wrk.txt" &
wrk_pid=$!
sleep 2
perf record -a -g -e cpu-clock -F 999 -o "$OUT/perf.data" -- sleep "$SECONDS_PROFILED" 2>/dev/null
wait "$wrk_pid"

echo "== load"
grep -E "Requests/sec|Latency" "$OUT/wrk.txt"
echo "== CPU time by process, as a share of both cores (swapper is idle time)"
perf report -i "$OUT/perf.data" --no-children --sort pid --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -12 \
  | while read -r share pid_comm; do
    pid=${pid_comm%%:*}
    echo "  $share  $pid_comm  ${ROLE[$pid]:-}"
  done
echo "== shadowdiff's time by thread"
perf report -i "$OUT/perf.data" --no-children --pid "$SHADOWDIFF_PID" --sort tid --stdio 2>/dev/null \
  | grep -E '^ +[0-9]' | head -12
echo "== hottest functions in shadowdiff (self time, as a share of all samples)"
perf report -i "$OUT/perf.data" --no-children --pid "$SHADOWDIFF_PID" --sort sym --stdio 2>/dev/null \
  | grep -E '^ +[0-9]' | head -30
