#!/usr/bin/env bash
# CPU per request at fixed offered rates, beside nginx: what each proxy process spends (user + system, all its
# threads) divided by the requests it answered, with the load paced so that no configuration is saturated and a
# 2-core machine running the load, the upstreams and the proxy can still compare them. Also system calls per
# request (strace -c -f), a profile of the hop (perf, top user-space symbols), and what an idle `serve` spends.
#
#   bench/cpu.sh              about 12 minutes; prints one line per run and tables of medians
#
# Upstreams: one nginx with one worker answering a fixed 100-byte JSON body on three ports (primary, secondary,
# candidate). Configurations: nginx proxy_pass (one worker, keepalive to the upstream), shadowdiff
# --sample-rate 0 (the hop), nginx mirror to secondary and candidate (compares nothing), shadowdiff shadowing and
# comparing every request (SQLite store). Load: wrk whose connections each wait BENCH_DELAY_MS (10 ms) between
# requests, at three connection counts (16, 32, 64: about 1 500, 3 000 and 6 000 requests/s offered), each
# configuration in turn within each round. CPU from /proc/PID/stat (user + system of all the process's threads;
# nginx: its worker) before and after each run.
# Settings (environment): BENCH_REPS (3), BENCH_DURATION (10 s per run, after 2 s of warm-up), BENCH_RATES
# ("16 32 64" connections), BENCH_DELAY_MS (10), BENCH_IDLE_SECONDS (60), BENCH_BINARY (another shadowdiff
# binary), BENCH_SKIP ("strace perf idle": any of them left out).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_rust
ensure_commands wrk:wrk nginx:nginx strace:strace perf:linux-perf curl:curl

REPS=${BENCH_REPS:-3}
DURATION=${BENCH_DURATION:-10}
RATES=${BENCH_RATES:-16 32 64}
DELAY_MS=${BENCH_DELAY_MS:-10}
IDLE_SECONDS=${BENCH_IDLE_SECONDS:-60}
SKIP=${BENCH_SKIP:-}
cargo build --release --quiet --bin shadowdiff
SHADOWDIFF=${BENCH_BINARY:-target/release/shadowdiff}

WORK=$(mktemp -d)
PIDS=()
NGINX_CONFS=()
cleanup() {
  for conf in "${NGINX_CONFS[@]}"; do nginx -e "$WORK/error.log" -c "$conf" -s quit 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/paced.lua" <<LUA
-- Each connection waits this long after an answer before its next request: an offered rate, not saturation.
function delay() return $DELAY_MS end
LUA

# nginx_conf NAME BODY: writes an nginx configuration with one worker and the http block's BODY.
nginx_conf() {
  local conf="$WORK/$1.conf"
  mkdir -p "$WORK/$1"
  cat >"$conf" <<NGINX
worker_processes 1;
pid $WORK/$1.pid;
error_log $WORK/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/$1/body; proxy_temp_path $WORK/$1/proxy;
  fastcgi_temp_path $WORK/$1/fastcgi; uwsgi_temp_path $WORK/$1/uwsgi; scgi_temp_path $WORK/$1/scgi;
  keepalive_requests 1000000;
  $2
}
NGINX
  nginx -e "$WORK/error.log" -c "$conf" -g 'daemon on;'
  NGINX_CONFS+=("$conf")
}

# nginx_worker NAME: the pid of that nginx's (only) worker.
nginx_worker() {
  pgrep -P "$(cat "$WORK/$1.pid")" | head -1
}

P=$(free_port) S=$(free_port) C=$(free_port)
BODY='{"id":42,"name":"ada lovelace","email":"ada@example.com","roles":["admin","author"],"active":true}'
answer="default_type application/json; location / { return 200 '$BODY'; }"
nginx_conf upstreams "
  server { listen 127.0.0.1:$P backlog=4096; $answer }
  server { listen 127.0.0.1:$S backlog=4096; $answer }
  server { listen 127.0.0.1:$C backlog=4096; $answer }"
wait_port "$P"

