#!/usr/bin/env bash
# Soak: shadowdiff serving on PostgreSQL at saturation for five minutes, with awkward traffic and two faults;
# measures its resident memory, what the callers see, and whether every request is accounted for.
#
#   bench/soak.sh                 full run (about 6 minutes); prints a Markdown report, keeps raw files
#   SOAK_DURATION=60 SOAK_FAULT_AT=10 SOAK_FAULT_FOR=15 SOAK_PG_DOWN_AT=35 SOAK_PG_DOWN_FOR=15 bench/soak.sh
#                                 a short check of the same
#
# Three upstreams (examples/bench_upstream.rs with --soak: answers derived from the path, with noise; the
# candidate renames or retypes a field on some paths), `shadowdiff serve --allow-side-effects` in front of them
# on a throwaway PostgreSQL cluster (scripts/pg.sh), and wrk with SOAK_CONNECTIONS connections as fast as it
# can, through bench/soak.lua: GETs over 100 000 distinct slug paths (words, no digits: shadowdiff has to learn
# {param} templates), a Canonical-Resource header naming one of 5 000 endpoints on a fifth of them (past
# --max-endpoints), GET /export/... answered with about 1 MiB of JSON on 1 % of requests, and POSTs with
# gzip-compressed JSON bodies on 5 % (a tenth of those decode to 2 to 4 MiB).
# Faults: the candidate is a black hole (accepts, never answers) from SOAK_FAULT_AT for SOAK_FAULT_FOR seconds
# (SIGUSR1/SIGUSR2 to its `switchable` upstream), and PostgreSQL is stopped from SOAK_PG_DOWN_AT for
# SOAK_PG_DOWN_FOR seconds (scripts/pg.sh pause/resume).
# Sampled: shadowdiff's VmRSS every second, its /metrics every SOAK_METRICS_EVERY seconds. After wrk stops,
# the script waits until shadowdiff is idle (queues empty, no shadow in flight, no rows pending; at most
# SOAK_DRAIN_MAX seconds), scrapes /metrics, counts the stored requests in PostgreSQL, and checks the balance
#   requests = unshadowed + dropped(exchanges) + analysis failures + dropped(analyses) + store dropped(exchange)
#              + stored
# Targets: peak RSS under 256 MiB; no caller-visible errors (wrk's non-2xx and socket errors: the caller's
# answer comes from primary, which never fails here); the balance holds exactly.
#
# Settings (environment): SOAK_DURATION (300 s), SOAK_FAULT_AT (60 s), SOAK_FAULT_FOR (60 s), SOAK_PG_DOWN_AT
# (180 s), SOAK_PG_DOWN_FOR (60 s) (a fault from SOAK_DURATION on is skipped; one that would outlast the load
# ends with it), SOAK_CONNECTIONS (64), SOAK_THREADS (2), SOAK_METRICS_EVERY (5 s), SOAK_DRAIN_MAX (60 s),
# SOAK_WINDOW (rows of the RSS table: 60 s, or 10 s for runs under 3 minutes), SOAK_OUT (target/bench/soak);
# the traffic mix through bench/soak.lua's SOAK_*_SHARE and SOAK_RESOURCES. CARGO_TARGET_DIR is honoured
# (binaries from ${CARGO_TARGET_DIR:-target}/release).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_rust
ensure_commands wrk:wrk python3:python3 curl:curl psql:postgresql-client
ensure_postgres_server

DURATION=${SOAK_DURATION:-300}
FAULT_AT=${SOAK_FAULT_AT:-60}
FAULT_FOR=${SOAK_FAULT_FOR:-60}
PG_DOWN_AT=${SOAK_PG_DOWN_AT:-180}
PG_DOWN_FOR=${SOAK_PG_DOWN_FOR:-60}
CONNECTIONS=${SOAK_CONNECTIONS:-64}
THREADS=${SOAK_THREADS:-2}
METRICS_EVERY=${SOAK_METRICS_EVERY:-5}
DRAIN_MAX=${SOAK_DRAIN_MAX:-60}
WINDOW=${SOAK_WINDOW:-}
OUT=${SOAK_OUT:-target/bench/soak}
RUN=soak

