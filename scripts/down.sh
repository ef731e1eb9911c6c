#!/usr/bin/env bash
# Stops everything `scripts/up.sh` started (services first, then Kafka and PostgreSQL).
# Each service gets SIGTERM and up to 60 s to finish in-flight work.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run=${FACESTREAM_RUN_DIR:-$root/.run}
for name in ingest api notify recognizer stream; do
  pidfile=$run/pids/$name.pid
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "[down] stopped $name"
  fi
  rm -f "$pidfile"
done
if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then bash "$root/scripts/kafka.sh" stop; fi
if [ -z "${DATABASE_URL:-}" ]; then bash "$root/scripts/postgres.sh" stop; fi
