#!/usr/bin/env bash
# Containers without a Docker engine: Debian's podman, a local Debian base and local
# stand-ins for the hub images, for machines that reach PyPI and Debian but no image
# registry (like the development ones). Every step is idempotent.
#
#   scripts/podman.sh setup         # apt-get install podman runc debootstrap (as root), when missing
#   scripts/podman.sh images        # the base, the project image and the stand-ins (built when
#                                   # missing or older than their sources)
#   scripts/podman.sh socket start  # a Docker-API socket for testcontainers; prints its DOCKER_HOST
#   scripts/podman.sh socket stop
#
# podman here needs deploy/local/containers.conf (runc, no default ulimits): export
# CONTAINERS_CONF=$PWD/deploy/local/containers.conf before running podman or
# podman-compose by hand. Images:
#   localhost/facestream-debian:bookworm    Debian 12 minbase + python3 (debootstrap)
#   localhost/facestream:latest             the project image (Dockerfile, BASE = the above)
#   localhost/facestream-kafka:4.1.1        stand-in for apache/kafka (deploy/local/kafka)
#   localhost/facestream-postgres:15        stand-in for postgres (deploy/local/postgres)
#   localhost/facestream-prometheus:latest  stand-in for prom/prometheus (deploy/local/prometheus)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PATH=$PATH:/usr/sbin # debootstrap
export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/deploy/local/containers.conf}
run_dir=${FACESTREAM_RUN_DIR:-$root/.run}
base=localhost/facestream-debian:bookworm
# pip and apt inside a build use the host's network and CA bundle (PyPI may sit behind a
# proxy whose certificate only the host trusts).
ca=/etc/ssl/certs/ca-certificates.crt
build=(podman build --network host --build-arg "BASE=$base")
[ -f "$ca" ] && build+=(-v "$ca:$ca:ro")

log() { echo "[podman] $*" >&2; }

setup() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ ${#missing[@]} = 0 ] && return 0
  [ "$(id -u)" = 0 ] || { log "please install: ${missing[*]}"; exit 1; }
  log "apt-get install ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

exists() { podman image exists "$1"; }

make_base() {
  exists "$base" && return 0
  [ "$(id -u)" = 0 ] || { log "debootstrap needs root to make $base"; exit 1; }
  local dir; dir=$(mktemp -d)
  log "making $base with debootstrap (a minute or two)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$dir" \
    http://deb.debian.org/debian >"$dir.log" 2>&1 || { tail -n 20 "$dir.log" >&2; exit 1; }
  # apt's lists and archives, documentation and translations: not needed to run anything.
  rm -rf "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
    "$dir"/usr/share/doc/* "$dir"/usr/share/locale/*
  tar -C "$dir" -c . | podman import -q - "$base" >/dev/null
  rm -rf "$dir" "$dir.log"
}

# An image is current when its label facestream.source is the hash of what it is built
# from; otherwise it is built (again). Podman's layer cache keeps a rebuild short.
source_hash() { (cd "$root" && find "$@" -type f -not -name '*.pyc' -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 md5sum | md5sum | cut -c1-16); }

build_if_stale() { # image context hash [podman build options]
  local image=$1 context=$2 hash=$3; shift 3
  [ "$(podman image inspect --format '{{index .Labels "facestream.source"}}' "$image" 2>/dev/null)" = "$hash" ] && return 0
  log "building $image"
  "${build[@]}" -q --label "facestream.source=$hash" "$@" -t "$image" "$context" >/dev/null
}

project() {
  build_if_stale localhost/facestream:latest "$root" \
    "$(source_hash Dockerfile .dockerignore pyproject.toml scripts/fetch_swagger_ui.py schemas common ingest stream recognizer api notify cli)"
}

images() {
  setup
  make_base
  project
  local libs; libs=$(bash "$root/scripts/kafka.sh" jars)
  build_if_stale localhost/facestream-kafka:4.1.1 "$root/deploy/local/kafka" \
    "$(source_hash deploy/local/kafka scripts/kafka/pom.xml)" -v "$libs:/kafka-libs:ro"
  build_if_stale localhost/facestream-postgres:15 "$root/deploy/local/postgres" "$(source_hash deploy/local/postgres)"
  build_if_stale localhost/facestream-prometheus:latest "$root/deploy/local/prometheus" "$(source_hash deploy/local/prometheus)"
}

socket() {
  local sock=$run_dir/podman/podman.sock pidfile=$run_dir/podman/service.pid
  case "${1:-start}" in
    start)
      mkdir -p "$run_dir/podman"
      if ! { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
        rm -f "$sock"
        nohup podman system service --time=0 "unix://$sock" >"$run_dir/podman/service.log" 2>&1 &
        echo $! >"$pidfile"
        for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
        [ -S "$sock" ] || { log "the API service did not start: $run_dir/podman/service.log"; exit 1; }
      fi
      echo "unix://$sock" ;;
    stop)
      [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile" "$sock" ;;
    *) echo "usage: $0 socket start|stop" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  setup) setup ;;
  images) images ;;
  socket) socket "${2:-start}" ;;
  *) echo "usage: $0 setup|images|socket start|stop" >&2; exit 2 ;;
esac