cargo build --release --quiet --bin shadowdiff --example bench_upstream
TARGET_DIR=${CARGO_TARGET_DIR:-target}
SHADOWDIFF=$TARGET_DIR/release/shadowdiff
UPSTREAM=$TARGET_DIR/release/examples/bench_upstream

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/{rss.tsv,metrics.log,metrics-final.txt,events.tsv,wrk.txt,db.tsv,drain.tsv,shutdown.tsv,report.md}
rm -f "$OUT"/{shadowdiff.log,upstreams.log,command.txt,settings.tsv,machine.tsv,status-idle.txt}
WORK=$(mktemp -d)
PIDS=()
SAMPLERS=()
WRK_PID=
SHADOWDIFF_PID=
CANDIDATE_PID=
PG_DIR=

cleanup() {
  local pid
  trap - INT TERM
  for pid in "${SAMPLERS[@]}" $WRK_PID; do kill "$pid" 2>/dev/null || true; done
  if [ -n "$SHADOWDIFF_PID" ] && kill -0 "$SHADOWDIFF_PID" 2>/dev/null; then
    kill -TERM "$SHADOWDIFF_PID" 2>/dev/null || true
    # Its graceful shutdown waits for callers and shadows; do not wait for it forever.
    for _ in $(seq 1 100); do kill -0 "$SHADOWDIFF_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SHADOWDIFF_PID" 2>/dev/null || true
  fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -n "$PG_DIR" ] && scripts/pg.sh stop "$PG_DIR" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

START_NS=
elapsed() { # seconds since the load started, with milliseconds
  local ns=$(($(date +%s%N) - START_NS))
  printf '%d.%03d' $((ns / 1000000000)) $((ns / 1000000 % 1000))
}
sleep_until() { # sleep_until SECONDS: sleeps until that long after the load started
  local ms=$(((START_NS + $1 * 1000000000 - $(date +%s%N)) / 1000000))
  [ "$ms" -gt 0 ] && sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
  return 0
}
event() { # event WHAT: notes an event with its time, for the report
  printf '%s\t%s\n' "$(elapsed)" "$1" | tee -a "$OUT/events.tsv" >&2
}

# Request bodies for the POSTs: gzip-compressed JSON, eight small ones (a comment of about 2 KB) and three
# big ones that decode to 2, 3 and 4 MiB (comments with a long list of words, which compresses about 5:1).
mkdir -p "$WORK/payloads"
python3 - "$WORK/payloads" >"$WORK/payloads.txt" <<'PY'
import gzip, json, os, random, sys
out = sys.argv[1]
rng = random.Random(42)
words = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
         "dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea "
         "commodo consequat").split()
def text(n):
    return " ".join(rng.choice(words) for _ in range(n))
for i in range(8):
    doc = {"author": f"reader {text(2)}", "body": text(250), "rating": rng.randint(1, 5),
           "tags": [rng.choice(words) for _ in range(5)]}
    path = os.path.join(out, f"small-{i}.json.gz")
    with open(path, "wb") as f:
        f.write(gzip.compress(json.dumps(doc).encode(), 6))
    print("small", path)
for i, mib in enumerate([2, 3, 4]):
    entries, size = [], 0
    while size < mib << 20:
        entry = {"line": len(entries), "quote": text(40), "score": rng.random()}
        entries.append(entry)
        size += len(json.dumps(entry)) + 1
    doc = {"author": "bulk importer", "attachments": entries}
    path = os.path.join(out, f"big-{i}.json.gz")
    with open(path, "wb") as f:
        f.write(gzip.compress(json.dumps(doc).encode(), 6))
    print("big", path)
PY
PAYLOAD_SUMMARY=$(python3 - "$WORK/payloads.txt" <<'PY'
import gzip, sys
sizes = {}
for line in open(sys.argv[1]):
    kind, path = line.split()
    raw = open(path, "rb").read()
    sizes.setdefault(kind, []).append((len(raw), len(gzip.decompress(raw))))
def kib(values):
    values = sorted(values)
    if len(values) > 3:
        return f"{values[0] / 1024:.1f} to {values[-1] / 1024:.1f}"
    return "/".join(f"{v / 1024:.0f}" for v in values)
print("; ".join(
    f"{len(s)} {kind} (gzip {kib(c for c, _ in s)} KiB, decoded {kib(d for _, d in s)} KiB)"
    for kind, s in sizes.items()))
PY
)

