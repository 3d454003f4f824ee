#!/usr/bin/env bash
# Unary gRPC through shadowdiff against going direct to primary.
#
#   bench/grpc.sh            about 5 minutes (and a release build); prints a Markdown table, keeps raw figures
#
# Three tonic upstreams (examples/grpc_bench.rs: shop.v1.Orders/GetOrder, an order of about 300 bytes; the
# candidate drops the customer), shadowdiff serve in front of them on SQLite with the service's .proto, and load
# from the same example (one HTTP/2 connection per 8 calls in flight). Every figure is the median of BENCH_REPS
# rounds, the two configurations alternated within each round. Saturation: BENCH_CONCURRENCY calls in flight
# as fast as they go. Half load: one offered rate for all, half of shadowdiff's saturated rate. A third
# configuration, shadowdiff-unshadowed (--sample-rate 0), is the proxy's own hop with nothing shadowed.
#
# Settings (environment): BENCH_REPS (3), BENCH_DURATION (10 s per measured run), BENCH_CONCURRENCY (32),
# BENCH_OUT (target/bench/grpc).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_rust
ensure_commands python3:python3 curl:curl

REPS=${BENCH_REPS:-3}
DURATION=${BENCH_DURATION:-10}
CONCURRENCY=${BENCH_CONCURRENCY:-32}
OUT=${BENCH_OUT:-target/bench/grpc}
mkdir -p "$OUT"
RESULTS="$OUT/results.tsv"

cargo build --release --quiet --bin shadowdiff --example grpc_bench
BIN=target/release/shadowdiff
TOOL=target/release/examples/grpc_bench

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

start_upstream() {
  local port
  port=$(free_port)
  "$TOOL" upstream "127.0.0.1:$port" "${@:2}" 2>>"$WORK/upstreams.log" &
  PIDS+=($!)
  wait_port "$port"
  printf -v "$1" '%s' "$port"
}
start_upstream PRIMARY --clock 1000
start_upstream SECONDARY --clock 5000000
start_upstream CANDIDATE --clock 9000000 --candidate

"$TOOL" proto "$WORK/shop.proto"
PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
SHADOWDIFF_LOG=warn "$BIN" serve \
  --primary "http://127.0.0.1:$PRIMARY" --secondary "http://127.0.0.1:$SECONDARY" \
  --candidate "http://127.0.0.1:$CANDIDATE" --allow-side-effects --grpc-proto "$WORK/shop.proto" \
  --listen "127.0.0.1:$PROXY_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --database-url "sqlite://$WORK/shadowdiff.db" 2>>"$WORK/shadowdiff.log" &
PIDS+=($!)
wait_port "$PROXY_PORT"
# The proxy's own hop: the same, nothing shadowed (--sample-rate 0), so nothing compared or stored.
HOP_PORT=$(free_port)
SHADOWDIFF_LOG=warn "$BIN" serve \
  --primary "http://127.0.0.1:$PRIMARY" --secondary "http://127.0.0.1:$SECONDARY" \
  --candidate "http://127.0.0.1:$CANDIDATE" --allow-side-effects --sample-rate 0 \
  --listen "127.0.0.1:$HOP_PORT" --admin-listen "127.0.0.1:0" \
  --database-url "sqlite://$WORK/hop.db" 2>>"$WORK/hop.log" &
PIDS+=($!)
wait_port "$HOP_PORT"

printf 'phase\tconfig\trep\trps\tp50_ms\tp99_ms\tp999_ms\terrors\n' >"$RESULTS"
measure() { # phase config url [rate]
  local line
  line=$("$TOOL" load "$3" --concurrency "$CONCURRENCY" --seconds "$DURATION" ${4:+--rate "$4"})
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$rep" "$line" >>"$RESULTS"
  echo "$1 $2 round $rep: $line" >&2
}
for rep in $(seq 1 "$REPS"); do
  measure saturation direct "http://127.0.0.1:$PRIMARY"
  measure saturation shadowdiff "http://127.0.0.1:$PROXY_PORT"
  measure saturation shadowdiff-unshadowed "http://127.0.0.1:$HOP_PORT"
done
HALF=$(python3 - "$RESULTS" <<'PY'
import csv, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t") if r["phase"] == "saturation" and r["config"] == "shadowdiff"]
print(int(statistics.median(float(r["rps"]) for r in rows) / 2))
PY
)
for rep in $(seq 1 "$REPS"); do
  measure half direct "http://127.0.0.1:$PRIMARY" "$HALF"
  measure half shadowdiff "http://127.0.0.1:$PROXY_PORT" "$HALF"
  measure half shadowdiff-unshadowed "http://127.0.0.1:$HOP_PORT" "$HALF"
done
STORED=$(curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^shadowdiff_exchanges_stored_total/ {s += $NF} END {printf "%.0f", s}')

python3 - "$RESULTS" "$HALF" "$STORED" <<'PY' | tee "$OUT/report.md"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def med(phase, config, key):
    return statistics.median(float(r[key]) for r in rows if r["phase"] == phase and r["config"] == config)
for phase, title in [("saturation", "Saturation"), ("half", f"Half of shadowdiff's saturated rate ({sys.argv[2]} calls/s offered)")]:
    print(f"#### {title} (medians)\n")
    print("| configuration | calls/s | p50 | p99 | p99.9 | p99 added over direct | errors |")
    print("|---|---|---|---|---|---|---|")
    base = med(phase, "direct", "p99_ms")
    for config in ["direct", "shadowdiff", "shadowdiff-unshadowed"]:
        p99 = med(phase, config, "p99_ms")
        print(f"| {config} | {med(phase, config, 'rps'):,.0f} | {med(phase, config, 'p50_ms'):.2f} ms | {p99:.2f} ms "
              f"| {med(phase, config, 'p999_ms'):.2f} ms | {p99 - base:.2f} ms | {med(phase, config, 'errors'):.0f} |")
    print()
print(f"Exchanges stored by shadowdiff over all its runs: {sys.argv[3]}")
PY
