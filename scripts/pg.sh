#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a free loopback port, for tests and benchmarks.
#
#   scripts/pg.sh start          starts one; prints PG_DIR=..., PG_PORT=... and DATABASE_URL=... (for eval)
#   scripts/pg.sh stop DIR       stops it and removes DIR
#   scripts/pg.sh pause DIR      stops the server, keeping its data (an outage)
#   scripts/pg.sh resume DIR     starts it again on the same port
#
# As root the server runs as the `postgres` user: PostgreSQL refuses to run as root.
set -euo pipefail

bin_dir() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$bin" ]; then
    echo "error: PostgreSQL server binaries not found (apt-get install -y postgresql)" >&2
    exit 2
  fi
  echo "$bin"
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

server_start() {
  local dir=$1 port
  port=$(cat "$dir/port")
  as_owner "$(bin_dir)/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c max_connections=300" \
    start >/dev/null || { cat "$dir/log" >&2; exit 1; }
}

server_stop() {
  as_owner "$(bin_dir)/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null
}

case "${1:-}" in
  start)
    dir=$(mktemp -d /tmp/shadowdiff-pg.XXXXXX)
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' > "$dir/port"
    [ "$(id -u)" = 0 ] && chown -R postgres "$dir"
    as_owner "$(bin_dir)/initdb" -D "$dir/data" -U postgres -A trust -N >/dev/null
    server_start "$dir"
    echo "PG_DIR=$dir"
    echo "PG_PORT=$(cat "$dir/port")"
    echo "DATABASE_URL=postgres://postgres@127.0.0.1:$(cat "$dir/port")/postgres"
    ;;
  stop)
    [ -d "${2:?DIR}" ] || exit 0
    server_stop "$2" 2>/dev/null || true
    rm -rf "$2"
    ;;
  pause) server_stop "${2:?DIR}" ;;
  resume) server_start "${2:?DIR}" ;;
  *)
    echo "usage: scripts/pg.sh start | stop DIR | pause DIR | resume DIR" >&2
    exit 2
    ;;
esac