# start_upstream VARIABLE ARGS...: starts one upstream and sets VARIABLE to its port (not in a subshell, so
# that the cleanup knows the process); LAST_PID is its pid.
start_upstream() {
  local var=$1 port
  shift
  port=$(free_port)
  "$UPSTREAM" "127.0.0.1:$port" "$@" 2>>"$OUT/upstreams.log" &
  PIDS+=($!)
  LAST_PID=$!
  wait_port "$port"
  printf -v "$var" '%s' "$port"
}

eval "$(scripts/pg.sh start)"
start_upstream PRIMARY_PORT fast --soak
start_upstream SECONDARY_PORT fast --soak
start_upstream CANDIDATE_PORT switchable --soak --variant candidate
CANDIDATE_PID=$LAST_PID

PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
COMMAND=("$SHADOWDIFF" serve
  --primary "http://127.0.0.1:$PRIMARY_PORT" --secondary "http://127.0.0.1:$SECONDARY_PORT"
  --candidate "http://127.0.0.1:$CANDIDATE_PORT"
  --listen "127.0.0.1:$PROXY_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT"
  --database-url "$DATABASE_URL" --run "$RUN" --allow-side-effects --log-format json)
printf '%q ' "${COMMAND[@]}" | sed 's/ $//' >"$OUT/command.txt"
"${COMMAND[@]}" >>"$OUT/shadowdiff.log" 2>&1 &
SHADOWDIFF_PID=$!
wait_port "$PROXY_PORT"
wait_port "$ADMIN_PORT"
METRICS_URL="http://127.0.0.1:$ADMIN_PORT/metrics"

{
  printf 'duration_s\t%s\n' "$DURATION"
  printf 'fault_at_s\t%s\nfault_for_s\t%s\n' "$FAULT_AT" "$FAULT_FOR"
  printf 'pg_down_at_s\t%s\npg_down_for_s\t%s\n' "$PG_DOWN_AT" "$PG_DOWN_FOR"
  printf 'connections\t%s\nthreads\t%s\n' "$CONNECTIONS" "$THREADS"
  printf 'metrics_every_s\t%s\ndrain_max_s\t%s\nwindow_s\t%s\n' "$METRICS_EVERY" "$DRAIN_MAX" "$WINDOW"
  printf 'payloads\t%s\n' "$PAYLOAD_SUMMARY"
  printf 'wrk_command\t%s\n' "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --timeout 10s --latency -s bench/soak.lua http://127.0.0.1:$PROXY_PORT/"
} >"$OUT/settings.tsv"
{
  printf 'cores\t%s\n' "$(nproc)"
  printf 'cpu\t%s\n' "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  printf 'memory\t%s MiB\n' "$(awk '/^MemTotal:/ {printf "%d", $2 / 1024}' /proc/meminfo)"
  printf 'kernel\t%s\n' "$(uname -r)"
  printf 'shadowdiff\t%s\n' "$("$SHADOWDIFF" --version)"
  printf 'wrk\t%s\n' "$(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
  printf 'postgresql\t%s\n' "$(psql "$DATABASE_URL" -Atc 'SHOW server_version')"
} >"$OUT/machine.tsv"

START_NS=$(date +%s%N)
echo "== soak: ${DURATION}s at saturation ($CONNECTIONS connections); output in $OUT" >&2

# Samplers: VmRSS every second (until shadowdiff exits), /metrics every METRICS_EVERY seconds.
(
  while [ -r "/proc/$SHADOWDIFF_PID/status" ]; do
    kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$SHADOWDIFF_PID/status" 2>/dev/null || true)
    [ -n "$kib" ] && printf '%s\t%s\n' "$(elapsed)" "$kib"
    sleep 1
  done
) >"$OUT/rss.tsv" 2>/dev/null &
SAMPLERS+=($!)
(
  while :; do
    t=$(elapsed)
    if text=$(curl -sf --max-time 5 "$METRICS_URL"); then
      printf '# scrape %s\n%s\n' "$t" "$text"
    fi
    sleep "$METRICS_EVERY"
  done
) >"$OUT/metrics.log" 2>/dev/null &
SAMPLERS+=($!)

