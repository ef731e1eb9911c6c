#!/usr/bin/env bash
# Brings the whole platform up on this machine, in the background, and returns once
# every part answers: Kafka, PostgreSQL, ingest (:8000), results API (:8001), the stream
# worker (:6066), the recognizer pool (:9101, one process per core by default) and
# notify (webhooks; :6070).
#
# Environment: WORKERS (recognizer processes; default: the core count), IMAGES_ROOT
# (folder of the legacy path endpoints; default ../shared/datasets/faces if present),
# KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL to use an existing broker / database instead
# (DATABASE_URL: the schema owner's; `python -m common.migrate` runs as it first),
# ADMIN_API_KEY (the bootstrap admin key; default: one generated into .run/admin-key),
# RESULTS_BASE_URL (the results API's public URL, in ingest's result_url; default :8001 here).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
run=${FACESTREAM_RUN_DIR:-$root/.run}
mkdir -p "$run/pids" "$run/logs"
bash scripts/install.sh

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then bash scripts/kafka.sh start; fi
if [ -z "${DATABASE_URL:-}" ]; then bash scripts/postgres.sh start; fi
export WORKERS=${WORKERS:-$(nproc)}
export RESULTS_BASE_URL=${RESULTS_BASE_URL:-http://127.0.0.1:8001}
if [ -z "${ADMIN_API_KEY:-}" ]; then
  # A random bootstrap admin key, made once and kept (mode 600); `./facestream` reads it.
  if [ ! -s "$run/admin-key" ]; then
    (umask 077 && .venv/bin/python -c 'import secrets; print("fsk-admin-" + secrets.token_urlsafe(32))' >"$run/admin-key")
  fi
  ADMIN_API_KEY=$(cat "$run/admin-key"); export ADMIN_API_KEY
fi
if [ -z "${IMAGES_ROOT:-}" ] && [ -d "$root/../shared/datasets/faces" ]; then
  IMAGES_ROOT=$(cd "$root/../shared/datasets/faces" && pwd); export IMAGES_ROOT
fi
.venv/bin/python -c 'from common.kafka import ensure_topics; from common.settings import ServiceSettings as S; ensure_topics(S().librdkafka())'
# The schema migrations, once, before any service starts (the services run no DDL and
# refuse to start on a schema that lacks a migration they ship), as DATABASE_URL's user,
# the schema owner. It also creates a login user for each service, in the service's group
# role (least privilege: ingest cannot write api_keys), with a password made once and
# kept in .run/db-users (mode 600); each service below logs in as its own.
export DATABASE_URL=${DATABASE_URL:-postgresql://facestream:facestream@127.0.0.1:5432/facestream}
# A service added since the file was made (notify) gets its line appended; the others keep theirs.
(umask 077 && touch "$run/db-users" && .venv/bin/python - "$run/db-users" >>"$run/db-users" <<'PY'
import os, secrets, sys
from common.migrate import SERVICE_ROLES, with_credentials
known = open(sys.argv[1]).read()
for service in SERVICE_ROLES:
    if f"export {service.upper()}_DATABASE_URL=" in known:
        continue
    url = with_credentials(os.environ["DATABASE_URL"], f"{service}_service", secrets.token_urlsafe(24))
    print(f"export {service.upper()}_DATABASE_URL='{url}'")
PY
)
# shellcheck source=/dev/null
source "$run/db-users"
.venv/bin/python -m common.migrate

start() {  # name, health url, command...
  local name=$1 url=$2; shift 2
  local pidfile=$run/pids/$name.pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "[up] $name already running (pid $(cat "$pidfile"))"
  else
    nohup "$@" >"$run/logs/$name.log" 2>&1 &
    echo $! >"$pidfile"
    echo "[up] started $name (pid $!, log $run/logs/$name.log)"
  fi
}
wait_ready() {  # name, url
  for _ in $(seq 1 180); do
    if curl -fsS "$2" >/dev/null 2>&1; then echo "[up] $1 ready"; return 0; fi
    kill -0 "$(cat "$run/pids/$1.pid")" 2>/dev/null || { echo "[up] $1 exited; see $run/logs/$1.log" >&2; tail -n 20 "$run/logs/$1.log" >&2; return 1; }
    sleep 1
  done
  echo "[up] $1 not ready after 180 s; see $run/logs/$1.log" >&2; return 1
}

start stream http://127.0.0.1:6066/readyz env DATABASE_URL="$STREAM_DATABASE_URL" .venv/bin/python -m stream
start recognizer http://127.0.0.1:9101/readyz .venv/bin/python -m recognizer --workers "$WORKERS"
start ingest http://127.0.0.1:8000/readyz env DATABASE_URL="$INGEST_DATABASE_URL" .venv/bin/python -m ingest
start api http://127.0.0.1:8001/readyz env DATABASE_URL="$API_DATABASE_URL" .venv/bin/python -m api
start notify http://127.0.0.1:6070/readyz env DATABASE_URL="$NOTIFY_DATABASE_URL" .venv/bin/python -m notify
wait_ready ingest http://127.0.0.1:8000/readyz
wait_ready api http://127.0.0.1:8001/readyz
wait_ready stream http://127.0.0.1:6066/readyz
wait_ready recognizer http://127.0.0.1:9101/readyz
wait_ready notify http://127.0.0.1:6070/readyz

cat <<MSG

facestream is up ($WORKERS recognizer processes).
  Results page      http://127.0.0.1:8001/
  Ingest API        http://127.0.0.1:8000/docs    (POST /v1/images, legacy /image/post)
  Results API       http://127.0.0.1:8001/docs    (GET /v1/images, POST /v1/people, POST /v1/webhooks)
  Metrics           :8000/metrics :8001/metrics :6066/metrics :9101/metrics :6070/metrics
  Logs              $run/logs/
  Admin API key     $run/admin-key  (send it as X-API-Key; ./facestream uses it)
  Try               make demo        Stop: make down
MSG
