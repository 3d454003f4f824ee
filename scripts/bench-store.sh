#!/usr/bin/env bash
# Store benchmarks (benches/store.rs) against SQLite and a throwaway PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
require_rust
ensure_postgres_server
eval "$(scripts/pg.sh start)"
trap 'scripts/pg.sh stop "$PG_DIR"' EXIT
export DATABASE_URL
cargo bench --bench store
