#!/usr/bin/env bash
# Runs the whole test suite as CI does: installs what is missing (as root on Debian), starts a throwaway
# PostgreSQL for the store tests, runs every test target, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

require_rust
# kill(1) is used by the signal tests; procps provides it on Debian. The browser test drives headless Chromium
# through chromedriver; a font package keeps its screenshots legible on a bare machine.
ensure_commands kill:procps python3:python3 chromium:chromium+fonts-dejavu-core chromedriver:chromium-driver
ensure_postgres_server

# The deployment files (Kubernetes, Argo Rollouts, Flagger, Grafana) checked offline; the tests below check the
# names and answers they rely on against a live instance.
scripts/check-deploy.sh

eval "$(scripts/pg.sh start)"
trap 'scripts/pg.sh stop "$PG_DIR"' EXIT
export DATABASE_URL

# Every target's results, then one line over all of them (each target prints its own `test result:` line).
log=$(mktemp /tmp/shadowdiff-test.XXXXXX)
set +e
cargo test --locked --all-targets "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
scripts/pg.sh stop "$PG_DIR"
trap - EXIT
summary=$(awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed", passed, failed }' "$log")
rm -f "$log"
echo "$summary"
exit "$status"
