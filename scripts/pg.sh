#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a free loopback port, for tests and benchmarks.
#
#   source scripts/pg.sh; pg_start    # exports DATABASE_URL (and PG_DIR, PG_BIN, PG_PORT)
#   pg_stop                           # stops the cluster and removes its directory
#   pg_ctl_as_owner stop|start        # stop or start the same cluster (tests do this to simulate an outage)
#
# As root the cluster runs as the `postgres` user (PostgreSQL refuses to run as root).

pg_find_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$bin" ]; then
    echo "error: PostgreSQL server binaries not found (apt-get install -y postgresql)" >&2
    return 1
  fi
  echo "$bin"
}

pg_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pg_run_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_ctl_as_owner() {
  case "$1" in
    stop) pg_run_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null ;;
    start) pg_run_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off -c max_connections=200" start >/dev/null ;;
  esac
}

pg_start() {
  PG_BIN=$(pg_find_bin) || return 1
  PG_DIR=$(mktemp -d /tmp/shadowdiff-pg.XXXXXX)
  PG_PORT=$(pg_free_port)
  [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
  pg_run_as_owner "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust -N >/dev/null || return 1
  pg_ctl_as_owner start || { cat "$PG_DIR/log" >&2; return 1; }
  export PG_BIN PG_DIR PG_PORT
  export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  # Tests stop and start this cluster to simulate an outage; they find it here.
  export SHADOWDIFF_TEST_PG_CTL="$PWD/scripts/pg-ctl.sh"
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] || return 0
  pg_ctl_as_owner stop 2>/dev/null || true
  rm -rf "$PG_DIR"
  unset PG_DIR DATABASE_URL
}
