#!/usr/bin/env bash
# What shadowdiff costs on the caller's path, against going direct and against nginx's `mirror`.
#
#   bench/proxy.sh            full run (about 20 minutes); prints a Markdown report, keeps raw figures
#
# Three local upstreams (examples/bench_upstream.rs: a fixed JSON body of about 2 KB) and load from wrk.
# Every figure is the median of BENCH_REPS rounds, the configurations alternated within each round.
# Phase 1 (saturation): wrk with BENCH_CONNECTIONS connections, as fast as it can, against each configuration
# in turn. The configurations: direct to primary; nginx with proxy_pass to primary and mirror to secondary and
# candidate; shadowdiff on SQLite; shadowdiff on PostgreSQL; and two that explain the others: nginx with
# proxy_pass alone, and shadowdiff with --sample-rate 0 (the proxy's own hop, nothing shadowed). The runs of
# shadowdiff on SQLite and of nginx's mirror last BENCH_LONG_DURATION (30 s; BENCH_DURATION if longer), the
# others BENCH_DURATION: these are the runs of at least 30 s that compare the two. (Lengthening those two runs
# costs 2 x 20 s a round, 2 minutes in all; a separate phase of 30 s runs would cost 3 x 2 x 32 s, over 3
# minutes.)
# Phase 2 (half load): the same rounds at one fixed offered rate for every configuration, half of shadowdiff's
# (SQLite) saturated throughput. Phase 3 (faults): BENCH_REPS rounds at that rate for BENCH_FAULT_DURATION
# seconds each, shadowdiff and nginx with a normal candidate, a candidate 10x slower than primary, and a
# black-holed candidate (accepts, never answers): the caller's latency and the proxy's resident memory
# (sampled every second).
#
# Shadowed throughput: for shadowdiff, its Prometheus counters on the admin listener (/metrics) are read just
# before and just after each measured wrk run; exchanges stored (shadowdiff_exchanges_stored_total: compared
# and written to the store) per second of the wrk run, and the share shed, 1 - stored / requests received
# (shadowdiff_requests_total). A counter missing from /metrics counts as 0 (with a warning).
#
# Settings (environment): BENCH_REPS (3), BENCH_DURATION (10 s per measured run), BENCH_LONG_DURATION (30 s,
# the saturation runs of shadowdiff on SQLite and of nginx's mirror), BENCH_WARMUP (2 s),
# BENCH_FAULT_DURATION (30 s; 0 leaves the faults out), BENCH_BINARY (another shadowdiff binary to measure),
# BENCH_BEFORE_BINARY (an earlier build, measured in the same rounds), BENCH_HALF_RATE (half of shadowdiff-sqlite's saturated rate), BENCH_CONNECTIONS (64), BENCH_THREADS (2),
# BENCH_OUT (target/bench/proxy).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_rust
ensure_commands wrk:wrk nginx:nginx python3:python3 curl:curl
ensure_postgres_server

REPS=${BENCH_REPS:-3}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
LONG_DURATION=${BENCH_LONG_DURATION:-30}
[ "$LONG_DURATION" -lt "$DURATION" ] && LONG_DURATION=$DURATION
FAULT_DURATION=${BENCH_FAULT_DURATION:-30}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
OUT=${BENCH_OUT:-target/bench/proxy}

cargo build --release --quiet --bin shadowdiff --example bench_upstream
# BENCH_BINARY measures another shadowdiff binary (an earlier build, for before/after figures).
SHADOWDIFF=${BENCH_BINARY:-target/release/shadowdiff}
UPSTREAM=target/release/examples/bench_upstream

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.tsv"
# The last five columns: the wrk run's duration; for shadowdiff only (empty otherwise), its counters' deltas
# over that run, exchanges stored per second and the share shed in percent.
printf 'phase\tconfig\trep\trps\tp50_us\tp99_us\tp999_us\terrors\trss_max_kib\trss_end_kib\tduration_s\trequests_delta\tstored_delta\tstored_per_s\tshed_pct\n' >"$RESULTS"
WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
PG_DIR=

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  [ -n "$PG_DIR" ] && scripts/pg.sh stop "$PG_DIR" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_upstream VARIABLE BEHAVIOUR: starts one upstream and sets VARIABLE to its port (not in a subshell,
# so that the cleanup knows the process).
start_upstream() {
  local port
  port=$(free_port)
  "$UPSTREAM" "127.0.0.1:$port" "$2" 2>>"$WORK/upstreams.log" &
  PIDS+=($!)
  wait_port "$port"
  printf -v "$1" '%s' "$port"
}

# The wrk script: pacing (BENCH_INTERVAL_MS between a response and the connection's next request, when set)
# and one RESULT line with the figures the report needs (latencies in microseconds).
cat >"$WORK/report.lua" <<'LUA'
local interval = tonumber(os.getenv("BENCH_INTERVAL_MS") or "")
if interval then
  function delay() return interval end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.status + e.timeout))