declare -A PORTS PIDOF
CONFIGS=()

PASS_PORT=$(free_port)
nginx_conf pass "
  upstream primary { server 127.0.0.1:$P; keepalive 128; }
  proxy_http_version 1.1;
  proxy_set_header Connection \"\";
  server { listen 127.0.0.1:$PASS_PORT backlog=4096; location / { proxy_pass http://primary; } }"
wait_port "$PASS_PORT"
PORTS[nginx-proxy-pass]=$PASS_PORT
PIDOF[nginx-proxy-pass]=$(nginx_worker pass)
CONFIGS+=(nginx-proxy-pass)

start_shadowdiff() { # start_shadowdiff NAME SAMPLE_RATE
  local port admin
  port=$(free_port)
  admin=$(free_port)
  SHADOWDIFF_LOG=warn "$SHADOWDIFF" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --primary "http://127.0.0.1:$P" --secondary "http://127.0.0.1:$S" --candidate "http://127.0.0.1:$C" \
    --database-url "sqlite://$WORK/$1.sqlite" --run cpu --sample-rate "$2" >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  PIDOF[$1]=$!
  wait_port "$port"
  PORTS[$1]=$port
  CONFIGS+=("$1")
}
start_shadowdiff shadowdiff-hop 0

MIRROR_PORT=$(free_port)
nginx_conf mirror "
  upstream primary { server 127.0.0.1:$P; keepalive 128; }
  upstream secondary { server 127.0.0.1:$S; keepalive 128; }
  upstream candidate { server 127.0.0.1:$C; keepalive 128; }
  proxy_http_version 1.1;
  proxy_set_header Connection \"\";
  server {
    listen 127.0.0.1:$MIRROR_PORT backlog=4096;
    location / { mirror /secondary; mirror /candidate; proxy_pass http://primary; }
    location = /secondary { internal; proxy_pass http://secondary\$request_uri; }
    location = /candidate { internal; proxy_pass http://candidate\$request_uri; }
  }"
wait_port "$MIRROR_PORT"
PORTS[nginx-mirror]=$MIRROR_PORT
PIDOF[nginx-mirror]=$(nginx_worker mirror)
CONFIGS+=(nginx-mirror)

start_shadowdiff shadowdiff-shadowing 1

# cpu_ns PID: nanoseconds of CPU (user + system) the process has used so far, its threads that ended included
# (/proc/PID/stat, in clock ticks: 10 ms each, a 1 % error over a run's second of CPU).
TICK_NS=$((1000000000 / $(getconf CLK_TCK)))
cpu_ns() {
  awk -v tick="$TICK_NS" '{ sub(/^.*\) /, ""); printf "%.0f\n", ($12 + $13) * tick }' /proc/"$1"/stat
}

# paced CONNECTIONS URL SECONDS: wrk at the paced rate; prints the requests it completed.
paced() {
  wrk -t2 -c"$1" -d"$3s" -s "$WORK/paced.lua" "$2" | awk '/requests in/ { print $1 }'
}

RESULTS="$WORK/results.tsv"
echo "round	configuration	connections	requests/s	CPU µs per request"
for round in $(seq "$REPS"); do
  for connections in $RATES; do
    for config in "${CONFIGS[@]}"; do
      url="http://127.0.0.1:${PORTS[$config]}/"
      paced "$connections" "$url" 2 >/dev/null
      before=$(cpu_ns "${PIDOF[$config]}")
      requests=$(paced "$connections" "$url" "$DURATION")
      after=$(cpu_ns "${PIDOF[$config]}")
      per_request=$(awk -v a="$before" -v b="$after" -v n="$requests" 'BEGIN { printf "%.1f", (b - a) / 1000 / n }')
      rps=$(awk -v n="$requests" -v d="$DURATION" 'BEGIN { printf "%.0f", n / d }')
      printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$config" "$connections" "$rps" "$per_request" | tee -a "$RESULTS"
    done
  done
done

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo
echo "| configuration | connections | requests/s | CPU µs per request (median of $REPS) | against nginx proxy_pass |"
echo "|---|---|---|---|---|"
for connections in $RATES; do
  anchor=$(awk -F'\t' -v c="$connections" '$2 == "nginx-proxy-pass" && $3 == c { print $5 }' "$RESULTS" | median)
  for config in "${CONFIGS[@]}"; do
    rps=$(awk -F'\t' -v k="$config" -v c="$connections" '$2 == k && $3 == c { print $4 }' "$RESULTS" | median)
    cpu=$(awk -F'\t' -v k="$config" -v c="$connections" '$2 == k && $3 == c { print $5 }' "$RESULTS" | median)
    ratio=$(awk -v a="$cpu" -v b="$anchor" 'BEGIN { printf "%.2f", a / b }')
    printf '| %s | %s | %s | %s | %sx |\n' "$config" "$connections" "$rps" "$cpu" "$ratio"
  done
done

first_rate=${RATES%% *}
if [[ " $SKIP " != *" strace "* ]]; then
  echo
  echo "System calls per request (strace -c -f, $first_rate connections, $DURATION s; strace slows each process):"
  echo "| configuration | calls per request | the most frequent (per request) |"
  echo "|---|---|---|"
  for config in "${CONFIGS[@]}"; do
    url="http://127.0.0.1:${PORTS[$config]}/"
    strace -c -f -q -o "$WORK/$config.strace" -p "${PIDOF[$config]}" &
    tracer=$!
    sleep 1
    requests=$(paced "$first_rate" "$url" "$DURATION")
    kill -INT "$tracer" 2>/dev/null || true
    wait "$tracer" 2>/dev/null || true
    # strace -c: % time, seconds, usecs/call, calls, [errors,] syscall; the last line totals.
    awk -v n="$requests" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { printf "%s %.2f\n", $NF, $4 / n }' \
      "$WORK/$config.strace" | sort -k2 -gr >"$WORK/$config.calls"
    total=$(awk '{ sum += $2 } END { printf "%.1f", sum }' "$WORK/$config.calls")
    top=$(head -5 "$WORK/$config.calls" | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }')
    printf '| %s | %s | %s |\n' "$config" "$total" "$top"
  done
fi

if [[ " $SKIP " != *" perf "* ]]; then
  echo
  echo "Where the hop spends its time ($first_rate connections, perf cpu-clock, top user-space and kernel symbols):"
  url="http://127.0.0.1:${PORTS[shadowdiff-hop]}/"
  perf record -q -e cpu-clock -F 999 -o "$WORK/hop.perf" -p "${PIDOF[shadowdiff-hop]}" -- sleep "$DURATION" \
    >/dev/null 2>&1 &
  recorder=$!
  paced "$first_rate" "$url" "$DURATION" >/dev/null
  wait "$recorder" 2>/dev/null || true
  perf report -q -i "$WORK/hop.perf" --sort dso,symbol -g none --stdio >"$WORK/hop.report" 2>/dev/null || true
  grep '%' "$WORK/hop.report" | cut -c1-120 | sed -E 's/ +$//' | sed -n 1,25p
  awk '/%/ { share = $1; sub("%", "", share); if ($2 ~ /kernel/) kernel += share; else user += share }
       END { printf "kernel %.1f %%, user space %.1f %% of the samples\n", kernel, user }' "$WORK/hop.report"
fi

if [[ " $SKIP " != *" idle "* ]]; then
  echo
  pid=${PIDOF[shadowdiff-shadowing]}
  sleep 5
  before=$(cpu_ns "$pid")
  sleep "$IDLE_SECONDS"
  after=$(cpu_ns "$pid")
  awk -v a="$before" -v b="$after" -v s="$IDLE_SECONDS" \
    'BEGIN { printf "An idle serve (shadowing on, after traffic): %.3f %% of a core over %d s\n", (b - a) / 1e7 / s, s }'
fi
echo
echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo); $(nginx -v 2>&1 | tr -d '\n'); $($SHADOWDIFF --version)"
