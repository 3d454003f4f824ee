#!/usr/bin/env bash
# Helpers shared by the project's scripts: check for tools and install missing Debian packages when root.

# The machine's Rust toolchain is a precondition; nothing here can install it.
require_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 2
  fi
}

# ensure_commands CMD:PACKAGE[+PACKAGE...] ...: installs the packages with apt-get when CMD is missing (as
# root), or says what to install otherwise.
ensure_commands() {
  local missing=() pair cmd pkgs
  for pair in "$@"; do
    cmd=${pair%%:*}
    IFS=+ read -r -a pkgs <<<"${pair#*:}"
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkgs[@]}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing packages: ${missing[*]} (install them, or run this script as root on Debian)" >&2
    exit 2
  fi
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The PostgreSQL server binaries (initdb, pg_ctl, pg_dump) that scripts/pg.sh uses.
ensure_postgres_server() {
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: PostgreSQL server binaries missing (apt-get install -y postgresql)" >&2
    exit 2
  fi
  echo "installing: postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

# free_port: prints a loopback port free at the time of asking (for benchmark processes that need a fixed one).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT: returns once something accepts connections on the port (gives up after 20 s).
wait_port() {
  local tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -gt 400 ]; then
      echo "error: nothing listens on port $1" >&2
      exit 1
    fi
    sleep 0.05
  done
}