end
LUA

# rss_kib PID...: resident memory of these processes together, in KiB.
rss_kib() {
  local total=0 pid kib
  for pid in "$@"; do
    kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${kib:-0}))
  done
  echo "$total"
}

# scrape: shadowdiff's counters on its admin listener, as "REQUESTS STORED SEEN" (SEEN 0: no stored counter on
# /metrics). Every line of a metric is summed, with labels or without; a missing metric counts as 0.
scrape() {
  local text
  if ! text=$(curl -sf --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics"); then
    echo "warning: no answer from http://127.0.0.1:$ADMIN_PORT/metrics; counters taken as 0" >&2
    echo "0 0 0"
    return
  fi
  awk '
    /^#/ || NF < 2 { next }
    { name = $1; sub(/\{.*/, "", name) }
    name == "shadowdiff_requests_total" { requests += $NF }
    name == "shadowdiff_exchanges_stored_total" { stored += $NF; seen = 1 }
    # Binaries older than the stored counter: compared less what the store dropped.
    name == "shadowdiff_exchanges_analysed_total" && /result="compared"/ { compared += $NF }
    name == "shadowdiff_store_dropped_total" && /what="exchange"/ { dropped += $NF }
    END {
      if (!seen && compared > 0) { stored = compared - dropped; seen = 2 }
      printf "%.0f %.0f %d\n", requests, stored, seen
    }
  ' <<<"$text"
}
STORED_WARNED=

# Configurations. Each start_* starts the proxy in front of the upstreams and sets PROXY_PORT and PROXY_PIDS
# (and ADMIN_PORT for shadowdiff); stop_proxy stops it again, so that no configuration's leftover work runs
# during another's measurement.
PROXY_PORT=
PROXY_PIDS=()
ADMIN_PORT=

start_direct() {
  PROXY_PORT=$PRIMARY_PORT
  PROXY_PIDS=()
}

start_nginx() {
  local candidate_port=$1 mirrors=${2-"mirror /_secondary; mirror /_candidate;"}
  PROXY_PORT=$(free_port)
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream primary { server 127.0.0.1:$PRIMARY_PORT; keepalive 128; }
  upstream secondary { server 127.0.0.1:$SECONDARY_PORT; keepalive 128; }
  upstream candidate { server 127.0.0.1:$candidate_port; keepalive 128; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  server {
    listen 127.0.0.1:$PROXY_PORT backlog=4096;
    keepalive_requests 1000000;
    location / {
      $mirrors
      proxy_pass http://primary;
    }
    # The mirrors get the same time shadowdiff's shadows get by default (--shadow-timeout 5s).
    location = /_secondary { internal; proxy_connect_timeout 2s; proxy_read_timeout 5s; proxy_pass http://secondary\$request_uri; }
    location = /_candidate { internal; proxy_connect_timeout 2s; proxy_read_timeout 5s; proxy_pass http://candidate\$request_uri; }
  }
}
NGINX
  nginx -e "$WORK/nginx/error.log" -c "$WORK/nginx.conf" -g 'daemon on;'
  wait_port "$PROXY_PORT"
  PROXY_PIDS=("$(cat "$WORK/nginx.pid")")
  mapfile -t -O 1 PROXY_PIDS < <(pgrep -P "${PROXY_PIDS[0]}")
}

start_shadowdiff() {
  local candidate_port=$1 database_url=$2 run=$3 sample_rate=${4:-1}
  PROXY_PORT=$(free_port)
  ADMIN_PORT=$(free_port)
  SHADOWDIFF_LOG=warn "${BINARY:-$SHADOWDIFF}" serve \
    --listen "127.0.0.1:$PROXY_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --primary "http://127.0.0.1:$PRIMARY_PORT" --secondary "http://127.0.0.1:$SECONDARY_PORT" \
    --candidate "http://127.0.0.1:$candidate_port" --database-url "$database_url" --run "$run" \
    --sample-rate "$sample_rate" \
    2>>"$WORK/shadowdiff.log" &
  PROXY_PIDS=($!)
  wait_port "$PROXY_PORT"
  wait_port "$ADMIN_PORT"
}

stop_proxy() {
  local pid
  if [ -f "$WORK/nginx.pid" ]; then
    nginx -e "$WORK/nginx/error.log" -c "$WORK/nginx.conf" -s quit 2>/dev/null || true
    while [ -f "$WORK/nginx.pid" ]; do sleep 0.05; done
  fi
  for pid in "${PROXY_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  done
  PROXY_PIDS=()
  ADMIN_PORT=
}

# start CONFIG CANDIDATE_PORT RUN: starts one of the configurations.
start() {
  case "$1" in
    direct) start_direct ;;
    nginx) start_nginx "$2" ;;
    nginx-proxy-only) start_nginx "$2" "" ;;
    shadowdiff-sqlite) start_shadowdiff "$2" "sqlite://$WORK/bench.db" "$3" ;;
    shadowdiff-postgres) start_shadowdiff "$2" "$DATABASE_URL" "$3" ;;
    shadowdiff-unshadowed) start_shadowdiff "$2" "sqlite://$WORK/bench.db" "$3" 0 ;;
    before-sqlite) BINARY=$BEFORE start_shadowdiff "$2" "sqlite://$WORK/before.db" "$3" ;;
    before-unshadowed) BINARY=$BEFORE start_shadowdiff "$2" "sqlite://$WORK/before.db" "$3" 0 ;;
  esac
}

