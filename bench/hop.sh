#!/usr/bin/env bash
# The proxy's own hop against the stack it is built on and against nginx: saturated requests/s and p99 of
# nginx's proxy_pass, of examples/bare_proxy.rs (hyper's server and hyper-util's pooled client and nothing else)
# on a multi-threaded runtime, on a single-threaded runtime per core with SO_REUSEPORT listeners, and on one per
# core all accepting from one listening socket, and of
# shadowdiff --sample-rate 0 (BENCH_BEFORE_BINARY too, if given), each in turn within each round.
#
#   bench/hop.sh              about 3 minutes; prints one line per run and a table of medians
#
# One local upstream (examples/bench_upstream.rs, fast), load from wrk. Settings (environment): BENCH_REPS (3),
# BENCH_DURATION (6 s per measured run, after 2 s of warm-up), BENCH_CONNECTIONS (64), BENCH_THREADS (2),
# BENCH_BEFORE_BINARY (an earlier shadowdiff build, measured in the same rounds).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_rust
ensure_commands wrk:wrk nginx:nginx

REPS=${BENCH_REPS:-3}
DURATION=${BENCH_DURATION:-6}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}

cargo build --release --quiet --bin shadowdiff --example bench_upstream --example bare_proxy
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  [ -f "$WORK/nginx.pid" ] && nginx -e "$WORK/error.log" -c "$WORK/nginx.conf" -s quit 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

UPSTREAM_PORT=$(free_port)
target/release/examples/bench_upstream "127.0.0.1:$UPSTREAM_PORT" fast &
PIDS+=($!)
wait_port "$UPSTREAM_PORT"

declare -A PORTS
start() { # start NAME PORT COMMAND...
  local name=$1 port=$2
  shift 2
  "$@" &
  PIDS+=($!)
  wait_port "$port"
  PORTS[$name]=$port
}

NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body; proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi; uwsgi_temp_path $WORK/nginx/uwsgi; scgi_temp_path $WORK/nginx/scgi;
  upstream primary { server 127.0.0.1:$UPSTREAM_PORT; keepalive 128; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    keepalive_requests 1000000;
    location / { proxy_pass http://primary; }
  }
}
NGINX
nginx -e "$WORK/error.log" -c "$WORK/nginx.conf" -g 'daemon on;'
wait_port "$NGINX_PORT"
PORTS[nginx-proxy-pass]=$NGINX_PORT
CONFIGS=(nginx-proxy-pass)

port=$(free_port)
start bare-multi-thread "$port" target/release/examples/bare_proxy "127.0.0.1:$port" "127.0.0.1:$UPSTREAM_PORT"
port=$(free_port)
BARE_RUNTIME=per-core start bare-per-core "$port" \
  target/release/examples/bare_proxy "127.0.0.1:$port" "127.0.0.1:$UPSTREAM_PORT"
port=$(free_port)
BARE_RUNTIME=per-core-shared start bare-per-core-shared "$port" \
  target/release/examples/bare_proxy "127.0.0.1:$port" "127.0.0.1:$UPSTREAM_PORT"
CONFIGS+=(bare-multi-thread bare-per-core bare-per-core-shared)

start_shadowdiff() { # start_shadowdiff NAME BINARY
  local port admin
  port=$(free_port)
  admin=$(free_port)
  SHADOWDIFF_LOG=warn start "$1" "$port" "$2" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --primary "http://127.0.0.1:$UPSTREAM_PORT" --secondary "http://127.0.0.1:$UPSTREAM_PORT" \
    --candidate "http://127.0.0.1:$UPSTREAM_PORT" --database-url "sqlite://$WORK/$1.sqlite" --run hop \
    --sample-rate 0
  CONFIGS+=("$1")
}
start_shadowdiff shadowdiff-unshadowed target/release/shadowdiff
if [ -n "${BENCH_BEFORE_BINARY:-}" ]; then
  start_shadowdiff before-unshadowed "$BENCH_BEFORE_BINARY"
fi

RESULTS="$WORK/results.tsv"
for round in $(seq "$REPS"); do
  for config in "${CONFIGS[@]}"; do
    url="http://127.0.0.1:${PORTS[$config]}/"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$url" >/dev/null 2>&1
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    printf '%s\t%s\t%s\t%s\n' "$round" "$config" "$rps" "$p99" | tee -a "$RESULTS"
  done
done

echo
echo "| configuration | requests/s (median of $REPS) | against nginx proxy_pass | p99 (median) |"
echo "|---|---|---|---|"
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
to_ms() { sed -E 's/([0-9.]+)us$/\1e-3/; s/([0-9.]+)ms$/\1/; s/([0-9.]+)s$/\1e3/' | awk '{ printf "%.2f\n", $1 }'; }
nginx_rps=$(awk -F'\t' '$2 == "nginx-proxy-pass" { print $3 }' "$RESULTS" | median)
for config in "${CONFIGS[@]}"; do
  rps=$(awk -F'\t' -v c="$config" '$2 == c { print $3 }' "$RESULTS" | median)
  p99=$(awk -F'\t' -v c="$config" '$2 == c { print $4 }' "$RESULTS" | to_ms | median)
  ratio=$(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN { printf "%.2f", a / b }')
  printf '| %s | %.0f | %sx | %s ms |\n' "$config" "$rps" "$ratio" "$p99"
done
