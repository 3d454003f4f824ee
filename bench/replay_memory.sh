#!/usr/bin/env bash
# Replay's memory on a 1 GB HAR file: a browser session whose entries mostly belong to a CDN (4 KiB to 1 MiB
# response bodies, as exports hold them) with one API entry in fifty, replayed with the default host (a first
# streaming pass finds it) into SQLite, through three local upstreams (examples/bench_upstream.rs).
#
#   bench/replay_memory.sh          about two minutes; prints the file size, time and peak RSS of the replay
#
# Settings (environment): BENCH_HAR_BYTES (1073741824), BENCH_OUT (target/bench/replay).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_rust
ensure_commands python3:python3

BYTES=${BENCH_HAR_BYTES:-1073741824}
OUT=${BENCH_OUT:-target/bench/replay}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cargo build --release --quiet --bin shadowdiff --example bench_upstream

HAR="$OUT/session.har"
python3 - "$HAR" "$BYTES" <<'PY'
import json, sys
path, target = sys.argv[1], int(sys.argv[2])
sizes = [4096, 65536, 1 << 20]
with open(path, "w") as out:
    out.write('{"log": {"version": "1.2", "creator": {"name": "bench", "version": "1"}, "entries": [\n')
    n = 0
    written = 0
    while written < target:
        if n % 50 == 0:
            url, text = f"https://api.example.com/users/{n // 50}", '{"id": 1}'
        else:
            url, text = f"https://cdn.example.net/assets/{n}.woff2", "A" * sizes[n % 3]
        entry = json.dumps({
            "startedDateTime": "2026-11-23T10:15:00.123Z",
            "request": {"method": "GET", "url": url, "headers": [{"name": "accept", "value": "*/*"}]},
            "response": {"status": 200, "content": {"mimeType": "font/woff2", "text": text}},
        })
        if n:
            out.write(",\n")
        out.write(entry)
        written += len(entry) + 2
        n += 1
    out.write("\n]}}\n")
PY
ls -l "$HAR"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
ports=("$(free_port)" "$(free_port)" "$(free_port)")
for port in "${ports[@]}"; do
    target/release/examples/bench_upstream "127.0.0.1:$port" fast &
    pids+=($!)
done
for port in "${ports[@]}"; do wait_port "$port"; done

# Twice: with the default host (the CDN's, found by a first pass over the file), and with --host naming the
# API (one pass; nearly every entry read past).
for extra in "" "--host api.example.com"; do
rm -f "$OUT/replay.db"
echo "== replay $extra"
python3 - "$OUT" "${ports[@]}" $extra <<'PY'
import resource, subprocess, sys, time
out, ports, extra = sys.argv[1], sys.argv[2:5], sys.argv[5:]
start = time.monotonic()
ran = subprocess.run([
    "target/release/shadowdiff", "replay", "--input", f"{out}/session.har",
    "--primary", f"http://127.0.0.1:{ports[0]}", "--secondary", f"http://127.0.0.1:{ports[1]}",
    "--candidate", f"http://127.0.0.1:{ports[2]}", "--database-url", f"sqlite://{out}/replay.db",
] + extra, capture_output=True, text=True)
elapsed = time.monotonic() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(ran.stderr[-2000:])
print(ran.stdout.splitlines()[0] if ran.stdout else "(no output)")
print(f"exit {ran.returncode}; {elapsed:.1f} s; peak RSS {peak:.0f} MiB")
sys.exit(ran.returncode)
PY
done