# measure PHASE CONFIG REP SECONDS [INTERVAL_MS CONNECTIONS]: one wrk run against the started proxy, with
# RSS sampled every second and shadowdiff's counters read just before and just after; appends a line to the
# results.
measure() {
  local phase=$1 config=$2 rep=$3 seconds=$4 interval=${5:-} connections=${6:-$CONNECTIONS}
  local url="http://127.0.0.1:$PROXY_PORT/api/items?page=1" output rss_max=0 rss sampler
  local before=() after=() requests_delta='' stored_delta=''
  BENCH_INTERVAL_MS=$interval wrk -t"$THREADS" -c"$connections" -d"${WARMUP}s" -s "$WORK/report.lua" "$url" >/dev/null
  (
    while :; do
      rss_kib "${PROXY_PIDS[@]}"
      sleep 1
    done
  ) >"$WORK/rss" 2>/dev/null &
  sampler=$!
  if [ -n "$ADMIN_PORT" ]; then read -r -a before < <(scrape); fi
  output=$(BENCH_INTERVAL_MS=$interval wrk -t"$THREADS" -c"$connections" -d"${seconds}s" --timeout 10s \
    -s "$WORK/report.lua" "$url")
  if [ -n "$ADMIN_PORT" ]; then
    read -r -a after < <(scrape)
    requests_delta=$((after[0] - before[0]))
    stored_delta=$((after[1] - before[1]))
    if [ "${after[2]}" = 0 ] && [ -z "$STORED_WARNED" ]; then
      echo "warning: shadowdiff_exchanges_stored_total is not on /metrics; stored figures are 0" >&2
      STORED_WARNED=1
    fi
  fi
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  if [ ${#PROXY_PIDS[@]} -gt 0 ]; then
    rss_max=$(sort -n "$WORK/rss" | tail -1)
    rss=$(rss_kib "${PROXY_PIDS[@]}")
  else
    rss=0
  fi
  echo "$output" | awk -v phase="$phase" -v config="$config" -v rep="$rep" -v max="${rss_max:-0}" -v end="$rss" \
    -v requests="$requests_delta" -v stored="$stored_delta" '
    /^RESULT/ {
      seconds = $3 / 1e6
      per_s = shed = ""
      if (requests != "") {
        per_s = sprintf("%.0f", stored / seconds)
        if (requests > 0) shed = sprintf("%.2f", 100 * (1 - stored / requests))
      }
      printf "%s\t%s\t%s\t%.0f\t%d\t%d\t%d\t%d\t%d\t%d\t%.2f\t%s\t%s\t%s\t%s\n", phase, config, rep, $2 / seconds,
        $4, $5, $6, $7, max, end, seconds, requests, stored, per_s, shed
    }' | tee -a "$RESULTS"
}

median_of() { # median_of PHASE CONFIG COLUMN
  python3 - "$RESULTS" "$@" <<'PY'
import csv, statistics, sys
path, phase, config, column = sys.argv[1:]
rows = [r for r in csv.DictReader(open(path), delimiter="\t") if r["phase"] == phase and r["config"] == config]
print(int(statistics.median(float(r[column]) for r in rows)))
PY
}

eval "$(scripts/pg.sh start)"
export DATABASE_URL

start_upstream PRIMARY_PORT fast
start_upstream SECONDARY_PORT fast
start_upstream CANDIDATE_PORT fast
CONFIGS=(direct nginx shadowdiff-sqlite shadowdiff-postgres nginx-proxy-only shadowdiff-unshadowed)
# BENCH_BEFORE_BINARY: an earlier build measured in the same rounds (SQLite, shadowed and unshadowed).
BEFORE=${BENCH_BEFORE_BINARY:-}
[ -n "$BEFORE" ] && CONFIGS+=(before-sqlite before-unshadowed)

# The runs of at least 30 s that compare shadowdiff (SQLite) with nginx's mirror are these two's saturation runs.
saturation_seconds() {
  case "$1" in
    shadowdiff-sqlite | nginx) echo "$LONG_DURATION" ;;
    *) echo "$DURATION" ;;
  esac
}

