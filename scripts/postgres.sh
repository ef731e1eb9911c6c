#!/usr/bin/env bash
# Runs a real PostgreSQL server from the machine's Debian package, on loopback, on a data
# directory of its own, with database/user/password "facestream" (the schema's owner, with
# CREATEROLE; scripts/up.sh applies the migrations).
#
#   scripts/postgres.sh start   # idempotent; returns once the database accepts a query
#   scripts/postgres.sh stop
#   scripts/postgres.sh status
#   scripts/postgres.sh destroy # stop, and delete the cluster's data directory
#
# PostgreSQL refuses to run as root, so as root the server runs as the "postgres" user,
# and its data directory lives under /tmp (a checkout may sit in a folder that user
# cannot enter). Settings (environment): PG_PORT (5432), PG_DIR (where the cluster lives).
set -euo pipefail

cmd=${1:-start}
root=$(cd "$(dirname "$0")/.." && pwd)
port=${PG_PORT:-5432}
tag=$(printf '%s' "$root" | md5sum | cut -c1-8)
dir=${PG_DIR:-/tmp/facestream-pg-$port-$tag}
data=$dir/data

log() { echo "[postgres:$port] $*" >&2; }

bin=""
for v in 17 16 15; do [ -x "/usr/lib/postgresql/$v/bin/pg_ctl" ] && { bin=/usr/lib/postgresql/$v/bin; break; }; done
if [ -z "$bin" ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing PostgreSQL from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    for v in 17 16 15; do [ -x "/usr/lib/postgresql/$v/bin/pg_ctl" ] && { bin=/usr/lib/postgresql/$v/bin; break; }; done
  fi
  [ -n "$bin" ] || { log "PostgreSQL server binaries not found (apt-get install postgresql)"; exit 1; }
fi

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ready() { as_owner "$bin/psql" -h "$dir" -p "$port" -d facestream -tAc 'select 1' >/dev/null 2>&1; }

start() {
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initialising a cluster in $data"
    as_owner "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --no-locale >"$dir/initdb.log" 2>&1
  fi
  if ! as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=${PG_FSYNC:-on}" start >/dev/null
  fi
  for _ in $(seq 1 60); do
    if as_owner "$bin/pg_isready" -h "$dir" -p "$port" >/dev/null 2>&1; then break; fi; sleep 1
  done
  if ! ready; then
    as_owner "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'facestream') THEN
    CREATE ROLE facestream LOGIN PASSWORD 'facestream';
  END IF;
END $$;
SQL
    as_owner "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -q \
      -c 'CREATE DATABASE facestream OWNER facestream' >/dev/null 2>&1 || true
  fi
  ready || { log "not answering; see $dir/server.log"; exit 1; }
  # The owner creates the services' group roles (common/migrations/0001_roles.sql) and
  # their login users (python -m common.migrate); also on a cluster made before that.
  as_owner "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -q -c 'ALTER ROLE facestream CREATEROLE' >/dev/null
  log "ready: postgresql://facestream:facestream@127.0.0.1:$port/facestream"
}

stop() {
  if [ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null; log "stopped"
  else
    log "not running"
  fi
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) if ready; then log "running"; else log "not running"; exit 1; fi ;;
  destroy) stop; rm -rf "$dir"; log "deleted $dir" ;;
  *) echo "usage: $0 start|stop|status|destroy" >&2; exit 2 ;;
esac