SOAK_PAYLOADS="$WORK/payloads.txt" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s --latency \
  -s bench/soak.lua "http://127.0.0.1:$PROXY_PORT/" >"$OUT/wrk.txt" 2>&1 &
WRK_PID=$!
event "load started"

# The faults, in time order; a fault that starts at or past the end of the load is skipped.
EVENTS=()
if [ "$FAULT_FOR" -gt 0 ] && [ "$FAULT_AT" -lt "$DURATION" ]; then
  EVENTS+=("$FAULT_AT hole_on" "$((FAULT_AT + FAULT_FOR)) hole_off")
fi
if [ "$PG_DOWN_FOR" -gt 0 ] && [ "$PG_DOWN_AT" -lt "$DURATION" ]; then
  EVENTS+=("$PG_DOWN_AT pg_pause" "$((PG_DOWN_AT + PG_DOWN_FOR)) pg_resume")
fi
HOLE=0
PG_PAUSED=0
if [ ${#EVENTS[@]} -gt 0 ]; then
  while read -r at what; do
    # A fault that would outlast the load ends with it.
    [ "$at" -gt "$DURATION" ] && at=$DURATION
    sleep_until "$at"
    case "$what" in
      hole_on) kill -USR1 "$CANDIDATE_PID"; HOLE=1; event "candidate black-holed" ;;
      hole_off) kill -USR2 "$CANDIDATE_PID"; HOLE=0; event "candidate answers again" ;;
      pg_pause) event "stopping PostgreSQL"; scripts/pg.sh pause "$PG_DIR"; PG_PAUSED=1; event "PostgreSQL stopped" ;;
      pg_resume) event "starting PostgreSQL"; scripts/pg.sh resume "$PG_DIR"; PG_PAUSED=0; event "PostgreSQL started" ;;
    esac
  done < <(printf '%s\n' "${EVENTS[@]}" | sort -n -k1,1)
fi

WRK_STATUS=0
wait "$WRK_PID" || WRK_STATUS=$?
WRK_PID=
event "load stopped (wrk exit $WRK_STATUS)"
[ "$HOLE" = 1 ] && { kill -USR2 "$CANDIDATE_PID"; event "candidate answers again"; }
[ "$PG_PAUSED" = 1 ] && { scripts/pg.sh resume "$PG_DIR"; event "PostgreSQL started"; }

# metric NAME_WITH_LABELS FILE: the value of one sample line (0 when absent).
metric() {
  awk -v key="$1" '$1 == key {v = $2} END {print (v == "" ? 0 : v)}' "$2"
}

# Wait until shadowdiff is idle: both queues empty, no shadow in flight, no rows pending, and nothing queued or
# written between three polls in a row (an exchange being analysed or a batch being written shows in none of the
# gauges).
SHADOWDIFF_ALIVE=1
kill -0 "$SHADOWDIFF_PID" 2>/dev/null || SHADOWDIFF_ALIVE=0
QUIESCENT=0
if [ "$SHADOWDIFF_ALIVE" = 1 ]; then
  printf 'elapsed_s\tqueue_exchanges\tqueue_analyses\tinflight\tpending_rows\tqueued\twrites\n' >"$OUT/drain.tsv"
  drain_start=$(date +%s)
  stable=0
  previous=
  while [ $(($(date +%s) - drain_start)) -lt "$DRAIN_MAX" ]; do
    if curl -sf --max-time 5 "$METRICS_URL" >"$WORK/scrape"; then
      qe=$(metric 'shadowdiff_queue_depth{queue="exchanges"}' "$WORK/scrape")
      qa=$(metric 'shadowdiff_queue_depth{queue="analyses"}' "$WORK/scrape")
      inflight=$(awk '$1 ~ /^shadowdiff_shadow_inflight\{/ {s += $2} END {print s + 0}' "$WORK/scrape")
      pending=$(metric shadowdiff_store_pending_rows "$WORK/scrape")
      queued=$(awk '$1 ~ /^shadowdiff_queued_total\{/ {s += $2} END {print s + 0}' "$WORK/scrape")
      writes=$(awk '$1 ~ /^shadowdiff_store_writes_total\{/ {s += $2} END {print s + 0}' "$WORK/scrape")
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(elapsed)" "$qe" "$qa" "$inflight" "$pending" "$queued" "$writes" >>"$OUT/drain.tsv"
      now="$qe $qa $inflight $pending $queued $writes"
      if [ "$qe $qa $inflight $pending" = "0 0 0 0" ] && [ "$now" = "$previous" ]; then
        stable=$((stable + 1))
      else
        stable=0
      fi
      previous=$now
      if [ "$stable" -ge 2 ]; then
        QUIESCENT=1
        break
      fi
    fi
    sleep 1
  done
  event "drain $([ "$QUIESCENT" = 1 ] && echo done || echo "gave up after ${DRAIN_MAX}s")"
  # Where the resident memory is, once idle (anonymous or file-backed; threads; open files and sockets).
  { cat "/proc/$SHADOWDIFF_PID/status"; echo "Fds: $(ls "/proc/$SHADOWDIFF_PID/fd" | wc -l)"; } \
    >"$OUT/status-idle.txt" 2>/dev/null || true
  curl -sf --max-time 5 "$METRICS_URL" >"$OUT/metrics-final.txt" || true
