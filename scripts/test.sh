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

eval "$(scripts/pg.sh start)"
trap 'scripts/pg.sh stop "$PG_DIR"' EXIT
export DATABASE_URL

cargo test --locked --all-targets "$@"