echo "== saturation: $REPS rounds of ${DURATION}s (${LONG_DURATION}s for shadowdiff-sqlite and nginx), $CONNECTIONS connections" >&2
for rep in $(seq 1 "$REPS"); do
  for config in "${CONFIGS[@]}"; do
    start "$config" "$CANDIDATE_PORT" "saturation-$rep"
    measure saturation "$config" "$rep" "$(saturation_seconds "$config")"
    stop_proxy
  done
done

# BENCH_HALF_RATE sets the rate instead (the same rate for a before and an after run).
HALF_RATE=${BENCH_HALF_RATE:-$(($(median_of saturation shadowdiff-sqlite rps) / 2))}
# Each connection waits INTERVAL ms after every answer, so CONNECTIONS x 1000 / INTERVAL is the rate offered.
HALF_INTERVAL=10
HALF_CONNECTIONS=$(((HALF_RATE * HALF_INTERVAL + 999) / 1000))
[ "$HALF_CONNECTIONS" -lt "$THREADS" ] && HALF_CONNECTIONS=$THREADS
echo "== half load: $HALF_RATE requests/s offered ($HALF_CONNECTIONS connections, ${HALF_INTERVAL} ms apart)" >&2
for rep in $(seq 1 "$REPS"); do
  for config in "${CONFIGS[@]}"; do
    start "$config" "$CANDIDATE_PORT" "half-$rep"
    measure half "$config" "$rep" "$DURATION" "$HALF_INTERVAL" "$HALF_CONNECTIONS"
    stop_proxy
  done
done

# The slow candidate takes ten times what primary takes as the caller sees it at half load.
direct_p50=$(median_of half direct p50_us)
SLOW_DELAY_US=$((direct_p50 * 10))
start_upstream SLOW_PORT "delay=${SLOW_DELAY_US}us"
start_upstream HOLE_PORT blackhole
echo "== faults: $REPS rounds of ${FAULT_DURATION}s each at $HALF_RATE requests/s; slow candidate +${SLOW_DELAY_US} us" >&2
# BENCH_FAULT_DURATION=0 leaves the faults out.
[ "$FAULT_DURATION" -gt 0 ] || REPS_FAULTS=0
for rep in $(seq 1 "${REPS_FAULTS:-$REPS}"); do
  for candidate in normal:$CANDIDATE_PORT slow:$SLOW_PORT blackhole:$HOLE_PORT; do
    for config in shadowdiff-sqlite nginx; do
      start "$config" "${candidate#*:}" "fault-${candidate%%:*}-$rep"
      measure "candidate-${candidate%%:*}" "$config" "$rep" "$FAULT_DURATION" "$HALF_INTERVAL" "$HALF_CONNECTIONS"
      stop_proxy
    done
  done
done

{
  echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r)"
  echo "versions: $(nginx -v 2>&1 | tr -d '\n'), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), $($SHADOWDIFF --version)"
  echo "settings: reps=$REPS duration=${DURATION}s long_duration=${LONG_DURATION}s warmup=${WARMUP}s connections=$CONNECTIONS threads=$THREADS half_rate=$HALF_RATE slow_delay=${SLOW_DELAY_US}us fault_duration=${FAULT_DURATION}s"
  echo
  python3 bench/report.py "$RESULTS"
} | tee "$OUT/report.md"