fi

# What the store holds for the run.
sql() { psql "$DATABASE_URL" -Atq -v ON_ERROR_STOP=1 -c "$1"; }
RUN_IDS="SELECT id FROM runs WHERE label = '$RUN'"
store_facts() { # store_facts PREFIX: one line per fact
  printf '%s_requests\t%s\n' "$1" "$(sql "SELECT COALESCE(SUM(value),0) FROM endpoint_counters WHERE name = 'requests' AND run_id IN ($RUN_IDS)")"
  printf '%s_endpoints\t%s\n' "$1" "$(sql "SELECT COUNT(DISTINCT endpoint) FROM endpoint_counters WHERE run_id IN ($RUN_IDS)")"
  printf '%s_other_requests\t%s\n' "$1" "$(sql "SELECT COALESCE(SUM(value),0) FROM endpoint_counters WHERE name = 'requests' AND endpoint LIKE '% {other}' AND run_id IN ($RUN_IDS)")"
  printf '%s_templates\t%s\n' "$1" "$(sql "SELECT COUNT(*) FROM endpoint_templates")"
  printf '%s_template_list\t%s\n' "$1" "$(sql "SELECT string_agg(method || ' ' || segments || ' ' || CASE WHEN prefix = '' THEN '(root)' ELSE prefix END, '; ' ORDER BY prefix) FROM endpoint_templates")"
  printf '%s_samples\t%s\n' "$1" "$(sql "SELECT COUNT(*) FROM samples WHERE run_id IN ($RUN_IDS)")"
  printf '%s_top_endpoints\t%s\n' "$1" "$(sql "SELECT string_agg(endpoint || '=' || n, '; ') FROM (SELECT endpoint, SUM(value) AS n FROM endpoint_counters WHERE name = 'requests' AND run_id IN ($RUN_IDS) GROUP BY endpoint ORDER BY n DESC LIMIT 8) t")"
}
store_facts db >"$OUT/db.tsv" || echo "warning: the store could not be queried" >&2
event "store queried"

# Graceful shutdown; then the store once more, to see whether shutdown still wrote anything.
SHUTDOWN_STATUS=
if [ "$SHADOWDIFF_ALIVE" = 1 ]; then
  shutdown_start=$(date +%s%N)
  kill -TERM "$SHADOWDIFF_PID"
  SHUTDOWN_STATUS=0
  wait "$SHADOWDIFF_PID" || SHUTDOWN_STATUS=$?
  printf 'exit_status\t%s\nshutdown_ms\t%s\n' "$SHUTDOWN_STATUS" $((($(date +%s%N) - shutdown_start) / 1000000)) >"$OUT/shutdown.tsv"
else
  SHUTDOWN_STATUS=0
  wait "$SHADOWDIFF_PID" || SHUTDOWN_STATUS=$?
  printf 'died_during_run\t1\nexit_status\t%s\n' "$SHUTDOWN_STATUS" >"$OUT/shutdown.tsv"
fi
SHADOWDIFF_PID=
store_facts after_shutdown >>"$OUT/db.tsv" || true
for pid in "${SAMPLERS[@]}"; do kill "$pid" 2>/dev/null || true; done
SAMPLERS=()

python3 bench/soak_report.py "$OUT" | tee "$OUT/report.md"
