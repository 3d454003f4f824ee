#!/usr/bin/env bash
# Instructions per request on the caller's path, counted by valgrind's callgrind: unlike requests/s on a shared
# virtual machine, the same binary and load give the same count whatever else the machine is doing, so a change's
# cost shows without rounds and medians. Counts user-space instructions only (the kernel's share is not in them).
#
#   bench/instructions.sh       about 2 minutes; prints instructions per request for each configuration
#
# Each process runs under callgrind against one local upstream (examples/bench_upstream.rs); wrk warms it up,
# then instrumentation is switched on for a measured run and off again, and the count is divided by the
# requests wrk completed in that run. Configurations: examples/bare_proxy.rs (hyper's server and hyper-util's
# client, a runtime per core, nothing else: the stack's floor), shadowdiff --sample-rate 0 (the hop), and
# shadowdiff shadowing every request (every thread counted: callers, lane, analysis, writer; under callgrind the
# lane falls behind the callers and sheds, so the exchanges stored are shown beside the requests).
# Settings (environment): BENCH_DURATION (10 s measured), BENCH_CONNECTIONS (8), BENCH_BINARY (another
# shadowdiff binary).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_rust
ensure_commands wrk:wrk valgrind:valgrind curl:curl

DURATION=${BENCH_DURATION:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-8}
cargo build --release --quiet --bin shadowdiff --example bench_upstream --example bare_proxy
SHADOWDIFF=${BENCH_BINARY:-target/release/shadowdiff}

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

UPSTREAM_PORT=$(free_port)
target/release/examples/bench_upstream "127.0.0.1:$UPSTREAM_PORT" fast >/dev/null &
PIDS+=($!)
wait_port "$UPSTREAM_PORT"

# total_instructions FILE...: the sum of callgrind's program totals over the files (one per thread).
total_instructions() {
  local file sum=0 count
  for file in "$@"; do
    count=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    [[ "$count" =~ ^[0-9]+$ ]] && sum=$((sum + count))
  done
  echo "$sum"
}

# measure NAME PORT ADMIN_PORT COMMAND...: the command listens on PORT; ADMIN_PORT (or -) has shadowdiff's
# /metrics, whose stored counter then divides the count instead of the requests.
measure() {
  local name=$1 port=$2 admin=$3 pid requests stored_before stored_after total
  shift 3
  valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no \
    --callgrind-out-file="$WORK/$name.out" "$@" >"$WORK/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_port "$port"
  wrk -t1 -c"$CONNECTIONS" -d4s "http://127.0.0.1:$port/" >/dev/null
  stored() { curl -s "http://127.0.0.1:$admin/metrics" | awk '/^shadowdiff_exchanges_stored_total/ { print $2 }'; }
  if [ "$admin" != - ]; then
    # The writer flushes once a second: let the warm-up's exchanges reach the store before counting.
    sleep 3
    stored_before=$(stored)
  fi
  callgrind_control -i on "$pid" >/dev/null 2>&1
  requests=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$port/" | awk '/requests in/ { print $1 }')
  if [ "$admin" != - ]; then
    sleep 3
    stored_after=$(stored)
  fi
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill -INT "$pid" 2>/dev/null || true
  sleep 5
  kill -9 "$pid" 2>/dev/null || true
  total=$(total_instructions "$WORK/$name".out*)
  local stored=–
  [ "$admin" != - ] && stored=$((${stored_after%.*} - ${stored_before%.*}))
  printf '| %s | %s | %s | %s |\n' "$name" "$requests" "$stored" "$((total / requests))"
}

echo "| configuration | requests | exchanges stored | instructions per request (every thread) |"
echo "|---|---|---|---|"
port=$(free_port)
BARE_RUNTIME=per-core-shared measure bare-proxy "$port" - \
  target/release/examples/bare_proxy "127.0.0.1:$port" "127.0.0.1:$UPSTREAM_PORT"
for sample_rate in 0 1; do
  port=$(free_port)
  admin=$(free_port)
  name=shadowdiff-unshadowed
  [ "$sample_rate" = 1 ] && name=shadowdiff-shadowed
  SHADOWDIFF_LOG=warn measure "$name" "$port" "$( [ "$sample_rate" = 1 ] && echo "$admin" || echo - )" \
    "$SHADOWDIFF" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --primary "http://127.0.0.1:$UPSTREAM_PORT" --secondary "http://127.0.0.1:$UPSTREAM_PORT" \
    --candidate "http://127.0.0.1:$UPSTREAM_PORT" --database-url "sqlite://$WORK/$name.sqlite" --run instructions \
    --sample-rate "$sample_rate"
done
