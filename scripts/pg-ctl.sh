#!/usr/bin/env bash
# Stops or starts the throwaway cluster that scripts/pg.sh started (PG_BIN, PG_DIR, PG_PORT in the environment).
set -euo pipefail
source "$(dirname "$0")/pg.sh"
pg_ctl_as_owner "$1"
