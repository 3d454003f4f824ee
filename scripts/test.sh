#!/usr/bin/env bash
# Runs the whole test suite as CI does: installs what is missing, then runs every test target.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

require_rust
# kill(1) is used by the signal tests; procps provides it on Debian.
ensure_commands kill:procps

cargo test --locked --all-targets "$@"
